"""Write docs/corruptions.jpg: one street image under every corruption type at severities 1, 3 and 5.

Run from the repository root: ``python docs/corruption_sheet.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from depthadapt.corruptions import CORRUPTIONS, corrupt
from depthadapt.io import atomic_path
from depthadapt.synth import render_sample

SEVERITIES = (1, 3, 5)
SIZE = (98, 322)
LABEL_WIDTH = 130


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "corruptions.jpg"))
    args = parser.parse_args()
    image = render_sample("street", "source", 0, 0, *SIZE)["image"][None]
    rows = []
    for name in CORRUPTIONS:
        tiles = [corrupt(image, name, severity, seed=torch.tensor([0]))[0] for severity in SEVERITIES]
        row = torch.cat(tiles, dim=2).permute(1, 2, 0).numpy()
        row = (row * 255).round().astype(np.uint8)
        label = np.full((SIZE[0], LABEL_WIDTH, 3), 255, np.uint8)
        cv2.putText(label, name, (4, SIZE[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, row], 1))
    header = np.full((20, rows[0].shape[1], 3), 255, np.uint8)
    for i, severity in enumerate(SEVERITIES):
        x = LABEL_WIDTH + i * SIZE[1] + SIZE[1] // 2 - 30
        cv2.putText(header, f"severity {severity}", (x, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = cv2.cvtColor(np.concatenate([header, *rows], 0), cv2.COLOR_RGB2BGR)
    with atomic_path(args.out) as tmp:  # JPEG: noise tiles would make a PNG of several MB
        cv2.imwrite(str(tmp), sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
