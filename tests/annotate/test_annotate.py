"""The ordinal annotation server: label file (locks, atomic saves, resume), API, bad input, and WeSTAR on its labels."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from builders import write_street_images
from starlette.testclient import TestClient

import cli
from datamodules import ImageFolderDataset, WeakLabels, WeakLabelSources
from depthadapt.annotate import LabelStore, create_app, open_session
from depthadapt.annotate.__main__ import main as annotate_main
from depthadapt.annotate.server import LOOPBACK_HOSTS, MAX_BODY_BYTES, listen, serve, served_hosts
from depthadapt.io import read_image
from depthadapt.westar import read_ordinal_jsonl, read_ordinal_records, write_ordinal_jsonl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Three 28 x 84 images (one in a subfolder), an unreadable file and depth maps of two of them."""
    folder = tmp_path / "images"
    write_street_images(folder, 2, depth_dir=tmp_path / "depth")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "wide.jpg"), np.full((30, 50, 3), 90, np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


TOKEN = "test-token"
SERVED = "http://127.0.0.1:8000"  # the Host the printed URL names


def client(images: Path, output: Path, hosts: list[str] | None = LOOPBACK_HOSTS, **kwargs) -> TestClient:
    """A client that opened the printed URL (``?token=``), so it holds the session's cookie."""
    api = TestClient(create_app(open_session(images, output, **kwargs), token=TOKEN, hosts=hosts), base_url=SERVED)
    assert api.get(f"/?token={TOKEN}").status_code == 200
    return api


def test_api_saves_every_change_in_the_ordinal_file_format(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "labels" / "weak.jsonl"
    api = client(images, output, pairs_per_image=1, depth_dir=tmp_path / "depth")
    session = api.get("/api/session").json()
    assert session["images"] == ["000.png", "001.png", "sub/wide.jpg"]
    assert "broken.png" in session["unreadable"]
    assert session["progress"]["first_unfinished"] == 0
    assert "app.js" in api.get("/").text and api.get("/static/app.js").status_code == 200

    first = api.get("/api/labels/2").json()
    assert (first["height"], first["width"]) == (30, 50) and first["pairs"] == [] and not first["depth"]
    png = api.get("/api/image/2.png").content
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == read_image(images / "sub" / "wide.jpg").shape  # the page sees the loader's pixels

    sample = [[5, 10, 1, 2, -1], [5, 10, 20, 70, 1], [1, 2, 20, 70, 1]]
    assert api.post("/api/labels/1/pairs", json={"pairs": sample[:1]}).status_code == 200
    assert read_ordinal_jsonl(output)["001.png"].tolist() == sample[:1]  # saved at once
    record = api.post("/api/labels/1/pairs", json={"pairs": sample[1:]}).json()
    assert record["pairs"] == sample and record["progress"]["done"] == [False, True, False]
    assert api.post("/api/labels/1/undo", json={"pairs": sample[:1]}).status_code == 409  # not the last rows
    assert api.post("/api/labels/1/undo", json={"pairs": sample[1:]}).json()["pairs"] == sample[:1]
    assert api.post("/api/labels/0/skip", json={"skipped": True}).json()["progress"]["first_unfinished"] == 1
    outside = api.post("/api/labels/0/pairs", json={"pairs": [[28, 0, 0, 0, 1]]})  # y = height is outside
    assert outside.status_code == 422 and "28 x 84" in outside.json()["detail"]
    assert api.post("/api/labels/9/pairs", json={"pairs": sample}).status_code == 404

    lines = output.read_text().splitlines()
    assert lines == ['{"image": "000.png", "pairs": [], "skipped": true}',
                     '{"image": "001.png", "pairs": [[5, 10, 1, 2, -1]]}']
    assert not [p for p in output.parent.iterdir() if ".tmp" in p.name]  # no temporary file left

    assert api.get("/api/depth/0.png").status_code == 200
    overlay = cv2.imdecode(np.frombuffer(api.get("/api/depth/0.png").content, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (28, 84, 3)
    assert api.get("/api/depth/2.png").status_code == 404


def test_restart_resumes_at_the_first_unfinished_image(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    store = open_session(images, output, pairs_per_image=1).store
    sample = [[0, 0, 1, 1, -1], [0, 0, 2, 2, 1], [1, 1, 2, 2, 1]]
    store.add_pairs("000.png", sample)
    store.add_pairs("001.png", [[0, 0, 1, 1, 1]])
    assert LabelStore(output, store.images, 1).first_unfinished() == 1
    assert LabelStore(output, store.images, 2).first_unfinished() == 0  # 3 pairs are 1 of 2 samples
    store.set_skipped("001.png", True)
    store.add_pairs("sub/wide.jpg", sample)
    assert LabelStore(output, store.images, 1).first_unfinished() is None
    store.undo("001.png", [[0, 0, 1, 1, 1]])  # an image that is skipped stays so without pairs
    assert [r.skipped for r in read_ordinal_records(output)] == [False, True, False]


def test_concurrent_writers_lose_no_label(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    names = ["000.png", "001.png"]
    stores = [LabelStore(output, names, 5) for _ in range(2)]  # two servers on one file
    errors: list[BaseException] = []

    def label(worker: int) -> None:
        try:
            for step in range(10):
                stores[worker % 2].add_pairs(names[worker % 2], [[worker, step, 20, 20, 1]])
        except BaseException as err:  # noqa: B036 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=label, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    pairs = read_ordinal_jsonl(output)
    assert len(pairs["000.png"]) == len(pairs["001.png"]) == 30
    assert {tuple(row[:2]) for row in pairs["000.png"].int().tolist()} == {(w, s) for w in (0, 2, 4)
                                                                            for s in range(10)}


def test_a_write_waits_for_the_file_lock_of_another_process(tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    store = LabelStore(output, ["a.png"], 5)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('locked', flush=True); time.sleep(1.5)", str(store.file_lock.lock_file)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        store.add_pairs("a.png", [[0, 0, 1, 1, 1]])
        assert time.monotonic() - start > 0.5  # it waited for the other process
    finally:
        holder.wait(timeout=10)
    assert read_ordinal_jsonl(output)["a.png"].tolist() == [[0, 0, 1, 1, 1]]


def test_a_failed_save_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "weak.jsonl"
    store = LabelStore(output, ["a.png"], 5)
    store.add_pairs("a.png", [[0, 0, 1, 1, 1]])
    before = output.read_bytes()

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("depthadapt.westar.ordinal.os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.add_pairs("a.png", [[2, 2, 3, 3, -1]])
    assert output.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl"] == ["weak.jsonl"]


def test_bad_input_is_refused_with_what_to_do(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    assert annotate_main(["--images", str(empty), "--output", str(tmp_path / "x.jsonl"), "--port", "0"]) == 2
    assert "holds no image" in capsys.readouterr().err
    assert annotate_main(["--images", str(tmp_path / "missing"), "--output", str(tmp_path / "x.jsonl"),
                          "--port", "0"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 1 images .* can be read, e.g. a.jpg"):
        open_session(only_broken, tmp_path / "x.jsonl")

    other = tmp_path / "other.jsonl"
    write_ordinal_jsonl(other, {"000.png": [[0, 0, 1, 1, 1]], "street/target/000007.png": [[1, 1, 2, 2, -1]]})
    assert annotate_main(["--images", str(images), "--output", str(other), "--port", "0"]) == 2
    message = capsys.readouterr().err
    assert "expected names like '000.png', found 'street/target/000007.png'" in message and "--force" in message
    store = open_session(images, other, force=True).store
    store.add_pairs("001.png", [[3, 3, 4, 4, 0]])
    assert set(read_ordinal_jsonl(other)) == {"000.png", "001.png", "street/target/000007.png"}  # kept

    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\x00\xff")
    good = ["--images", str(images), "--port", "0"]
    for args, named in (([*good, "--output", str(tmp_path / "binary.jsonl")], "--output"),
                        ([*good, "--output", str(tmp_path)], "--output"),
                        ([*good, "--output", "x.jsonl", "--pairs-per-image", "0"], "--pairs-per-image"),
                        ([*good, "--output", "x.jsonl", "--port", "http"], "--port"),
                        (good, "--output")):
        try:
            assert annotate_main(args) == 2
        except SystemExit as stop:  # argparse
            assert stop.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], (args, lines)


def test_labels_from_the_api_train_westar_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    names = write_street_images(tmp_path / "frames", 4, depth_dir=tmp_path / "depth")
    output = tmp_path / "weak.jsonl"
    api = client(tmp_path / "frames", output, pairs_per_image=1)
    # The page's rows for one sample: the anchor vs a farther point (the sky), vs a point marked equal (key E) on
    # the road below it, and the pair derived from the two. Equal across a depth edge keeps the term above 0.
    sample = [[14, 42, 1, 42, -1], [14, 42, 26, 42, 0], [1, 42, 26, 42, 1]]
    for index in range(len(names)):
        assert api.post(f"/api/labels/{index}/pairs", json={"pairs": sample}).status_code == 200
    labelled = WeakLabels(ImageFolderDataset(tmp_path / "frames"), WeakLabelSources(ordinal_file=output))
    assert labelled[3]["ordinal"].tolist() == sample

    card = yaml.safe_load((ROOT / "config_yaml" / "models" / "tiny_relative_street.yaml").read_text())
    card.update(checkpoint=str(ROOT / card["checkpoint"]), input_size=28)
    folder = {"image_dir": str(tmp_path / "frames"), "depth_dir": str(tmp_path / "depth"), "depth_suffix": ".npy"}
    config = {  # tests/configs/westar.yaml's settings on a folder of images with the labels made above
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
                    "logger": False},
        "model": {"class_path": "lightning_modules.WeSTARAdapter", "init_args": {
            "model": card, "lr": 1.0e-3, "loss": {"context": "grid"}}},
        "data": {"class_path": "datamodules.TargetDomainDataModule", "init_args": {
            "image_dir": str(tmp_path / "frames"), "batch_size": 2, "hflip": False,
            "weak_labels": {"ordinal_file": str(output), "instance_source": None},
            "evaluation": {"class_path": "datamodules.ImageFolderDataModule", "init_args": folder}}},
    }
    path = tmp_path / "westar_annotated.yaml"
    path.write_text(yaml.safe_dump(config))
    run = cli.main(["fit", "--config", str(path)])
    assert run.trainer.global_step == 2
    ordinal = run.trainer.callback_metrics["train/ordinal"]
    assert torch.isfinite(ordinal) and ordinal > 0


def test_names_that_differ_only_by_extension_and_folder_outputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a/x.jpg and a/x.png differ only by their extension"):
        LabelStore(tmp_path / "weak.jsonl", ["a/x.jpg", "a/x.png"], 5)
    with pytest.raises(ValueError, match="is not a file"):
        LabelStore(tmp_path, ["a.png"], 5)


def test_every_request_needs_the_token_and_a_host_the_server_serves(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    app = create_app(open_session(images, output, pairs_per_image=1), token=TOKEN)
    stranger = TestClient(app, base_url=SERVED)
    for path in ("/", "/api/session", "/api/labels/0", "/api/image/0.png"):
        refused = stranger.get(path)
        assert refused.status_code == 401 and "token" in refused.text, path
    assert stranger.get("/api/session?token=wrong").status_code == 401
    assert stranger.get("/api/session?token=tëst").status_code == 401  # not a crash on non-ASCII
    assert stranger.post("/api/labels/0/skip", json={"skipped": True}).status_code == 401
    assert not output.exists()
    assert stranger.get(f"/api/labels/0?token={TOKEN}").status_code == 200  # a script passes it on each call
    assert stranger.get("/api/labels/0").status_code == 401  # ... which sets no cookie

    visit = stranger.get(f"/?token={TOKEN}", follow_redirects=False)  # the printed URL
    assert visit.status_code == 303 and visit.headers["location"] == "/"  # the token leaves the address bar
    cookie = visit.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert stranger.get("/api/session").status_code == 200  # the cookie now lets the page in
    forged = TestClient(app, base_url=SERVED, cookies={name: "other" for name in stranger.cookies})
    assert forged.get("/api/session").status_code == 401
    other_server = TestClient(create_app(open_session(images, output, pairs_per_image=1), token="another"),
                              base_url=SERVED, cookies=stranger.cookies)
    assert other_server.get("/api/session").status_code == 401  # a cookie opens only its own server

    # DNS rebinding: a name that resolves to this computer, with the token, is still not a name it serves.
    api = client(images, output, pairs_per_image=1)
    for path in ("/", "/api/session", "/api/labels/0", "/api/image/0.png", f"/?token={TOKEN}"):
        assert api.get(path, headers={"Host": "evil.example.com:8000"}).status_code == 400, path
    rebound = api.post("/api/labels/0/skip", json={"skipped": True}, headers={"Host": "evil.example.com"})
    assert rebound.status_code == 400 and not output.exists()
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert api.get("/api/session", headers={"Host": host}).status_code == 200, host

    assert served_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert served_hosts("192.168.1.20") == ["127.0.0.1", "localhost", "[::1]", "192.168.1.20"]
    assert served_hosts("fe80::1")[-1] == "[fe80::1]" and served_hosts("0.0.0.0") is None
    lan = client(images, output, hosts=served_hosts("192.168.1.20"), pairs_per_image=1)
    assert lan.get("/api/session", headers={"Host": "192.168.1.20:8000"}).status_code == 200
    assert lan.get("/api/session", headers={"Host": "192.168.1.21:8000"}).status_code == 400
    anywhere = client(images, output, hosts=None, pairs_per_image=1)
    assert anywhere.get("/api/session", headers={"Host": "my-laptop.lan:8000"}).status_code == 200
    assert TestClient(anywhere.app, base_url=SERVED).get("/api/session", headers={
        "Host": "my-laptop.lan:8000"}).status_code == 401  # on 0.0.0.0 the token alone guards it


def test_changes_from_another_page_are_refused(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    api = client(images, output, pairs_per_image=1)
    for headers in ({"Origin": "http://evil.example.com"}, {"Origin": "http://127.0.0.1:9999"},  # another port
                    {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": SERVED, "Sec-Fetch-Site": "same-site"}):
        refused = api.post("/api/labels/0/skip", json={"skipped": True}, headers=headers)
        assert refused.status_code == 403 and "another web page" in refused.json()["detail"], headers
        assert api.post("/api/labels/0/pairs", json={"pairs": [[0, 0, 1, 1, 1]]}, headers=headers).status_code == 403
    assert not output.exists()
    assert api.get("/api/session", headers={"Origin": "http://evil.example.com"}).status_code == 200  # reads: Host
    page = {"Origin": SERVED, "Sec-Fetch-Site": "same-origin"}  # what the page's own fetch sends
    assert api.post("/api/labels/0/skip", json={"skipped": True}, headers=page).status_code == 200
    assert api.post("/api/labels/0/skip", json={"skipped": False}).status_code == 200  # a script: no Origin
    assert read_ordinal_records(output) == []


def test_request_bodies_and_pairs_per_image_are_capped(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    api = client(images, output, pairs_per_image=1)
    many = [[y, x, 0, 0, 1] for y in range(1, 28) for x in range(84)]  # 2268 distinct pairs, about 40 KB
    assert len(json.dumps({"pairs": many})) > MAX_BODY_BYTES
    assert api.post("/api/labels/0/pairs", json={"pairs": many}).status_code == 413
    assert not output.exists()
    cap = 10 * 3  # ten times the 3 pairs of one structured sample
    assert api.post("/api/labels/0/pairs", json={"pairs": many[:cap]}).status_code == 200
    over = api.post("/api/labels/0/pairs", json={"pairs": many[cap:cap + 1]})
    assert over.status_code == 422 and f"over the limit of {cap}" in over.json()["detail"]
    assert len(read_ordinal_jsonl(output)["000.png"]) == cap
    assert LabelStore(output, ["000.png"], 2).add_pairs("000.png", many[cap:cap + 1])  # the cap follows the samples


INVALID_BODIES = [  # (endpoint, body, what the 422 must say); image 0 holds the pair [5, 10, 1, 2, -1]
    ("pairs", '{"pairs": [[NaN, 1, 2, 3, 1]]}', "body.pairs.0.0: Input should be a valid integer"),
    ("pairs", '{"pairs": [[1e400, 1, 2, 3, 1]]}', "body.pairs.0.0: Input should be a valid integer"),
    ("pairs", '{"pairs": [[-Infinity, 1, 2, 3, 1]]}', "body.pairs.0.0"),
    ("pairs", '{"pairs": [["1", 1, 2, 3, 1]]}', "body.pairs.0.0: Input should be a valid integer"),
    ("pairs", '{"pairs": [[1.0, 1, 2, 3, 1]]}', "body.pairs.0.0"),
    ("pairs", '{"pairs": [[1, 1, 2, 3, true]]}', "body.pairs.0.4"),
    ("pairs", '{"pairs": [[1, 1, 2, 3, 2]]}', "body.pairs.0.4: Input should be less than or equal to 1"),
    ("pairs", '{"pairs": [[1, 1, 2]]}', "body.pairs.0.3: Field required"),
    ("pairs", '{"pairs": [[1, -1, 2, 3, 1]]}', "body.pairs.0.1: Input should be greater than or equal to 0"),
    ("pairs", '{"pairs": []}', "body.pairs: List should have at least 1 item"),
    ("pairs", '{"pairs": [[1, 1, 2, 3, 1]], "more": 1}', "body.more: Extra inputs"),
    ("pairs", '{"pairs": [[1, 1, 2, 3, 1]', "JSON decode error"),
    ("pairs", '{"pairs": [[5, 10, 5, 10, 1]]}', "compares pixel [5, 10] of 000.png with itself"),
    ("pairs", '{"pairs": [[5, 10, 1, 2, -1]]}', "already compared"),  # the stored pair again
    ("pairs", '{"pairs": [[1, 2, 5, 10, 1]]}', "already compared"),  # ... its two points the other way round
    ("pairs", '{"pairs": [[7, 7, 8, 8, 1], [8, 8, 7, 7, -1]]}', "already compared"),  # twice in one request
    ("undo", '{"pairs": [[1, 1, 2]]}', "body.pairs.0.3: Field required"),
    ("undo", '{"pairs": [[1, 1, 2, 3, 7]]}', "body.pairs.0.4"),
    ("undo", '{"pairs": [[NaN, 1, 2, 3, 1]]}', "body.pairs.0.0"),
    ("skip", '{"skipped": "yes"}', "body.skipped: Input should be a valid boolean"),
    ("skip", '{"skipped": 1}', "body.skipped: Input should be a valid boolean"),
    ("skip", '{}', "body.skipped: Field required"),
]


def test_invalid_values_are_422_with_what_is_wrong_and_change_nothing(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    api = client(images, output, pairs_per_image=1)
    assert api.post("/api/labels/0/pairs", json={"pairs": [[5, 10, 1, 2, -1]]}).status_code == 200
    before = output.read_bytes()
    for path, body, where in INVALID_BODIES:
        answer = api.post(f"/api/labels/0/{path}", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and where in answer.json()["detail"], (path, body, answer.text)
        assert output.read_bytes() == before, (path, body)


def test_an_empty_or_malformed_depth_overlay_is_422_naming_the_file(images: Path, tmp_path: Path) -> None:
    depth = tmp_path / "depth"
    np.save(depth / "000.npy", np.zeros((0, 0), np.float32))
    np.save(depth / "001.npy", np.zeros((28, 0), np.float32))
    (depth / "sub").mkdir()
    np.save(depth / "sub" / "wide.npy", np.ones((30, 50, 2), np.float32))
    api = client(images, tmp_path / "weak.jsonl", depth_dir=depth)
    for index, problem in enumerate(("000.npy: empty depth map", "001.npy: empty depth map", "wide.npy: expected a "
                                     "single-channel")):
        answer = api.get(f"/api/depth/{index}.png")
        assert answer.status_code == 422 and problem in answer.json()["detail"]


def test_lines_marked_skipped_do_not_train(images: Path, tmp_path: Path) -> None:
    output = tmp_path / "weak.jsonl"
    store = open_session(images, output, pairs_per_image=1).store
    sample = [[0, 0, 10, 10, -1], [0, 0, 20, 20, 1], [10, 10, 20, 20, 1]]
    store.add_pairs("000.png", sample)
    store.add_pairs("001.png", sample)
    store.set_skipped("001.png", True)  # labelled, then skipped: the line keeps its pairs and "skipped": true
    assert read_ordinal_records(output)[1].pairs == sample
    assert set(read_ordinal_jsonl(output)) == {"000.png"}
    dataset = WeakLabels(ImageFolderDataset(images), WeakLabelSources(ordinal_file=output))
    by_name = {name: index for index, name in enumerate(dataset.dataset.files)}
    assert dataset[by_name["000.png"]]["ordinal"].tolist() == sample
    assert (dataset[by_name["001.png"]]["ordinal"][:, 0] < 0).all()  # padding only


def test_the_printed_address_carries_a_token_and_says_when_the_network_can_reach_it(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: served.append(server.config.app))
    session = open_session(images, tmp_path / "weak.jsonl")
    serve(session, listen("127.0.0.1", 0), "127.0.0.1")
    printed = capsys.readouterr().out
    url = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=(\S+)) in a browser", printed)
    assert url and "anyone on the network" not in printed
    api = TestClient(served[0], base_url=url.group(1).split("/?")[0])
    assert api.get("/api/session").status_code == 401
    assert api.get(url.group(1)).status_code == 200 and api.get("/api/session").status_code == 200
    serve(session, listen("127.0.0.1", 0), "127.0.0.1")
    assert re.search(r"\?token=(\S+)", capsys.readouterr().out).group(1) != url.group(2)  # new server, new token

    serve(session, listen("0.0.0.0", 0), "0.0.0.0")
    printed = capsys.readouterr().out
    assert "anyone on the network who has the address below (with its token)" in printed
    assert re.search(rf"open http://{re.escape(socket.gethostname())}:\d+/\?token=\S+ ", printed)
    serve(session, listen("127.0.0.1", 0), "192.168.1.20")  # as if listening on a network card's address
    printed = capsys.readouterr().out
    assert "anyone on the network" in printed and "open http://192.168.1.20:" in printed
    serve(session, listen("127.0.0.1", 0), "localhost")
    assert "anyone on the network" not in capsys.readouterr().out


def test_the_command_refuses_bad_input_in_one_line_without_a_traceback(
        images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    broken, a_file = tmp_path / "broken", tmp_path / "notes.txt"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"junk")
    a_file.write_text("not a folder")
    busy = socket.create_server(("127.0.0.1", 0))
    good = ["--images", str(images), "--output", str(tmp_path / "weak.jsonl")]
    table = {  # arguments (each run listens on a free port unless it names one) -> what the one line must name
        "missing folder": (["--images", str(tmp_path / "missing"), "--output", "x.jsonl"], "--images"),
        "no readable image": (["--images", str(broken), "--output", "x.jsonl"], "a.jpg"),
        "--port 70000": ([*good, "--port", "70000"], "--port"),
        "--port -1": ([*good, "--port", "-1"], "--port"),
        "port in use": ([*good, "--port", str(busy.getsockname()[1])], "--port"),
        "--output under a file": (["--images", str(images), "--output", str(a_file / "x.jsonl")], "--output"),
        "missing --depth-dir": ([*good, "--depth-dir", str(tmp_path / "nodepth")], "--depth-dir"),
    }

    def refuse_to_serve(*args) -> None:
        raise AssertionError("bad input reached the server")

    monkeypatch.setattr("depthadapt.annotate.__main__.serve", refuse_to_serve)
    monkeypatch.chdir(tmp_path)
    try:
        for case, (args, name) in table.items():
            try:
                status = annotate_main(["--port", "0", *args])
            except SystemExit as exit_:  # argparse's errors
                status = exit_.code
            err = capsys.readouterr().err
            lines = err.splitlines()
            assert status == 2 and len(lines) == 1, f"{case}: exit {status}, stderr:\n{err}"
            assert lines[0].startswith("error: ") and name in lines[0], f"{case}: {lines[0]}"
        # the same from the shell: exit status 2, one line, no traceback
        args, name = table["port in use"]
        run = subprocess.run([sys.executable, "-m", "depthadapt.annotate", *args], cwd=tmp_path, timeout=300,
                             env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True)
        lines = run.stderr.splitlines()
        assert run.returncode == 2 and len(lines) == 1 and name in lines[0], run.stderr
        assert lines[0].startswith("error: ") and "Traceback" not in run.stdout + run.stderr
    finally:
        busy.close()
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "weak.jsonl").exists()
