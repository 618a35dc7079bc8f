"""The ordinal annotation server: label file (locks, atomic saves, resume), API, bad input, and WeSTAR on its labels."""

from __future__ import annotations

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
from starlette.testclient import TestClient

import cli
from datamodules import ImageFolderDataset, WeakLabels
from depthadapt.annotate import LabelStore, create_app, open_session
from depthadapt.annotate.__main__ import main as annotate_main
from depthadapt.io import read_image
from depthadapt.ordinal import read_ordinal_jsonl, read_ordinal_records, write_ordinal_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def images(tmp_path: Path, write_street_images) -> Path:
    """Three 28 x 84 images (one in a subfolder), an unreadable file and depth maps of two of them."""
    folder = tmp_path / "images"
    write_street_images(folder, 2, depth_dir=tmp_path / "depth")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "wide.jpg"), np.full((30, 50, 3), 90, np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def client(images: Path, output: Path, **kwargs) -> TestClient:
    return TestClient(create_app(open_session(images, output, **kwargs)))


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
    store.add_pairs("000.png", [[0, 0, 1, 1, 1]] * 3)
    store.add_pairs("001.png", [[0, 0, 1, 1, 1]])
    assert LabelStore(output, store.images, 1).first_unfinished() == 1
    assert LabelStore(output, store.images, 2).first_unfinished() == 0  # 3 pairs are 1 of 2 samples
    store.set_skipped("001.png", True)
    store.add_pairs("sub/wide.jpg", [[0, 0, 1, 1, 1]] * 3)
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
                stores[worker % 2].add_pairs(names[worker % 2], [[worker, step, 0, 0, 1]])
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

    monkeypatch.setattr("depthadapt.ordinal.os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.add_pairs("a.png", [[2, 2, 3, 3, -1]])
    assert output.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl"] == ["weak.jsonl"]


def test_bad_input_is_refused_with_what_to_do(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    assert annotate_main(["--images", str(empty), "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "holds no image" in capsys.readouterr().err
    assert annotate_main(["--images", str(tmp_path / "missing"), "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 1 images .* can be read, e.g. a.jpg"):
        open_session(only_broken, tmp_path / "x.jsonl")

    other = tmp_path / "other.jsonl"
    write_ordinal_jsonl(other, {"000.png": [[0, 0, 1, 1, 1]], "street/target/000007.png": [[1, 1, 2, 2, -1]]})
    assert annotate_main(["--images", str(images), "--output", str(other)]) == 2
    message = capsys.readouterr().err
    assert "expected names like '000.png', found 'street/target/000007.png'" in message and "--force" in message
    store = open_session(images, other, force=True).store
    store.add_pairs("001.png", [[3, 3, 4, 4, 0]])
    assert set(read_ordinal_jsonl(other)) == {"000.png", "001.png", "street/target/000007.png"}  # kept


def test_labels_from_the_api_train_westar_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_street_images) -> None:
    monkeypatch.chdir(tmp_path)
    names = write_street_images(tmp_path / "frames", 4, depth_dir=tmp_path / "depth")
    output = tmp_path / "weak.jsonl"
    api = client(tmp_path / "frames", output, pairs_per_image=1)
    # The page's rows for one sample: the anchor vs a farther point (the sky), vs a point marked equal (key E) on
    # the road below it, and the pair derived from the two. Equal across a depth edge keeps the term above 0.
    sample = [[14, 42, 1, 42, -1], [14, 42, 26, 42, 0], [1, 42, 26, 42, 1]]
    for index in range(len(names)):
        assert api.post(f"/api/labels/{index}/pairs", json={"pairs": sample}).status_code == 200
    assert WeakLabels(ImageFolderDataset(tmp_path / "frames"), ordinal_file=output)[3]["ordinal"].tolist() == sample

    card = yaml.safe_load((ROOT / "config_yaml" / "models" / "tiny_relative_street.yaml").read_text())
    card.update(checkpoint=str(ROOT / card["checkpoint"]), input_size=28)
    folder = {"image_dir": str(tmp_path / "frames"), "depth_dir": str(tmp_path / "depth"), "depth_suffix": ".npy"}
    config = {  # tests/configs/westar.yaml's settings on a folder of images with the labels made above
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
                    "logger": False},
        "model": {"class_path": "lightning_modules.WeSTARAdapter", "init_args": {
            "model": card, "lr": 1.0e-3, "context": "grid"}},
        "data": {"class_path": "datamodules.TargetDomainDataModule", "init_args": {
            "image_dir": str(tmp_path / "frames"), "ordinal_file": str(output), "instance_source": None,
            "batch_size": 2, "hflip": False,
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
