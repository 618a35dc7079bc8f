"""KITTI (raw images + annotated depth, Eigen test split) and Virtual KITTI 2 in their published layouts.

KITTI is evaluated as the official evaluation does (``KITTI_EIGEN``: 1e-3..80 m, Garg crop); the datamodules state it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from datamodules.real import SPLITS_DIR, PairedDepthDataModule, PairedDepthDataset, list_images, read_split, require_dir
from depthadapt.io import read_depth
from depthadapt.metrics import DEFAULT_PROTOCOL, KITTI_EIGEN, EvaluationProtocol

__all__ = [
    "KITTI_EIGEN_TEST_SPLIT",
    "KITTIDataModule",
    "KITTIDataset",
    "VKITTI2DataModule",
    "VKITTI2Dataset",
    "read_kitti_split",
]

KITTI_EIGEN_TEST_SPLIT = SPLITS_DIR / "kitti_eigen_test_652.txt"

_KITTI_SPLIT_EXAMPLE = (
    "raw_data/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
    "data_depth_annotated/val/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
)
_ANNOTATED_SPLITS = ("train", "val")


def read_kitti_split(path: str | Path) -> list[tuple[str, str]]:
    """``(image name, annotated split)`` per line of a KITTI split file ``"raw image  annotated depth"``.

    The image name is ``date/drive/image_0X/data/frame.png`` (the last five components of the raw
    image path, so absolute paths work too); the split is ``train`` or ``val``, where the depth
    path puts the frame's ``data_depth_annotated`` ground truth.
    """
    path = Path(path)
    entries = []
    for line in read_split(path, _KITTI_SPLIT_EXAMPLE):
        tokens = line.split()
        image = PurePosixPath(tokens[0]).parts[-5:]
        depth = PurePosixPath(tokens[-1]).parts[-6:]
        if (
            len(tokens) != 2
            or len(image) != 5
            or image[3] != "data"
            or len(depth) != 6
            or depth[0] not in _ANNOTATED_SPLITS
            or depth[1:] != (image[1], "proj_depth", "groundtruth", image[2], image[4])
        ):
            raise ValueError(f"split file {path}: cannot parse line {line!r}; expected e.g.\n  {_KITTI_SPLIT_EXAMPLE}")
        entries.append(("/".join(image), depth[0]))
    return entries


class KITTIDataset(PairedDepthDataset):
    """KITTI raw images with ``data_depth_annotated`` ground truth (16-bit PNG / 256 m, 0 invalid).

    ``split_file`` lines are ``"raw image  annotated depth"`` paths (default: the shipped Eigen test
    split of 652 images); a frame's ground truth is looked up under the split the line names, then
    the other one of ``train`` / ``val``. Names are ``date/drive/image_02/data/frame.png``.
    Evaluated with ``KITTI_EIGEN`` (Garg crop) by ``KITTIDataModule``. Layout (``raw_dir`` and ``annotated_dir``
    relative to ``root``)::

        root/raw_data/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
        root/data_depth_annotated/{train,val}/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png
    """

    LAYOUT = (
        "  ROOT/{raw_dir}/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png\n"
        "  ROOT/{annotated_dir}/{{train,val}}/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    )

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path | None = None,
        raw_dir: str = "raw_data",
        annotated_dir: str = "data_depth_annotated",
        with_depth: bool = True,
    ) -> None:
        layout = self.LAYOUT.format(raw_dir=raw_dir, annotated_dir=annotated_dir)
        root = require_dir(Path(root), "KITTI root", layout)
        entries = read_kitti_split(KITTI_EIGEN_TEST_SPLIT if split_file is None else split_file)
        self._annotated_split = dict(entries)
        image_dir = require_dir(root / raw_dir, "KITTI raw data folder", layout)
        depth_dir = root / annotated_dir
        if with_depth:
            require_dir(depth_dir, "KITTI annotated depth folder", layout)
        super().__init__(image_dir, depth_dir, [name for name, _ in entries], 1.0 / 256.0, with_depth)

    def depth_path(self, name: str) -> Path:
        """Annotated depth PNG of raw image ``name``: under its listed split if there, else the other one."""
        _, drive, camera, _, frame = name.split("/")
        relative = f"{drive}/proj_depth/groundtruth/{camera}/{frame}"
        listed = self._annotated_split[name]
        candidates = [listed] + [split for split in _ANNOTATED_SPLITS if split != listed]
        for split in candidates:
            path = self.depth_dir / split / relative
            if path.is_file():
                return path
        return self.depth_dir / listed / relative


class KITTIDataModule(PairedDepthDataModule):
    """KITTI Eigen test split (or ``split_file``) with annotated ground truth; see ``KITTIDataset``.

    Image sizes differ between recording days: keep ``batch_size: 1``. Evaluated with ``evaluation_protocol``
    (default ``KITTI_EIGEN``: 1e-3..80 m, Garg crop).
    """

    dataset_class = KITTIDataset

    def __init__(
        self,
        root: str,
        split_file: str | None = None,
        raw_dir: str = "raw_data",
        annotated_dir: str = "data_depth_annotated",
        batch_size: int = 1,
        num_workers: int = 0,
        evaluation_protocol: EvaluationProtocol = KITTI_EIGEN,
    ) -> None:
        super().__init__(batch_size, num_workers, evaluation_protocol, root=root, split_file=split_file,
                         raw_dir=raw_dir, annotated_dir=annotated_dir)


class VKITTI2Dataset(PairedDepthDataset):
    """Virtual KITTI 2: RGB JPEGs with 16-bit PNG depth in centimetres (65535 = sky / far, invalid).

    ``scenes`` (e.g. ``["Scene01"]``) and ``variations`` (e.g. ``["clone", "fog"]``) select folders,
    all when None; ``camera`` is ``Camera_0`` (left) or ``Camera_1``. Names are relative to the RGB
    root. Layout::

        root/vkitti_2.0.3_rgb/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg
        root/vkitti_2.0.3_depth/Scene01/clone/frames/depth/Camera_0/depth_00000.png
    """

    LAYOUT = (
        "  ROOT/vkitti_2.0.3_rgb/SceneXX/<variation>/frames/rgb/Camera_0/rgb_00000.jpg\n"
        "  ROOT/vkitti_2.0.3_depth/SceneXX/<variation>/frames/depth/Camera_0/depth_00000.png"
    )
    FAR = 65535  # stored value of sky and everything beyond 655.35 m

    def __init__(
        self,
        root: str | Path,
        scenes: list[str] | None = None,
        variations: list[str] | None = None,
        camera: str = "Camera_0",
        with_depth: bool = True,
    ) -> None:
        root = require_dir(Path(root), "Virtual KITTI 2 root", self.LAYOUT)
        image_dir = require_dir(root / "vkitti_2.0.3_rgb", "Virtual KITTI 2 RGB folder", self.LAYOUT)
        depth_dir = root / "vkitti_2.0.3_depth"
        if with_depth:
            require_dir(depth_dir, "Virtual KITTI 2 depth folder", self.LAYOUT)
        files = []
        for scene in scenes or ["Scene*"]:
            if scenes is not None:
                require_dir(image_dir / scene, "Virtual KITTI 2 scene", self.LAYOUT)
            for variation in variations or ["*"]:
                found = list_images(image_dir, f"{scene}/{variation}/frames/rgb/{camera}/rgb_*.jpg")
                if variations is not None and not found:
                    raise FileNotFoundError(
                        f"no image of variation {variation!r}, camera {camera!r} of {scene} under {image_dir}; "
                        f"expected layout:\n{self.LAYOUT}"
                    )
                files += found
        if not files:
            raise FileNotFoundError(f"no Virtual KITTI 2 image under {image_dir}; expected layout:\n{self.LAYOUT}")
        super().__init__(image_dir, depth_dir, sorted(files), with_depth=with_depth)

    def depth_path(self, name: str) -> Path:
        """Depth PNG of RGB image ``name`` (``Scene/variation/frames/rgb/Camera_k/rgb_N.jpg``)."""
        scene, variation, _, _, camera, frame = name.split("/")
        depth_name = "depth_" + frame.removeprefix("rgb_").rsplit(".", 1)[0] + ".png"
        return self.depth_dir / scene / variation / "frames" / "depth" / camera / depth_name

    def read_ground_truth(self, name: str, height: int, width: int) -> np.ndarray:
        """H x W metres: centimetres / 100, 0 where the stored value is 65535 (sky / far)."""
        centimetres = read_depth(self.depth_path(name))
        return np.where(centimetres >= self.FAR, 0.0, centimetres / 100.0).astype(np.float32)


class VKITTI2DataModule(PairedDepthDataModule):
    """Virtual KITTI 2 scenes / variations / camera; see ``VKITTI2Dataset``."""

    dataset_class = VKITTI2Dataset

    def __init__(
        self,
        root: str,
        scenes: list[str] | None = None,
        variations: list[str] | None = None,
        camera: str = "Camera_0",
        batch_size: int = 1,
        num_workers: int = 0,
        evaluation_protocol: EvaluationProtocol = DEFAULT_PROTOCOL,
    ) -> None:
        super().__init__(batch_size, num_workers, evaluation_protocol, root=root, scenes=scenes, variations=variations,
                         camera=camera)
