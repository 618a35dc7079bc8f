"""Real-dataset readers on tiny fakes written in each dataset's published on-disk format."""

import logging
import pickle
import struct
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from torch.utils.data import DataLoader

from datamodules.base import collate_samples
from datamodules.benchmarks import (
    DIODEDataModule,
    DIODEDataset,
    DrivingStereoDataModule,
    DrivingStereoDataset,
    ETH3DDataModule,
    ETH3DDataset,
    SintelDataModule,
    SintelDataset,
)
from datamodules.kitti import (
    KITTI_EIGEN_TEST_SPLIT,
    KITTIDataModule,
    KITTIDataset,
    VKITTI2DataModule,
    VKITTI2Dataset,
    read_kitti_split,
)
from datamodules.nyu import NYU_TEST_SPLIT, NYUv2DataModule, NYUv2Dataset, NYUv2FolderDataModule
from depthadapt.io import UnreadableFileError, read_raw_float32, read_sintel_dpt

pytestmark = pytest.mark.unit

H, W = 6, 8  # non-square, so a transposed read cannot pass


def _rgb(path, seed=0, h=H, w=W):
    """Write a random RGB image (PNG, or JPEG at best quality) and return it as read back, H x W x 3 uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if path.suffix.lower() == ".jpg" else []
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _png16(path, values):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(values, dtype=np.uint16))


def _raw16(value, h=H, w=W):
    """A uint16 depth image of ``value`` with a 0 (invalid) at (0, 0) and ``value + 1`` at (1, 5)."""
    raw = np.full((h, w), value, dtype=np.uint16)
    raw[0, 0], raw[1, 5] = 0, value + 1
    return raw


def _image(sample):
    return (sample["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _error_sample(dataset, index, path):
    """Assert sample ``index`` is an error naming ``path`` and that collate moves it to ``skipped``."""
    sample = dataset[index]
    assert set(sample) == {"name", "index", "error"} and str(path) in sample["error"]
    batch = collate_samples([sample])
    assert batch["skipped"] == [(sample["name"], sample["error"])] and batch["name"] == []


# --- io readers --------------------------------------------------------------------------------------


def _write_dpt(path, depth, tag=202021.25):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    path.write_bytes(struct.pack("<fii", tag, w, h) + depth.astype("<f4").tobytes())


def test_read_sintel_dpt_exact_and_errors(tmp_path):
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W) / 4
    depth[2, 3] = np.inf
    _write_dpt(tmp_path / "a.dpt", depth)
    out = read_sintel_dpt(tmp_path / "a.dpt")
    expected = depth.copy()
    expected[2, 3] = 0.0
    assert out.dtype == np.float32 and out.shape == (H, W)
    np.testing.assert_array_equal(out, expected)

    _write_dpt(tmp_path / "tag.dpt", depth, tag=1.0)
    (tmp_path / "short.dpt").write_bytes((tmp_path / "a.dpt").read_bytes()[:-4])
    (tmp_path / "header.dpt").write_bytes(b"\x00" * 5)
    for name, reason in [("tag", "tag"), ("short", "expected"), ("header", "truncated"), ("none", "not exist")]:
        with pytest.raises(UnreadableFileError, match=reason) as err:
            read_sintel_dpt(tmp_path / f"{name}.dpt")
        assert err.value.path == str(tmp_path / f"{name}.dpt")


def test_read_raw_float32_exact_and_errors(tmp_path):
    depth = np.linspace(0.5, 30, H * W, dtype=np.float32).reshape(H, W)
    depth[4, 1] = np.inf
    depth.astype("<f4").tofile(tmp_path / "d.JPG")
    out = read_raw_float32(tmp_path / "d.JPG", H, W)
    assert out[4, 1] == 0.0 and out[1, 4] == depth[1, 4] and out.dtype == np.float32
    with pytest.raises(UnreadableFileError, match=f"expected {4 * W * W}") as err:
        read_raw_float32(tmp_path / "d.JPG", W, W)
    assert str(tmp_path / "d.JPG") in str(err.value)
    with pytest.raises(UnreadableFileError, match="not exist"):
        read_raw_float32(tmp_path / "none", H, W)


# --- KITTI ---------------------------------------------------------------------------------------------

_DRIVE = "2011_09_26_drive_0002_sync"


def _kitti_line(frame, split="val"):
    return (
        f"raw_data/2011_09_26/{_DRIVE}/image_02/data/{frame}.png "
        f"data_depth_annotated/{split}/{_DRIVE}/proj_depth/groundtruth/image_02/{frame}.png"
    )


def _kitti_name(frame):
    return f"2011_09_26/{_DRIVE}/image_02/data/{frame}.png"


@pytest.fixture
def kitti(tmp_path):
    """Three listed frames: GT under val (as listed), GT under train (listed val), no GT."""
    root = tmp_path / "kitti"
    frames = ["0000000069", "0000000054", "0000000042"]
    for i, frame in enumerate(frames):
        _rgb(root / "raw_data" / _kitti_name(frame), i)
    gt = root / "data_depth_annotated" / "{}" / _DRIVE / "proj_depth/groundtruth/image_02/{}.png"
    _png16(str(gt).format("val", frames[0]), _raw16(3200))
    _png16(str(gt).format("train", frames[1]), _raw16(256))
    split = tmp_path / "split.txt"
    split.write_text("# header comment as in the shipped file\n" + "\n".join(_kitti_line(f) for f in frames) + "\n")
    return root, split, frames


def test_shipped_kitti_split_parses():
    entries = read_kitti_split(KITTI_EIGEN_TEST_SPLIT)
    assert len(entries) == 652 and len({name for name, _ in entries}) == 652
    assert entries[0] == (_kitti_name("0000000069"), "val")
    assert sum(split == "train" for _, split in entries) == 491


def test_kitti_reads_depth_searches_both_splits_and_names_missing(kitti, caplog):
    root, split, frames = kitti
    with caplog.at_level(logging.WARNING):
        ds = KITTIDataset(root, split_file=split)
    assert ds.files == [_kitti_name(frames[0]), _kitti_name(frames[1])]
    assert ds.missing == [_kitti_name(frames[2])] and _kitti_name(frames[2]) in caplog.text

    sample = ds[0]
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (H, W)
    assert sample["depth"][3, 3] == 12.5 and sample["depth"][1, 5] == 3201 / 256  # 3200 / 256 m
    assert sample["depth"][0, 0] == 0 and not sample["valid"][0, 0] and sample["valid"].sum() == H * W - 1
    rgb = cv2.cvtColor(cv2.imread(str(root / "raw_data" / ds.files[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(_image(sample), rgb)
    assert ds[1]["depth"][3, 3] == 1.0  # found under train/ although the line says val/
    assert ds.depth_path(ds.files[1]).parts[-6] == "train"


def test_kitti_errors(kitti, tmp_path):
    root, split, frames = kitti
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*raw_data/2011") as err:
        KITTIDataset(tmp_path / "nowhere", split_file=split)
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(FileNotFoundError, match="(?s)raw does not exist.*ROOT/raw/2011"):
        KITTIDataset(root, split_file=split, raw_dir="raw")
    with pytest.raises(FileNotFoundError, match="(?s)split file .*missing.txt.*raw_data/2011"):
        KITTIDataset(root, split_file=tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text(f"raw_data/2011_09_26/{_DRIVE}/image_02/data/0000000069.png\n")
    with pytest.raises(ValueError, match="bad.txt: cannot parse line"):
        KITTIDataset(root, split_file=bad)
    # the shipped split over a root holding 3 of its frames: the absent images are named
    with pytest.raises(FileNotFoundError, match="649 listed image"):
        KITTIDataset(root)

    gt = root / "data_depth_annotated/val" / _DRIVE / "proj_depth/groundtruth/image_02" / f"{frames[0]}.png"
    gt.write_bytes(b"not a png")
    _error_sample(KITTIDataset(root, split_file=split), 0, gt)


def test_kitti_datamodule_test_and_predict(kitti):
    root, split, frames = kitti
    dm = KITTIDataModule(root=str(root), split_file=str(split), batch_size=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["depth"].shape == (2, H, W) and batch["name"] == dm.test_dataset.files
    assert dm.test_dataset.missing == [_kitti_name(frames[2])]
    dm.setup("predict")  # images only: the frame without ground truth is predicted too
    assert len(dm.predict_dataset) == 3 and "depth" not in dm.predict_dataset[2]


# --- NYU Depth v2 ----------------------------------------------------------------------------------------


@pytest.fixture
def nyu_mat(tmp_path):
    """A 5-image labelled .mat in MATLAB v7.3 layout: images N x 3 x W x H, depths N x W x H."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, H, W, 3), dtype=np.uint8)  # upright N x H x W x 3
    depths = rng.uniform(0.5, 9.0, (5, H, W)).astype(np.float32)
    images[3, 1, 5] = (255, 0, 7)  # row 1, col 5
    depths[3, 1, 5] = 4.25
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
        f["rawDepths"] = depths.transpose(0, 2, 1)
    split = tmp_path / "split.txt"
    split.write_text("# zero-based\n3\n0\n")
    return path, split, images, depths


def test_nyu_mat_orientation_split_and_workers(nyu_mat):
    path, split, images, depths = nyu_mat
    ds = NYUv2Dataset(path, split_file=split)
    assert len(ds) == 2 and ds.files == ["0003", "0000"]
    sample = ds[0]
    assert sample["name"] == "0003" and sample["image"].shape == (3, H, W) and sample["depth"].shape == (H, W)
    np.testing.assert_array_equal(_image(sample), images[3])
    assert _image(sample)[1, 5].tolist() == [255, 0, 7] and sample["depth"][1, 5] == 4.25
    np.testing.assert_array_equal(sample["depth"].numpy(), depths[3])
    assert sample["valid"].all()

    clone = pickle.loads(pickle.dumps(ds))  # the open HDF5 handle is not pickled
    np.testing.assert_array_equal(clone[1]["depth"].numpy(), depths[0])
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate_samples)
    assert [b["name"] for b in loader] == [["0003"], ["0000"]]
    assert ds.exclude(["0003"]) == 1 and ds.files == ["0000"]


def test_nyu_mat_errors(nyu_mat, tmp_path):
    path, split, *_ = nyu_mat
    with pytest.raises(FileNotFoundError, match="(?s)missing.mat does not exist.*images"):
        NYUv2Dataset(tmp_path / "missing.mat", split_file=split)
    split.write_text("0\n5\n")
    with pytest.raises(ValueError, match=r"\[5\] are outside 0..4"):
        NYUv2Dataset(path, split_file=split)
    v5 = tmp_path / "v5.mat"
    v5.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 200)
    with pytest.raises(UnreadableFileError, match="v5.mat.*HDF5"):
        NYUv2Dataset(v5, split_file=split)


def test_nyu_shipped_split_and_datamodule(nyu_mat):
    indices = [int(line) for line in NYU_TEST_SPLIT.read_text().split("\n") if line and not line.startswith("#")]
    assert len(indices) == 654 == len(set(indices)) and indices[:3] == [0, 1, 8] and max(indices) == 1448
    path, split, _, depths = nyu_mat
    dm = NYUv2DataModule(mat_path=str(path), split_file=str(split), batch_size=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["name"] == ["0003", "0000"] and torch.equal(batch["depth"][1], torch.from_numpy(depths[0]))


def test_nyu_folder_millimetre_png_and_npy(tmp_path):
    _rgb(tmp_path / "rgb" / "a.png")
    _png16(tmp_path / "mm" / "a.png", _raw16(12500))
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "a.npy", np.full((H, W), 2.5, np.float32))
    for depth_dir, suffix, metres, n_valid in [("mm", ".png", 12.5, H * W - 1), ("m", ".npy", 2.5, H * W)]:
        dm = NYUv2FolderDataModule(str(tmp_path / "rgb"), str(tmp_path / depth_dir), depth_suffix=suffix)
        dm.setup("test")
        sample = dm.test_dataset[0]
        assert sample["depth"][3, 3] == pytest.approx(metres, rel=1e-6) and sample["valid"].sum() == n_valid


# --- Virtual KITTI 2 ---------------------------------------------------------------------------------------


@pytest.fixture
def vkitti(tmp_path):
    root = tmp_path / "vkitti"
    for scene, variation, frame in [("Scene01", "clone", 0), ("Scene01", "fog", 0), ("Scene02", "clone", 1)]:
        _rgb(root / f"vkitti_2.0.3_rgb/{scene}/{variation}/frames/rgb/Camera_0/rgb_{frame:05d}.jpg", frame)
        raw = _raw16(1250)
        raw[2, 2] = 65535
        _png16(root / f"vkitti_2.0.3_depth/{scene}/{variation}/frames/depth/Camera_0/depth_{frame:05d}.png", raw)
    return root


def test_vkitti2_centimetres_sky_and_selection(vkitti):
    ds = VKITTI2Dataset(vkitti)
    assert ds.files == [
        "Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg",
        "Scene01/fog/frames/rgb/Camera_0/rgb_00000.jpg",
        "Scene02/clone/frames/rgb/Camera_0/rgb_00001.jpg",
    ]
    sample = ds[2]
    assert sample["depth"][3, 3] == 12.5 and sample["depth"][1, 5] == 12.51
    assert sample["depth"][2, 2] == 0 and not sample["valid"][2, 2] and not sample["valid"][0, 0]
    assert sample["valid"].sum() == H * W - 2
    assert VKITTI2Dataset(vkitti, scenes=["Scene01"], variations=["fog"]).files == [ds.files[1]]
    assert len(VKITTI2Dataset(vkitti, variations=["clone"])) == 2
    with pytest.raises(FileNotFoundError, match="(?s)Scene09.*vkitti_2.0.3_rgb"):
        VKITTI2Dataset(vkitti, scenes=["Scene09"])
    with pytest.raises(FileNotFoundError, match="'rain'"):
        VKITTI2Dataset(vkitti, scenes=["Scene01"], variations=["rain"])


def test_vkitti2_wrong_format_is_skipped_by_name(vkitti):
    depth = vkitti / "vkitti_2.0.3_depth/Scene02/clone/frames/depth/Camera_0/depth_00001.png"
    cv2.imwrite(str(depth), np.zeros((H, W, 3), np.uint8))  # a colour PNG is not a depth map
    _error_sample(VKITTI2Dataset(vkitti), 2, depth)


# --- DIODE ---------------------------------------------------------------------------------------------


@pytest.fixture
def diode(tmp_path):
    root = tmp_path / "diode"
    for domain, name in [("indoors", "00019_00183_indoors_000_010"), ("outdoor", "00022_00192_outdoor_000_000")]:
        scan = root / "val" / domain / "scene_00019" / "scan_00183"
        _rgb(scan / f"{name}.png")
        np.save(scan / f"{name}_depth.npy", np.full((H, W, 1), 3.5, np.float32))
        mask = np.ones((H, W), np.float32)
        mask[1, 2] = 0
        np.save(scan / f"{name}_depth_mask.npy", mask)
    return root


def test_diode_depth_mask_and_domains(diode):
    ds = DIODEDataset(diode)
    assert [name.split("/")[0] for name in ds.files] == ["indoors", "outdoor"]
    sample = ds[0]
    assert sample["depth"][0, 0] == 3.5 and sample["depth"][1, 2] == 0 and sample["valid"].sum() == H * W - 1
    assert DIODEDataset(diode, domains=["outdoor"]).files == [ds.files[1]]
    with pytest.raises(ValueError, match="unknown DIODE domains"):
        DIODEDataset(diode, domains=["indoor"])
    with pytest.raises(FileNotFoundError, match="(?s)train does not exist.*_depth_mask.npy"):
        DIODEDataset(diode, split="train")

    mask = diode / "val" / ds.files[1].replace(".png", "_depth_mask.npy")
    np.save(mask, np.ones((W, H), np.float32))
    _error_sample(ds, 1, mask)


# --- Sintel --------------------------------------------------------------------------------------------


def test_sintel_dpt_pairs_and_wrong_tag(tmp_path):
    depth = np.linspace(1, 40, H * W, dtype=np.float32).reshape(H, W)
    for scene in ["alley_1", "cave_2"]:
        _rgb(tmp_path / "final" / scene / "frame_0001.png")
        _write_dpt(tmp_path / "depth" / scene / "frame_0001.dpt", depth)
    ds = SintelDataset(tmp_path)
    assert ds.files == ["alley_1/frame_0001.png", "cave_2/frame_0001.png"]
    np.testing.assert_array_equal(ds[0]["depth"].numpy(), depth)
    assert SintelDataset(tmp_path, scenes=["cave_2"]).files == ["cave_2/frame_0001.png"]
    with pytest.raises(FileNotFoundError, match="(?s)clean does not exist.*frame_0001.dpt"):
        SintelDataset(tmp_path, rendering="clean")
    wrong = tmp_path / "depth" / "cave_2" / "frame_0001.dpt"
    _write_dpt(wrong, depth, tag=3.0)
    _error_sample(ds, 1, wrong)


# --- ETH3D ---------------------------------------------------------------------------------------------


def test_eth3d_raw_float32_of_image_size(tmp_path):
    depth = np.linspace(1, 20, H * W, dtype=np.float32).reshape(H, W)
    depth[5, 7] = np.inf
    for scene in ["courtyard", "office"]:
        _rgb(tmp_path / scene / "images/dslr_images/DSC_0286.JPG")
        (tmp_path / scene / "ground_truth_depth/dslr_images").mkdir(parents=True)
        depth.astype("<f4").tofile(tmp_path / scene / "ground_truth_depth/dslr_images/DSC_0286.JPG")
    ds = ETH3DDataset(tmp_path)
    assert ds.files == ["courtyard/images/dslr_images/DSC_0286.JPG", "office/images/dslr_images/DSC_0286.JPG"]
    sample = ds[0]
    assert sample["depth"][5, 7] == 0 and not sample["valid"][5, 7] and sample["depth"][2, 6] == depth[2, 6]
    assert ETH3DDataset(tmp_path, scenes=["office"]).files == ds.files[1:]
    short = tmp_path / "office/ground_truth_depth/dslr_images/DSC_0286.JPG"
    depth[:-1].astype("<f4").tofile(short)
    _error_sample(ds, 1, short)


# --- DrivingStereo --------------------------------------------------------------------------------------


def test_drivingstereo_weathers(tmp_path):
    for i, weather in enumerate(["sunny", "foggy"]):
        _rgb(tmp_path / weather / "left-image-full-size" / "2018-10-25-07-37-26_000.jpg", i)
        _png16(tmp_path / weather / "depth-map-full-size" / "2018-10-25-07-37-26_000.png", _raw16(3200 + i))
    _rgb(tmp_path / "foggy" / "left-image-full-size" / "2018-10-25-07-37-26_001.jpg")  # no depth map
    ds = DrivingStereoDataset(tmp_path)
    assert ds.files == ["sunny/left-image-full-size/2018-10-25-07-37-26_000.jpg"] + [
        "foggy/left-image-full-size/2018-10-25-07-37-26_000.jpg"
    ]
    assert ds.missing == ["foggy/left-image-full-size/2018-10-25-07-37-26_001.jpg"]
    assert ds[0]["depth"][3, 3] == 12.5 and ds[1]["depth"][3, 3] == 3201 / 256
    assert DrivingStereoDataset(tmp_path, weathers=["foggy"]).files == ds.files[1:]
    with pytest.raises(ValueError, match="unknown DrivingStereo weathers"):
        DrivingStereoDataset(tmp_path, weathers=["snowy"])
    with pytest.raises(FileNotFoundError, match="(?s)rainy.*depth-map-full-size"):
        DrivingStereoDataset(tmp_path, weathers=["rainy"])


# --- DataModules as LightningCLI sees them --------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, args",
    [
        (KITTIDataModule, ["--data.root=/k", "--data.split_file=/s.txt"]),
        (VKITTI2DataModule, ["--data.root=/v", "--data.scenes=[Scene01]", "--data.variations=[clone, fog]"]),
        (NYUv2DataModule, ["--data.mat_path=/n.mat"]),
        (NYUv2FolderDataModule, ["--data.image_dir=/i", "--data.depth_dir=/d"]),
        (DIODEDataModule, ["--data.root=/d", "--data.domains=[indoors]"]),
        (SintelDataModule, ["--data.root=/s", "--data.rendering=clean"]),
        (ETH3DDataModule, ["--data.root=/e", "--data.scenes=[office]"]),
        (DrivingStereoDataModule, ["--data.root=/d", "--data.weathers=[rainy, foggy]"]),
    ],
)
def test_datamodules_parse_as_cli_config(cls, args):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    init = parser.instantiate_classes(parser.parse_args([*args, "--data.batch_size=4", "--data.num_workers=1"]))
    dm = init.data
    assert isinstance(dm, cls) and dm.batch_size == 4 and dm.num_workers == 1
