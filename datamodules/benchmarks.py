"""Zero-shot depth benchmarks in their published layouts: DIODE, MPI Sintel, ETH3D, DrivingStereo.

Relative models are scored affine-invariantly, with the default evaluation protocol (1e-3..80 m, no crop); a task's
``evaluation_protocol`` sets the benchmark's own range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.real import PairedDepthDataModule, PairedDepthDataset, list_images, require_dir
from depthadapt.io import UnreadableFileError, read_depth, read_raw_float32, read_sintel_dpt

__all__ = [
    "DIODEDataModule",
    "DIODEDataset",
    "DrivingStereoDataModule",
    "DrivingStereoDataset",
    "ETH3DDataModule",
    "ETH3DDataset",
    "SintelDataModule",
    "SintelDataset",
]


def _select(root: Path, names: list[str] | None, pattern: str, what: str, layout: str) -> list[str]:
    """Images matching ``pattern`` (``{}`` = each of ``names``, or ``*`` for all) under ``root``; none -> error."""
    files = []
    for name in names or ["*"]:
        found = list_images(root, pattern.format(name))
        if names is not None and not found:
            raise FileNotFoundError(f"no image of {what} {name!r} under {root}; expected layout:\n{layout}")
        files += found
    if not files:
        raise FileNotFoundError(f"no image under {root}; expected layout:\n{layout}")
    return files


class DIODEDataset(PairedDepthDataset):
    """DIODE ``split`` (``val`` or ``train``) of ``domains`` (``indoors``, ``outdoor``; both when None).

    Depth is ``<name>_depth.npy`` (H x W x 1, metres), valid where ``<name>_depth_mask.npy`` is 1.
    Names are relative to ``root/split``. Layout::

        root/val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010.png
        root/val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010_depth.npy
        root/val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010_depth_mask.npy
    """

    LAYOUT = (
        "  ROOT/<split>/<indoors|outdoor>/scene_N/scan_N/<name>.png\n"
        "  ROOT/<split>/<indoors|outdoor>/scene_N/scan_N/<name>_depth.npy\n"
        "  ROOT/<split>/<indoors|outdoor>/scene_N/scan_N/<name>_depth_mask.npy"
    )
    DOMAINS = ("indoors", "outdoor")

    def __init__(
        self, root: str | Path, split: str = "val", domains: list[str] | None = None, with_depth: bool = True
    ) -> None:
        unknown = sorted(set(domains or []) - set(self.DOMAINS))
        if unknown:
            raise ValueError(f"unknown DIODE domains {unknown}; valid: {list(self.DOMAINS)}")
        require_dir(Path(root), "DIODE root", self.LAYOUT)
        split_dir = require_dir(Path(root) / split, "DIODE split folder", self.LAYOUT)
        files = _select(split_dir, domains, "{}/*/*/*.png", "domain", self.LAYOUT)
        super().__init__(split_dir, split_dir, files, with_depth=with_depth, depth_format="_depth.npy")

    def depth_path(self, name: str) -> Path:
        """``<name>_depth.npy`` next to image ``name``."""
        return self.depth_dir / (name.rsplit(".", 1)[0] + "_depth.npy")

    def read_ground_truth(self, name: str, height: int, width: int) -> np.ndarray:
        """H x W metres, 0 where the depth mask is not 1."""
        depth = read_depth(self.depth_path(name))
        mask_path = self.depth_dir / (name.rsplit(".", 1)[0] + "_depth_mask.npy")
        mask = read_depth(mask_path)  # any H x W .npy, with errors naming the file; holds 0 / 1
        if mask.shape != depth.shape:
            raise UnreadableFileError(mask_path, f"mask is {mask.shape} but the depth map is {depth.shape}")
        depth[mask != 1] = 0.0
        return depth


class SintelDataset(PairedDepthDataset):
    """MPI Sintel training frames (``rendering`` ``final`` or ``clean``) with ``.dpt`` depth.

    ``scenes`` (e.g. ``["alley_1"]``) select folders, all when None. Names are
    ``scene/frame_XXXX.png``. Layout (``root`` is Sintel's ``training`` folder)::

        root/final/alley_1/frame_0001.png
        root/depth/alley_1/frame_0001.dpt
    """

    LAYOUT = "  ROOT/<final|clean>/<scene>/frame_0001.png\n  ROOT/depth/<scene>/frame_0001.dpt"

    def __init__(
        self,
        root: str | Path,
        rendering: str = "final",
        scenes: list[str] | None = None,
        with_depth: bool = True,
    ) -> None:
        if rendering not in ("final", "clean"):
            raise ValueError(f"Sintel rendering must be 'final' or 'clean', got {rendering!r}")
        root = require_dir(Path(root), "Sintel root", self.LAYOUT)
        image_dir = require_dir(root / rendering, "Sintel image folder", self.LAYOUT)
        depth_dir = root / "depth"
        if with_depth:
            require_dir(depth_dir, "Sintel depth folder", self.LAYOUT)
        files = _select(image_dir, scenes, "{}/frame_*.png", "scene", self.LAYOUT)
        super().__init__(image_dir, depth_dir, files, with_depth=with_depth, depth_format=".dpt")

    def depth_path(self, name: str) -> Path:
        """``depth/scene/frame_XXXX.dpt`` of image ``scene/frame_XXXX.png``."""
        return self.depth_dir / (name.rsplit(".", 1)[0] + ".dpt")

    def read_ground_truth(self, name: str, height: int, width: int) -> np.ndarray:
        """H x W depth from the ``.dpt`` file."""
        return read_sintel_dpt(self.depth_path(name))


class ETH3DDataset(PairedDepthDataset):
    """ETH3D high-res multi-view DSLR images with ground-truth depth (raw float32, inf invalid).

    A depth file has the image's name and size (4032 x 6048 for the DSLR images), no header.
    ``scenes`` (e.g. ``["courtyard"]``) select folders, all when None; names are
    ``scene/<image_subdir>/DSC_0001.JPG``. Layout::

        root/courtyard/images/dslr_images/DSC_0286.JPG
        root/courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG
    """

    LAYOUT = (
        "  ROOT/<scene>/<image_subdir>/DSC_0286.JPG   (image_subdir: images/dslr_images)\n"
        "  ROOT/<scene>/<depth_subdir>/DSC_0286.JPG   (depth_subdir: ground_truth_depth/dslr_images; raw float32)"
    )

    def __init__(
        self,
        root: str | Path,
        scenes: list[str] | None = None,
        image_subdir: str = "images/dslr_images",
        depth_subdir: str = "ground_truth_depth/dslr_images",
        with_depth: bool = True,
    ) -> None:
        root = require_dir(Path(root), "ETH3D root", self.LAYOUT)
        self.image_subdir = image_subdir
        self.depth_subdir = depth_subdir
        files = _select(root, scenes, "{}/" + image_subdir + "/*", "scene", self.LAYOUT)
        super().__init__(root, root, files, with_depth=with_depth, depth_format="raw float32")

    def depth_path(self, name: str) -> Path:
        """Raw depth file of image ``scene/<image_subdir>/file``: ``scene/<depth_subdir>/file``."""
        scene, file = name.split("/", 1)[0], name.rsplit("/", 1)[1]
        return self.depth_dir / scene / self.depth_subdir / file

    def read_ground_truth(self, name: str, height: int, width: int) -> np.ndarray:
        """H x W depth of the image's size, 0 where inf."""
        return read_raw_float32(self.depth_path(name), height, width)


class DrivingStereoDataset(PairedDepthDataset):
    """DrivingStereo weather subsets: full-size left images with depth PNGs (value / 256 m, 0 invalid).

    ``weathers`` selects among ``sunny``, ``cloudy``, ``foggy``, ``rainy`` (all when None). Names are
    ``weather/left-image-full-size/<frame>.jpg``. Layout::

        root/sunny/left-image-full-size/2018-10-19-09-30-39_2018-10-19-09-31-37-823.jpg
        root/sunny/depth-map-full-size/2018-10-19-09-30-39_2018-10-19-09-31-37-823.png
    """

    LAYOUT = (
        "  ROOT/<sunny|cloudy|foggy|rainy>/left-image-full-size/<frame>.jpg\n"
        "  ROOT/<sunny|cloudy|foggy|rainy>/depth-map-full-size/<frame>.png"
    )
    WEATHERS = ("sunny", "cloudy", "foggy", "rainy")

    def __init__(self, root: str | Path, weathers: list[str] | None = None, with_depth: bool = True) -> None:
        unknown = sorted(set(weathers or []) - set(self.WEATHERS))
        if unknown:
            raise ValueError(f"unknown DrivingStereo weathers {unknown}; valid: {list(self.WEATHERS)}")
        root = require_dir(Path(root), "DrivingStereo root", self.LAYOUT)
        if weathers is None:
            weathers = [weather for weather in self.WEATHERS if (root / weather).is_dir()]
            if not weathers:
                raise FileNotFoundError(f"no weather folder under {root}; expected layout:\n{self.LAYOUT}")
        for weather in weathers:
            require_dir(root / weather / "left-image-full-size", "DrivingStereo image folder", self.LAYOUT)
            if with_depth:
                require_dir(root / weather / "depth-map-full-size", "DrivingStereo depth folder", self.LAYOUT)
        files = _select(root, weathers, "{}/left-image-full-size/*", "weather", self.LAYOUT)
        super().__init__(root, root, files, 1.0 / 256.0, with_depth)

    def depth_path(self, name: str) -> Path:
        """``weather/depth-map-full-size/<frame>.png`` of image ``weather/left-image-full-size/<frame>.jpg``."""
        weather, _, file = name.split("/")
        return self.depth_dir / weather / "depth-map-full-size" / (file.rsplit(".", 1)[0] + ".png")


class DIODEDataModule(PairedDepthDataModule):
    """DIODE ``split`` / ``domains``; see ``DIODEDataset``. Image sizes are equal (768 x 1024)."""

    dataset_class = DIODEDataset

    def __init__(
        self,
        root: str,
        split: str = "val",
        domains: list[str] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, root=root, split=split, domains=domains)


class SintelDataModule(PairedDepthDataModule):
    """MPI Sintel training frames with ``.dpt`` depth; see ``SintelDataset``."""

    dataset_class = SintelDataset

    def __init__(
        self,
        root: str,
        rendering: str = "final",
        scenes: list[str] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, root=root, rendering=rendering, scenes=scenes)


class ETH3DDataModule(PairedDepthDataModule):
    """ETH3D DSLR images with raw float32 depth; see ``ETH3DDataset``."""

    dataset_class = ETH3DDataset

    def __init__(
        self,
        root: str,
        scenes: list[str] | None = None,
        image_subdir: str = "images/dslr_images",
        depth_subdir: str = "ground_truth_depth/dslr_images",
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            root=root,
            scenes=scenes,
            image_subdir=image_subdir,
            depth_subdir=depth_subdir,
        )


class DrivingStereoDataModule(PairedDepthDataModule):
    """DrivingStereo weather subsets (``weathers``, all four when None); see ``DrivingStereoDataset``."""

    dataset_class = DrivingStereoDataset

    def __init__(self, root: str, weathers: list[str] | None = None, batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers, root=root, weathers=weathers)
