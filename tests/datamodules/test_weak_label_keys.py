"""Weak-label files match samples by name across spellings, say how many images they label, and fail on no match."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from datamodules import ImageFolderDataset, WeakLabels, WeakLabelSources
from depthadapt.westar import OrdinalFileError, image_key, write_ordinal_jsonl

pytestmark = pytest.mark.unit


class Named(Dataset):
    """Blank 8 x 8 samples named like the synthetic domain's (no extension); ``files`` lists them."""

    def __init__(self, count: int = 3, listed: bool = True) -> None:
        names = [f"street/target/{i:06d}" for i in range(count)]
        if listed:
            self.files = names
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(3, 8, 8), "name": self.names[index], "index": index}


def rows(index: int) -> list[list[int]]:
    """Distinct pairs per image, so that a label attached to the wrong sample shows."""
    return [[index, 1, 7, 7, 1], [0, index, 2, 2, -1]]


@pytest.mark.parametrize(
    ("name", "root", "key"),
    [
        ("street/target/000000.png", None, "street/target/000000"),
        ("street/target/000000", None, "street/target/000000"),
        ("./street/target/000000.PNG", None, "street/target/000000"),
        ("street\\target\\000000.jpg", None, "street/target/000000"),
        ("street//target/./000000.png", None, "street/target/000000"),
        ("frames/a/b.png", "frames", "a/b"),
        ("./frames/a/b.png", "./frames", "a/b"),
        ("scans/frame.001", None, "scans/frame.001"),  # not an image suffix: kept
        ("scene.v2/0001.tiff", None, "scene.v2/0001"),
    ],
)
def test_image_key_normalises_spellings(name: str, root: str | None, key: str) -> None:
    assert image_key(name, root) == key


def test_image_key_makes_absolute_paths_relative_to_the_root(tmp_path: Path) -> None:
    assert image_key(str(tmp_path / "a" / "b.png"), tmp_path) == "a/b"
    assert image_key(str(tmp_path / "a" / "b.png"), tmp_path / "other").endswith("/a/b")  # outside: unchanged


def test_keys_with_an_extension_match_samples_named_without(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"street/target/000002.png": rows(2), ".\\street\\target\\000000.png": rows(0)})
    with caplog.at_level(logging.INFO, logger="datamodules.weak_labels"):
        dataset = WeakLabels(Named(), WeakLabelSources(ordinal_file=path))
    assert dataset[0]["ordinal"].tolist() == rows(0)
    assert dataset[2]["ordinal"].tolist() == rows(2)
    assert (dataset[1]["ordinal"][:, 0] < 0).all()
    assert "ordinal pairs for 2 of 3 images (4 pairs)" in caplog.text


def test_image_folder_keys_relative_to_the_root_or_absolute(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "frames"
    (root / "day").mkdir(parents=True)
    for name in ("day/a.png", "b.jpg", "c.png"):
        cv2.imwrite(str(root / name), np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {str(root / "day" / "a.png"): rows(1), "b": rows(2), "elsewhere/x.png": rows(3)})
    with caplog.at_level(logging.INFO, logger="datamodules.weak_labels"):
        dataset = WeakLabels(ImageFolderDataset(root), WeakLabelSources(ordinal_file=path))
    by_name = {sample["name"]: sample["ordinal"].tolist() for sample in (dataset[i] for i in range(3))}
    assert by_name["day/a.png"] == rows(1) and by_name["b.jpg"] == rows(2)
    assert all(row[0] < 0 for row in by_name["c.png"])
    assert "ordinal pairs for 2 of 3 images (4 pairs)" in caplog.text
    assert "1 of its 3 images are not in the dataset and are ignored, e.g. 'elsewhere/x.png'" in caplog.text


def test_a_file_that_matches_no_image_shows_an_expected_and_a_found_key(tmp_path: Path) -> None:
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"kitti/2011_09_26/0000000005.png": rows(0)})
    with pytest.raises(OrdinalFileError, match=r"weak.jsonl labels none of the 3 images of the dataset: expected keys "
                       r"like 'street/target/000000' .* found 'kitti/2011_09_26/0000000005.png'"):
        WeakLabels(Named(), WeakLabelSources(ordinal_file=path))
    path.write_text("\n")
    with pytest.raises(OrdinalFileError, match="holds no labelled image"):
        WeakLabels(Named(), WeakLabelSources(ordinal_file=path))


def test_two_spellings_of_one_image_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "weak.jsonl"
    path.write_text('{"image": "street/target/000001.png", "pairs": []}\n'
                    '{"image": "street/target/000001", "pairs": []}\n')
    with pytest.raises(OrdinalFileError, match="line 2: duplicate image 'street/target/000001' .*as 'street/target/"
                       "000001.png'"):
        WeakLabels(Named(), WeakLabelSources(ordinal_file=path))


def test_subsets_are_checked_and_unlisted_datasets_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"street/target/000002.png": rows(2)})
    with pytest.raises(OrdinalFileError, match="none of the 2 images"):
        WeakLabels(Subset(Named(), [0, 1]), WeakLabelSources(ordinal_file=path))
    with caplog.at_level(logging.WARNING, logger="datamodules.weak_labels"):
        dataset = WeakLabels(Named(listed=False), WeakLabelSources(ordinal_file=path))
    assert "does not list its samples" in caplog.text
    assert dataset[2]["ordinal"].tolist() == rows(2)  # still matched by key when the samples load


def test_a_relative_and_an_absolute_spelling_of_one_image_are_an_error(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    root.mkdir()
    cv2.imwrite(str(root / "a.png"), np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"a.png": rows(1), str(root / "a.png"): rows(2)})
    with pytest.raises(OrdinalFileError, match=r"'a.png' and '.*frames/a.png' name the same image"):
        WeakLabels(ImageFolderDataset(root), WeakLabelSources(ordinal_file=path))
