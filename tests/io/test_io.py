import pickle

import cv2
import numpy as np
import pytest
import torch

from depthadapt.io import (
    IMAGE_SUFFIXES,
    UnreadableFileError,
    atomic_path,
    atomic_write,
    colorize_depth,
    read_depth,
    read_image,
    write_color_png,
    write_depth_npy,
    write_depth_png16,
    write_relative_png16,
)

pytestmark = pytest.mark.unit


def _rgb(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_suffixes_are_lower_case():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pnm"} == set(IMAGE_SUFFIXES)
    assert all(suffix == suffix.lower() for suffix in IMAGE_SUFFIXES)


def test_read_image_png_is_rgb(tmp_path):
    rgb = _rgb()
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_jpg_upper_case_suffix(tmp_path):
    rgb = np.full((8, 8, 3), (200, 30, 10), np.uint8)
    cv2.imwrite(str(tmp_path / "a.JPG"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "a.JPG")
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - rgb).max() < 8
    assert out[..., 0].mean() > out[..., 2].mean()  # red stays in channel 0


def test_read_image_gray16_and_alpha(tmp_path):
    gray = np.full((4, 5), 65535, np.uint16)
    gray[0, 0] = 256 * 100
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert tuple(out[0, 0]) == (100, 100, 100) and out[1, 1, 0] == 255

    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 7  # blue, alpha
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (4, 5, 3) and tuple(out[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("content", [None, b"", b"definitely not a png"])
def test_read_image_unreadable_names_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match="bad.png") as info:
        read_image(path)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)


def test_png16_round_trip(tmp_path):
    depth = np.array([[12.5, 0.0], [1.0 / 256, 300.0]], np.float32)
    write_depth_png16(tmp_path / "d.png", depth)
    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert raw.tolist() == [[3200, 0], [1, 65535]]
    back = read_depth(tmp_path / "d.png", scale=1 / 256)
    assert back.dtype == np.float32
    assert back[0, 0] == 12.5 and back[0, 1] == 0.0


def test_npy_round_trip_and_invalid_values(tmp_path):
    depth = np.array([[1.5, np.nan], [np.inf, -2.0]], np.float32)
    write_depth_npy(tmp_path / "d.npy", torch.from_numpy(depth))
    back = read_depth(tmp_path / "d.npy")
    assert back.dtype == np.float32 and back.shape == (2, 2)
    assert back.tolist() == [[1.5, 0.0], [0.0, 0.0]]
    np.save(tmp_path / "c.npy", np.ones((3, 4, 1), np.float64))
    assert read_depth(tmp_path / "c.npy", scale=2.0).tolist() == np.full((3, 4), 2.0).tolist()


def test_float_tif_depth(tmp_path):
    depth = np.array([[0.25, 7.0], [np.nan, 3.0]], np.float32)
    assert cv2.imwrite(str(tmp_path / "d.tif"), depth)
    assert read_depth(tmp_path / "d.tif").tolist() == [[0.25, 7.0], [0.0, 3.0]]


def test_read_depth_errors(tmp_path):
    with pytest.raises(UnreadableFileError, match="missing.npy"):
        read_depth(tmp_path / "missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(UnreadableFileError, match="junk.npy"):
        read_depth(tmp_path / "junk.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(UnreadableFileError, match="single-channel"):
        read_depth(tmp_path / "cube.npy")
    cv2.imwrite(str(tmp_path / "color.png"), _rgb())
    with pytest.raises(UnreadableFileError, match="color.png"):
        read_depth(tmp_path / "color.png")


def test_relative_png16(tmp_path):
    write_relative_png16(tmp_path / "r.png", np.array([[1.0, 2.0], [3.0, np.nan]]))
    raw = cv2.imread(str(tmp_path / "r.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 32768], [65535, 0]]
    write_relative_png16(tmp_path / "c.png", np.full((2, 3), 4.0))
    assert not cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED).any()


def test_colorize_and_write_color(tmp_path):
    values = np.array([[1.0, 2.0], [3.0, np.nan]])
    rgb = colorize_depth(values)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[1, 0].sum() > rgb[0, 0].sum()  # large disparity is bright
    assert not rgb[1, 1].any()
    inverted = colorize_depth(values, invert=True)
    assert inverted[0, 0].sum() > inverted[1, 0].sum()  # near depth is bright
    np.testing.assert_array_equal(inverted[0, 0], rgb[1, 0])
    masked = colorize_depth(values, valid=np.array([[True, True], [False, True]]))
    assert not masked[1, 0].any() and masked[0, 1].sum() > masked[0, 0].sum()

    write_color_png(tmp_path / "sub" / "c.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "c.png"), rgb)
    with pytest.raises(ValueError, match="uint8"):
        write_color_png(tmp_path / "x.png", values)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    out = tmp_path / "deep" / "er"
    write_depth_png16(out / "a.png", np.ones((2, 2)))
    write_depth_npy(out / "a.npy", np.ones((2, 2)))
    write_relative_png16(out / "b.png", np.ones((2, 2)))
    write_color_png(out / "c.png", _rgb())
    atomic_write(out / "t.txt", lambda p: p.write_text("hi"))
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "b.png", "c.png", "t.txt"]
    assert (out / "t.txt").read_text() == "hi"


def test_atomic_path_uses_same_suffix_and_folder(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith("x.tmp-")
        tmp.write_bytes(b"new")
    assert (tmp_path / "x.png").read_bytes() == b"new"
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(IsADirectoryError, match=r"folder\.pth is a folder: give the path of the file"):
        with atomic_path(tmp_path / "folder.pth"):
            raise AssertionError("the body must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.pth", "x.png"]


def test_failure_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "d.npy"
    write_depth_npy(target, np.full((2, 2), 5.0))

    def fail(tmp):
        tmp.write_bytes(b"half written")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, fail)
    assert read_depth(target).tolist() == [[5.0, 5.0], [5.0, 5.0]]
    assert [p.name for p in tmp_path.iterdir()] == ["d.npy"]

    with pytest.raises(ValueError, match="H x W"):
        write_depth_png16(tmp_path / "bad.png", np.ones((2, 2, 3)))
    with pytest.raises(OSError, match="nothing was written"):
        atomic_write(tmp_path / "empty.txt", lambda p: None)
    assert [p.name for p in tmp_path.iterdir()] == ["d.npy"]


def test_atomic_directory_replaces_only_its_own_files(tmp_path):
    import json
    import os

    from depthadapt.io import EXPORT_RECORD, ExistingOutputError, atomic_directory

    target = tmp_path / "export"
    with atomic_directory(target, "hf") as staging:
        (staging / "old.txt").write_text("old")
        (staging / "kept.txt").write_text("v1")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700
    (target / "notes.txt").write_text("mine")  # a file the export did not write
    with atomic_directory(target, "hf") as staging:  # an earlier hf export: replaced, its stale file removed
        (staging / "new.txt").write_text("new")
        (staging / "kept.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == [EXPORT_RECORD, "kept.txt", "new.txt", "notes.txt"]
    assert (target / "kept.txt").read_text() == "v2" and (target / "notes.txt").read_text() == "mine"
    assert json.loads((target / EXPORT_RECORD).read_text()) == {"kind": "hf", "files": ["kept.txt", "new.txt"]}
    with pytest.raises(ExistingOutputError, match=f"{target} is not empty and not an earlier peft export.*--overwrite"):
        atomic_directory(target, "peft").__enter__()
    with pytest.raises(RuntimeError), atomic_directory(target, "hf") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == [EXPORT_RECORD, "kept.txt", "new.txt", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_atomic_directory_never_deletes_a_folder_it_did_not_write(tmp_path):
    from depthadapt.io import EXPORT_RECORD, ExistingOutputError, atomic_directory

    run = tmp_path / "checkpoints"
    run.mkdir()
    (run / "last.ckpt").write_text("weights")
    (run / "lora_adapter").mkdir()
    (run / "lora_adapter" / "adapter_model.safetensors").write_text("adapter")
    with pytest.raises(ExistingOutputError, match=f"{run} is not empty and not an earlier hf export"):
        atomic_directory(run, "hf").__enter__()
    with atomic_directory(run, "hf", overwrite=True) as staging:
        (staging / "config.json").write_text("{}")
    assert (run / "last.ckpt").read_text() == "weights"
    assert (run / "lora_adapter" / "adapter_model.safetensors").read_text() == "adapter"
    assert (run / "config.json").is_file() and (run / EXPORT_RECORD).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExistingOutputError, match="is a file"):
        atomic_directory(tmp_path / "file", "hf").__enter__()
