"""Render docs/annotate.png: the annotation page in headless Chromium on synthetic street images.

Needs Debian's chromium and chromium-driver (apt) and the dev extra (selenium). Run: python docs/annotate_screenshot.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from depthadapt.io import atomic_path, write_depth_npy
from depthadapt.synth import render_sample

OUT = Path(__file__).resolve().parent / "annotate.png"


def post(url: str, pairs: list[list[int]]) -> None:
    request = urllib.request.Request(url, json.dumps({"pairs": pairs}).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()


def main() -> None:
    """Label a few samples through the API, open the page with one sample in progress and save the screenshot."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        images, depth = Path(tmp, "images"), Path(tmp, "depth")
        images.mkdir()
        for index in range(4):
            sample = render_sample("street", "target", 0, 40 + index, 196, 644)
            rgb = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            cv2.imwrite(str(images / f"frame_{index:03d}.png"), rgb[..., ::-1])
            write_depth_npy(depth / f"frame_{index:03d}.npy", sample["depth"])
        server = subprocess.Popen(
            [sys.executable, "-m", "depthadapt.annotate", "--images", str(images), "--output",
             str(Path(tmp, "labels.jsonl")), "--depth-dir", str(depth), "--pairs-per-image", "2", "--port", "0"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            url, token = next(m.groups() for line in server.stdout
                              if (m := re.search(r"open (http://\S+/)\?token=(\S+)", line)))
            post(f"{url}api/labels/0/pairs?token={token}", [
                [120, 200, 60, 330, -1], [120, 200, 185, 90, 1], [60, 330, 185, 90, 1],
                [100, 520, 70, 400, -1], [100, 520, 150, 600, 1], [70, 400, 150, 600, 1]])
            post(f"{url}api/labels/1/pairs?token={token}", [[110, 150, 40, 300, -1], [110, 150, 180, 40, 1],
                                              [40, 300, 180, 40, 1], [130, 470, 95, 330, -1]])
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,640",
                             "--hide-scrollbars"):
                options.add_argument(argument)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            try:
                driver.get(f"{url}?token={token}")
                time.sleep(1.5)
                with atomic_path(OUT) as path:
                    driver.save_screenshot(str(path))
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
