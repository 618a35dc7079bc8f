"""The annotation page in a real browser: headless Chromium (Debian's chromium + chromium-driver) with selenium.

Clicks and keys make pairs, undo and skip; the page is reloaded, opened without its token and under a name that
resolves here but is not the server's (DNS rebinding), the server killed (SIGKILL) and restarted (a new token), and
the file is read back through the datamodule reader. CI (CI=true) installs Chromium in .ci/run and fails if it is
missing; elsewhere the test is skipped without it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamodules import ImageFolderDataset, WeakLabels, WeakLabelSources
from depthadapt.westar import read_ordinal_records

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
HEIGHT, WIDTH = 70, 224  # shown about 5x larger: clicks must be scaled back to these pixels
REBOUND = "evil.example.com"  # the browser resolves it to 127.0.0.1, as DNS rebinding would

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    if os.environ.get("CI"):
        pytest.fail("CI needs Chromium for the annotation page test: apt-get install chromium chromium-driver "
                    "(.ci/run does)", pytrace=False)
    pytest.skip("no /usr/bin/chromium or /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or a driver
from builders import write_street_images  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def start_server(images: Path, output: Path, depth_dir: Path) -> tuple[subprocess.Popen, str]:
    """The annotation server on a free localhost port, in its own process -> (process, the URL it prints, with
    its token)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "depthadapt.annotate", "--images", str(images), "--output", str(output),
         "--pairs-per-image", "2", "--depth-dir", str(depth_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    for line in server.stdout:
        lines.append(line)
        if match := re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+) in a browser", line):
            return server, match.group(1)
    server.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


@pytest.fixture()
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,800", f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The annotation page seen through the browser."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def state(self, expression: str):
        """The value of JS ``expression`` on the page's state ``s``."""
        return self.driver.execute_script(f"const s = window.annotator; return {expression}")

    def wait(self, condition: str) -> None:
        """Wait until the page has applied every queued action and ``condition`` (JS on ``s``) holds."""
        WebDriverWait(self.driver, 15, poll_frequency=0.05).until(lambda d: d.execute_script(
            f"const s = window.annotator; return !!(s && s.record && s.pending === 0 && ({condition}))"))

    def text(self, element: str) -> str:
        return self.driver.find_element(By.ID, element).text

    def click(self, y: int, x: int, shift: bool = False) -> None:
        """Click the centre of image pixel (y, x) wherever the page shows it."""
        marks = self.driver.find_element(By.ID, "marks")
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", marks)
        dx = round((x + 0.5) * rect["width"] / WIDTH - rect["width"] / 2)
        dy = round((y + 0.5) * rect["height"] / HEIGHT - rect["height"] / 2)
        actions = ActionChains(self.driver)
        if shift:
            actions.key_down(Keys.SHIFT)
        actions.move_to_element_with_offset(marks, dx, dy).click()
        if shift:
            actions.key_up(Keys.SHIFT)
        actions.perform()

    def key(self, key: str) -> None:
        ActionChains(self.driver).send_keys(key).perform()

    def anchor(self) -> list[int]:
        anchor = self.state("s.anchor")
        return [anchor["y"], anchor["x"]]


def test_label_undo_skip_reload_kill_and_resume_in_chromium(browser, tmp_path: Path) -> None:
    images = tmp_path / "images"
    depth = tmp_path / "depth"
    write_street_images(images, 3, HEIGHT, WIDTH, depth_dir=depth)
    (images / "corrupt.png").write_bytes(b"\x89PNG broken")
    output = tmp_path / "labels.jsonl"
    server, url = start_server(images, output, depth)
    try:
        page = Page(browser)
        browser.get(url)
        page.wait("s.index === 0")
        assert page.text("progress").startswith("Image 1 of 3 · 000.png")
        assert "corrupt.png" in page.text("unreadable")
        assert page.state("s.scale") > 4  # the page enlarges the small image
        page.key("o")  # the depth overlay, drawn over the image at its size
        WebDriverWait(browser, 15, poll_frequency=0.05).until(lambda d: d.execute_script(
            "const d = document.getElementById('depth'); return !d.hidden && d.complete && d.naturalWidth > 0"))
        assert browser.execute_script("return document.getElementById('depth').naturalWidth") == WIDTH
        page.key("o")
        assert browser.execute_script("return document.getElementById('depth').hidden")

        before = page.anchor()
        page.key("n")  # another proposed anchor
        page.wait("s.anchor")
        page.key("a")  # ... or one placed by hand
        page.click(40, 100)
        page.wait("s.anchor.y === 40")
        assert page.anchor() == [40, 100] != before
        page.click(5, 110)  # farther (the sky)
        page.wait("s.record.pairs.length === 1")
        assert "CLOSER" in page.text("instruction")
        page.click(66, 30)  # closer (the road)
        page.wait("s.record.pairs.length === 3")
        sample = [[40, 100, 5, 110, -1], [40, 100, 66, 30, 1], [5, 110, 66, 30, 1]]
        assert read_ordinal_records(output)[0].pairs == sample  # on disk at once, in the image's pixels

        anchor = page.anchor()
        page.key("e")
        page.click(50, 200)  # equal
        page.wait("s.record.pairs.length === 4")
        assert read_ordinal_records(output)[0].pairs[3] == [*anchor, 50, 200, 0]
        page.key("u")  # undo
        page.wait("s.record.pairs.length === 3")
        assert read_ordinal_records(output)[0].pairs == sample and page.anchor() == anchor
        page.key("s")  # skip: 1 of 2 samples done, the next image comes
        page.wait("s.index === 1")
        assert read_ordinal_records(output)[0].skipped

        second = page.anchor()
        page.click(10, 10, shift=False)
        page.wait("s.record.pairs.length === 1")
        browser.refresh()  # the sample in progress survives a reload
        page.wait("s.index === 1 && s.first !== null")
        assert page.anchor() == second and "CLOSER" in page.text("instruction")

        port = re.search(r":(\d+)/", url).group(1)
        labels = output.read_bytes()
        browser.get(f"http://localhost:{port}/")  # a name it serves, but without the token (cookies are per name)
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(url.replace("127.0.0.1", REBOUND))  # DNS rebinding: refused even with the token
        assert browser.find_element(By.TAG_NAME, "body").text == "Invalid host header"
        statuses = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const post = {method: "POST", headers: {"Content-Type": "application/json"},
                          body: JSON.stringify({skipped: false})};
            Promise.all([fetch("/api/session"), fetch("/api/image/0.png"), fetch("/api/labels/0/skip", post)])
                .then((answers) => done(answers.map((answer) => answer.status)), (error) => done(String(error)));
        """)  # the rebound page's own-origin requests: read the session, an image, un-skip image 1
        assert statuses == [400, 400, 400] and output.read_bytes() == labels
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    server, url = start_server(images, output, depth)  # restarted: resumes at the first unfinished image
    try:
        browser.get(url)
        page.wait("s.index === 1 && s.first !== null")
        assert page.text("progress").startswith("Image 2 of 3 · 001.png") and page.anchor() == second
        page.click(60, 150)
        page.wait("s.record.pairs.length === 3")
        third = page.anchor()
        page.click(3, 3)
        page.wait("s.record.pairs.length === 4")
        page.click(69, 223)  # the bottom-right pixel: scaled clicks reach the last row and column
        page.wait("s.index === 2")  # both samples made: on to the next image
        page.key(Keys.ARROW_LEFT)
        page.wait("s.index === 1")
        assert page.state("s.record.pairs.length") == 6
    finally:
        server.terminate()
        server.wait()

    dataset = WeakLabels(ImageFolderDataset(images), WeakLabelSources(ordinal_file=output))
    by_name = {name: index for index, name in enumerate(dataset.dataset.files)}
    assert read_ordinal_records(output)[0].pairs == sample  # kept in the file, but the image is skipped:
    assert (dataset[by_name["000.png"]]["ordinal"][:, 0] < 0).all()  # its pairs do not train
    assert dataset[by_name["001.png"]]["ordinal"].int().tolist() == [
        [*second, 10, 10, -1], [*second, 60, 150, 1], [10, 10, 60, 150, 1],
        [*third, 3, 3, -1], [*third, 69, 223, 1], [3, 3, 69, 223, 1],
    ]
    assert (dataset[by_name["002.png"]]["ordinal"][:, 0] < 0).all()
