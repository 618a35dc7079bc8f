"""Shared machinery of the real-dataset readers: image/ground-truth pairs in a published layout.

Each dataset (``datamodules.kitti``, ``datamodules.nyu``, ``datamodules.benchmarks``) lists its
images, maps an image to its ground-truth file and reads that file in its own format; everything
else (missing ground truth counted and named, unreadable files turned into skipped samples,
``exclude`` for resumable prediction, the DataModule stages) comes from ``ImageFolderDataset`` /
``ImageFolderDataModule``. A dataset already converted to "images + depth maps with the same
relative names" (e.g. nuScenes LiDAR projected into the camera) needs no reader of its own: use
``datamodules.ImageFolderDataModule``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from datamodules.base import read_split_file
from datamodules.image_folder import ImageFolderDataModule, ImageFolderDataset
from depthadapt.io import IMAGE_SUFFIXES
from depthadapt.metrics import DEFAULT_PROTOCOL, EvaluationProtocol

__all__ = [
    "SPLITS_DIR",
    "PairedDepthDataModule",
    "PairedDepthDataset",
    "list_images",
    "read_split",
    "require_dir",
]

log = logging.getLogger(__name__)

SPLITS_DIR = Path(__file__).with_name("splits")
"""Standard evaluation splits shipped with the package (KITTI Eigen test, NYU test)."""


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming it and showing ``layout``."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder; expected layout:\n{layout}")
    return path


def read_split(path: Path, example: str) -> list[str]:
    """Entries of a split file (blank and ``#`` lines skipped); FileNotFoundError with an ``example`` line."""
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} does not exist; expected a text file with one entry per line "
            f"('#' starts a comment), e.g.\n  {example}"
        )
    return read_split_file(path)


def list_images(root: Path, pattern: str) -> list[str]:
    """Sorted posix paths relative to ``root`` of the non-hidden image files matching glob ``pattern``."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.glob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


class PairedDepthDataset(ImageFolderDataset):
    """Images ``image_dir / name`` with ground truth at ``depth_path(name)`` read by ``read_ground_truth``.

    Subclasses list ``files`` and override ``depth_path`` (and ``read_ground_truth`` for formats other
    than ``read_depth(path, depth_scale)``). Images without a ground-truth file are excluded, logged
    and listed in ``missing``. ``with_depth=False`` reads images only (prediction). Samples are at the
    native resolution: image 3 x H x W float32 in [0, 1], depth H x W float32 metres (0 invalid),
    valid H x W bool, name, index; an unreadable file gives ``{"name", "index", "error"}``.
    """

    def __init__(
        self,
        image_dir: Path,
        depth_dir: Path,
        files: list[str],
        depth_scale: float = 1.0,
        with_depth: bool = True,
        depth_format: str = ".png",
    ) -> None:
        # depth_format only names the ground-truth files in messages; depth_path locates them.
        super().__init__(
            image_dir, depth_dir if with_depth else None, depth_format, depth_scale=depth_scale, files=files
        )

    @property
    def missing(self) -> list[str]:
        """Names of the listed images whose ground-truth file does not exist (excluded from the dataset)."""
        return self.missing_depth

    def depth_path(self, name: str) -> Path:
        """Path of the ground-truth file of image ``name``."""
        raise NotImplementedError


class PairedDepthDataModule(ImageFolderDataModule):
    """A dataset class ``dataset_class(**dataset_kwargs, with_depth=...)`` served by ImageFolderDataModule.

    Test, validate and fit read ground truth; predict reads images only, so images without ground
    truth are predicted too. Batches as ``collate_samples``; ``batch_size > 1`` needs equal image sizes.
    """

    dataset_class: ClassVar[type[Dataset]]

    def __init__(
        self,
        batch_size: int = 1,
        num_workers: int = 0,
        evaluation_protocol: EvaluationProtocol = DEFAULT_PROTOCOL,
        **dataset_kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, evaluation_protocol=evaluation_protocol)
        self.dataset_kwargs = dataset_kwargs

    def _dataset(self, with_depth: bool, stage: str) -> Dataset:
        return self.dataset_class(**self.dataset_kwargs, with_depth=with_depth)
