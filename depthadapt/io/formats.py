"""Depth and image file formats: reading, writing (always atomically) and colourising.

Framework-free: numpy, OpenCV and torch only. Depth is metres, float32, 0 where invalid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

# OpenCV reads this on first EXR access; builds without OpenEXR ignore it.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from depthadapt.io.atomic import atomic_path  # noqa: E402
from depthadapt.io.manifest import MANIFEST_NAME  # noqa: E402

__all__ = [
    "IMAGE_SUFFIXES",
    "UnreadableFileError",
    "colorize_depth",
    "decode_image_file",
    "list_image_files",
    "read_depth",
    "read_image",
    "write_color_png",
    "write_depth_npy",
    "write_depth_png16",
    "write_image_file",
    "write_relative_png16",
]

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pnm"}
)
"""Lower-case suffixes of the image files the loaders pick up (compare with ``suffix.lower()``). ``.pgm`` is not
one: it holds depth beside ``.ppm`` images (NYU's raw dumps); ``read_depth`` reads it."""

ArrayLike = np.ndarray | torch.Tensor

_log = logging.getLogger(__name__)


def list_image_files(root: Path, skip: Iterable[Path] = ()) -> list[str]:
    """Relative posix paths of the images under ``root``, sorted; hidden entries and the ``skip`` folders excluded.

    Directory symlinks are followed, but every real folder is visited once, so a symlink loop (``loop -> .``)
    neither hangs the listing nor lists an image twice. Folders holding an output manifest (``MANIFEST_NAME``: a
    prediction job wrote them) are outputs, never inputs, and are left out. Two images whose names differ only by
    extension (``x.jpg``, ``x.png``) would write the same outputs: that is an error naming both. Files that are not
    images (by suffix) are counted by suffix in a log line.
    """
    skipped = {Path(p).resolve() for p in skip}
    seen: set[str] = set()
    names = []
    others: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if MANIFEST_NAME in filenames and Path(dirpath).resolve() != Path(root).resolve():
            _log.info("not listing %s: it holds the outputs of a job (%s)", dirpath, MANIFEST_NAME)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and Path(dirpath, d).resolve() not in skipped
            and os.path.realpath(os.path.join(dirpath, d)) not in seen
        )
        rel = Path(dirpath).relative_to(root)
        for f in filenames:
            if f.startswith(".") or (f == MANIFEST_NAME and Path(dirpath).resolve() == Path(root).resolve()):
                continue
            suffix = Path(f).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                names.append((rel / f).as_posix())
            else:
                others[suffix or "(none)"] = others.get(suffix or "(none)", 0) + 1
    if others:
        counts = ", ".join(f"{count} {suffix}" for suffix, count in sorted(others.items()))
        _log.info("%s: %d files are not images and are left out (%s; images: %s)", root, sum(others.values()), counts,
                  " ".join(sorted(IMAGE_SUFFIXES)))
    names.sort()
    stems: dict[str, str] = {}
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem in stems:
            raise ValueError(
                f"{root}: {stems[stem]} and {name} differ only by their extension, so their outputs (depth maps, "
                "labels, masks) would overwrite each other: rename one, or list one of them in a split file"
            )
        stems[stem] = name
    return names


class UnreadableFileError(ValueError):
    """A file is missing or cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.path, self.reason)


def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def _as_2d(values: ArrayLike, what: str) -> np.ndarray:
    arr = _to_numpy(values)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be an H x W array, got shape {tuple(arr.shape)}")
    return arr


def write_image_file(path: Path, array: np.ndarray) -> None:
    """Write an image array (H x W or H x W x C, BGR, OpenCV dtypes) atomically with OpenCV."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise OSError(f"OpenCV could not write {path} (unsupported suffix or disk error)")


def decode_image_file(path: Path, flags: int) -> np.ndarray:
    """Decode an image file with OpenCV; np.fromfile keeps non-ASCII paths working everywhere."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise UnreadableFileError(path, "file does not exist") from None
    except OSError as err:
        raise UnreadableFileError(path, str(err)) from None
    if data.size == 0:
        raise UnreadableFileError(path, "file is empty")
    try:
        array = cv2.imdecode(data, flags)
    except cv2.error as err:
        raise UnreadableFileError(path, f"OpenCV error: {err}") from None
    if array is None:
        reason = "not a decodable image (corrupt file or unsupported format)"
        if path.suffix.lower() == ".exr":
            reason += (
                "; this OpenCV build may lack OpenEXR support: convert the depth maps to .npy or float .tif"
            )
        raise UnreadableFileError(path, reason)
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB.

    Grayscale is expanded to 3 channels, alpha is dropped, 16-bit images are reduced to 8 bit
    (``>> 8``, as ``cv2.imread`` does) and the EXIF orientation is applied.
    Raises ``UnreadableFileError`` for a missing or undecodable file.
    """
    path = Path(path)
    image = decode_image_file(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UnreadableFileError(path, f"unsupported pixel type {image.dtype} (expected 8- or 16-bit)")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: str | os.PathLike, scale: float = 1.0) -> np.ndarray:
    """Read a depth map as H x W float32 metres (stored value * ``scale``), 0 where invalid.

    Formats: ``.npy`` (H x W or H x W x 1), single-channel 8/16-bit PNG (raw value * ``scale``;
    KITTI: ``scale=1/256``), float ``.tif``/``.tiff``/``.exr``. Non-finite and negative values
    become 0. Raises ``UnreadableFileError`` for a missing, undecodable or multi-channel file.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise UnreadableFileError(path, "file does not exist")
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise UnreadableFileError(path, f"not a valid .npy array: {err}") from None
    else:
        depth = decode_image_file(path, cv2.IMREAD_UNCHANGED)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise UnreadableFileError(path, f"expected a single-channel H x W depth map, got shape {depth.shape}")
    if not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
        raise UnreadableFileError(path, f"unsupported depth dtype {depth.dtype}")
    depth = depth.astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def write_depth_npy(path: str | os.PathLike, depth: ArrayLike) -> None:
    """Write an H x W depth map (metres) as float32 ``.npy``."""
    depth = _as_2d(depth, "depth").astype(np.float32)
    with atomic_path(path) as tmp:
        np.save(tmp, depth)


def write_depth_png16(path: str | os.PathLike, depth: ArrayLike, scale: float = 256.0) -> None:
    """Write an H x W metric depth map as 16-bit PNG: ``round(depth * scale)`` clipped to 0..65535.

    With the default (KITTI) scale of 256 the range is 0..255.99 m at 1/256 m resolution;
    0 and non-finite values are stored as 0 (invalid). Read back with ``read_depth(path, 1 / scale)``.
    """
    depth = _as_2d(depth, "depth").astype(np.float64)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    write_image_file(Path(path), np.clip(np.round(depth * scale), 0, 65535).astype(np.uint16))


def _normalise(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max normalise ``values`` over ``valid`` to [0, 1]; invalid and constant maps give 0."""
    out = np.zeros(values.shape, dtype=np.float64)
    if not valid.any():
        return out
    lo, hi = values[valid].min(), values[valid].max()
    if hi > lo:
        out[valid] = (values[valid] - lo) / (hi - lo)
    return out


def write_relative_png16(path: str | os.PathLike, disparity: ArrayLike) -> None:
    """Write an H x W relative map (disparity) min-max normalised to a 0..65535 16-bit PNG.

    Normalisation uses the finite values; non-finite pixels and constant maps are stored as 0.
    """
    disparity = _as_2d(disparity, "disparity").astype(np.float64)
    norm = _normalise(disparity, np.isfinite(disparity))
    write_image_file(Path(path), np.round(norm * 65535).astype(np.uint16))


def colorize_depth(values: ArrayLike, invert: bool = False, valid: ArrayLike | None = None) -> np.ndarray:
    """Colour an H x W map with the inferno colour map: H x W x 3 uint8 RGB.

    Values are min-max normalised over the finite (and ``valid``, if given) pixels, which are
    drawn black otherwise. For disparity large is bright; pass ``invert=True`` for metric depth so
    that near is bright there too.
    """
    values = _as_2d(values, "values").astype(np.float64)
    mask = np.isfinite(values)
    if valid is not None:
        mask &= _as_2d(valid, "valid").astype(bool)
    norm = _normalise(values, mask)
    if invert:
        norm = 1.0 - norm
    gray = np.round(norm * 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    rgb[~mask] = 0
    return rgb


def write_color_png(path: str | os.PathLike, rgb: ArrayLike) -> None:
    """Write an H x W x 3 uint8 RGB image (e.g. from ``colorize_depth``) as PNG."""
    rgb = _to_numpy(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an H x W x 3 uint8 array, got {rgb.dtype} {tuple(rgb.shape)}")
    write_image_file(Path(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


_SINTEL_TAG = np.float32(202021.25)


def read_sintel_dpt(path: str | os.PathLike) -> np.ndarray:
    """Read an MPI Sintel ``.dpt`` depth file as H x W float32, 0 where non-finite or negative.

    Layout (little-endian): float32 tag 202021.25, int32 width, int32 height, width * height float32.
    Raises ``UnreadableFileError`` for a missing, truncated or wrongly tagged file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFileError(path, "file does not exist") from None
    except OSError as err:
        raise UnreadableFileError(path, str(err)) from None
    if len(data) < 12:
        raise UnreadableFileError(path, f"truncated .dpt header: {len(data)} bytes, expected at least 12")
    tag = np.frombuffer(data, "<f4", 1)[0]
    if tag != _SINTEL_TAG:
        raise UnreadableFileError(path, f"not a Sintel .dpt depth file: tag {tag!r}, expected {_SINTEL_TAG!r}")
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, 4))
    if width < 1 or height < 1:
        raise UnreadableFileError(path, f"invalid .dpt size {width} x {height}")
    expected = 12 + 4 * width * height
    if len(data) != expected:
        raise UnreadableFileError(
            path, f"{len(data)} bytes, expected {expected} for a {width} x {height} .dpt depth map"
        )
    depth = np.frombuffer(data, "<f4", width * height, 12).reshape(height, width).astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def read_raw_float32(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """Read a headerless little-endian float32 depth file (ETH3D) as H x W float32, 0 where inf/NaN/negative.

    Raises ``UnreadableFileError`` for a missing file or one whose size is not ``4 * height * width`` bytes.
    """
    path = Path(path)
    expected = 4 * height * width
    try:
        size = path.stat().st_size
        if size != expected:
            raise UnreadableFileError(
                path, f"{size} bytes, expected {expected} for a {height} x {width} raw float32 depth map"
            )
        depth = np.fromfile(path, dtype="<f4").reshape(height, width).astype(np.float32, copy=False)
    except FileNotFoundError:
        raise UnreadableFileError(path, "file does not exist") from None
    except OSError as err:
        raise UnreadableFileError(path, str(err)) from None
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth
