"""Ground truth as real datasets name it (TUM's x_color / x_depth, association files, NYU's PPM / PGM) and the
depth scale as a required, checked fact of the data."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from builders import make_dataset

import cli
from datamodules.ground_truth import read_association_file
from datamodules.image_folder import ImageFolderDataModule, ImageFolderDataset
from depthadapt.io import list_image_files

ROOT = Path(__file__).resolve().parents[2]
H, W = 6, 8


def write_rgb(path: Path, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


def write_depth16(path: Path, millimetres: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((H, W), millimetres, np.uint16))


@pytest.mark.unit
def test_depth_name_pattern_pairs_tum_style_color_and_depth_in_one_folder(tmp_path: Path, caplog) -> None:
    for i in range(3):
        write_rgb(tmp_path / f"frame{i}_color.png", i)
        write_depth16(tmp_path / f"frame{i}_depth.png", 1000 * (i + 1))
    write_rgb(tmp_path / "lonely_color.png", 9)  # no depth file: excluded and named
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(tmp_path, tmp_path, depth_scale=0.001,
                                     depth_name="{stem_without:_color}_depth.png")
    assert dataset.files == ["frame0_color.png", "frame1_color.png", "frame2_color.png"]  # depth maps are not images
    assert dataset.missing_depth == ["lonely_color.png"] and "depth_name {stem_without:_color}_depth.png" in caplog.text
    assert float(dataset[1]["depth"].mean()) == pytest.approx(2.0)
    stems = ImageFolderDataset(tmp_path, tmp_path, depth_scale=0.001, depth_name="{stem}.png",
                               files=["frame0_color.png"])  # {stem}: the image's own stem
    assert stems.depth_path("frame0_color.png") == tmp_path / "frame0_color.png"


@pytest.mark.unit
@pytest.mark.parametrize("pattern", ["{name}.png", "depth.png", "{stem}_{stem}.png", "{stem_without:}.png",
                                     "{stem:_x}.png", "{stem}}.png"])
def test_bad_depth_name_patterns_are_refused(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match=r"data.depth_name must hold one \{stem\} or \{stem_without:SUFFIX\}"):
        ImageFolderDataModule(image_dir=str(tmp_path), depth_dir=str(tmp_path), depth_name=pattern)


@pytest.mark.unit
def test_tum_association_file_pairs_images_and_depth(tmp_path: Path) -> None:
    # TUM RGB-D: rgb/ and depth/ with their own timestamps, paired by associate.py's "time rgb time depth" lines.
    write_rgb(tmp_path / "rgb" / "1305031102.175304.png", 0)
    write_rgb(tmp_path / "rgb" / "1305031102.211214.png", 1)
    write_rgb(tmp_path / "rgb" / "1305031102.300000.png", 2)  # not associated: not in the dataset
    write_depth16(tmp_path / "depth" / "1305031102.160407.png", 5000)
    write_depth16(tmp_path / "depth" / "1305031102.226738.png", 10000)
    association = tmp_path / "associations.txt"
    association.write_text(
        "# associate.py rgb.txt depth.txt\n"
        "1305031102.175304 rgb/1305031102.175304.png 1305031102.160407 depth/1305031102.160407.png\n"
        "1305031102.211214 rgb/1305031102.211214.png 1305031102.226738 depth/1305031102.226738.png\n")
    data = ImageFolderDataModule(image_dir=str(tmp_path), depth_dir=str(tmp_path), depth_scale=1 / 5000,
                                 association_file=str(association))
    data.setup("test")
    dataset = data.test_dataset
    assert dataset.files == ["rgb/1305031102.175304.png", "rgb/1305031102.211214.png"]
    assert [float(dataset[i]["depth"].mean()) for i in range(2)] == pytest.approx([1.0, 2.0])
    two_columns = tmp_path / "pairs.txt"
    two_columns.write_text("rgb/1305031102.300000.png depth/1305031102.226738.png\n")
    assert read_association_file(two_columns) == {"rgb/1305031102.300000.png": "depth/1305031102.226738.png"}
    two_columns.write_text("a.png\n")
    with pytest.raises(ValueError, match=r"pairs.txt, line 1: expected 'image depth' or 'time image time depth'"):
        read_association_file(two_columns)


@pytest.mark.unit
def test_ppm_images_are_listed_and_pgm_depth_is_read(tmp_path: Path, caplog) -> None:
    # NYU's raw dumps: r-*.ppm colour, d-*.pgm 16-bit depth; other files are counted in the log, not dropped silently.
    rgb = write_rgb(tmp_path / "images" / "r-1.ppm", 0)
    write_rgb(tmp_path / "images" / "r-2.png", 1)
    (tmp_path / "images" / "index.txt").write_text("not an image")
    write_depth16(tmp_path / "images" / "d-1.pgm", 1500)
    with caplog.at_level(logging.INFO):
        assert list_image_files(tmp_path / "images") == ["r-1.ppm", "r-2.png"]
    assert "2 files are not images and are left out (1 .pgm, 1 .txt" in caplog.text
    write_depth16(tmp_path / "depth" / "r-1.pgm", 1500)
    dataset = ImageFolderDataset(tmp_path / "images", tmp_path / "depth", depth_suffix=".pgm", depth_scale=0.001,
                                 files=["r-1.ppm"])
    sample = dataset[0]
    assert np.array_equal((sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), rgb)
    assert float(sample["depth"].mean()) == pytest.approx(1.5)


@pytest.mark.unit
@pytest.mark.parametrize("scale", [0.0, -0.001, float("nan"), float("inf")])
def test_depth_scale_must_be_positive(tmp_path: Path, scale: float) -> None:
    with pytest.raises(ValueError, match=r"data.depth_scale must be a positive number.*millimetres .* 0.001"):
        ImageFolderDataModule(image_dir=str(tmp_path), depth_dir=str(tmp_path), depth_scale=scale)
    with pytest.raises(ValueError, match=r"data.depth_scale must be a positive number"):
        ImageFolderDataset(tmp_path, tmp_path, depth_scale=scale)


@pytest.mark.integration
def test_evaluation_config_has_no_default_depth_scale(tmp_path: Path, monkeypatch) -> None:
    # Millimetre PNGs read at the old default 1/256 had a plausible median (Redwood: 7.3 m) and a wrong RMSE.
    monkeypatch.chdir(ROOT)
    images, depths = make_dataset(tmp_path, count=1)
    args = ["test", "--config", "config_yaml/evaluate.yaml", "--model.model",
            "{encoder: vitt, checkpoint: null, input_size: 28}", "--data.image_dir", str(images),
            "--data.depth_dir", str(depths), "--data.depth_suffix", ".npy", "--data.num_workers", "0"]
    with pytest.raises(ValueError, match=r"data.depth_scale is not set.*1/256.*millimetres \(NYU raw, Redwood, "
                                         r"ScanNet\): 0.001; TUM RGB-D: 0.0002 \(1/5000\); metres .*: 1.0"):
        cli.main(args)
    cli.main([*args, "--data.depth_scale", "1.0"])
