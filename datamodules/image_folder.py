"""A folder of images (optionally with ground-truth depth) as a dataset and a LightningDataModule.

Serves zero-shot prediction (images only) and evaluation/training (images + depth). A file that
cannot be read becomes an ``error`` sample that ``collate_samples`` moves to ``batch["skipped"]``,
so one bad file never kills a long run; images lacking ground truth are counted and reported.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from datamodules.base import HorizontalFlip, list_image_files, make_sample, preview, read_split_file, sample_loader
from datamodules.ground_truth import (
    check_depth_name,
    check_depth_scale,
    depth_name_of,
    nearest_multiple,
    read_association_file,
)
from depthadapt.alignment.sparse import read_sparse_csv
from depthadapt.io import IMAGE_SUFFIXES, UnreadableFileError, read_depth, read_image
from depthadapt.metrics import DEFAULT_PROTOCOL, EvaluationProtocol

__all__ = ["ImageFolderDataModule", "ImageFolderDataset"]

log = logging.getLogger(__name__)

class ImageFolderDataset(Dataset):
    """Images under ``image_dir`` (recursive), optionally with depth maps under ``depth_dir``.

    The ground truth of ``a/b/img.jpg`` is ``depth_dir/a/b/img{depth_suffix}``, read with
    ``read_depth(path, depth_scale)``. Images without a depth file are excluded, logged and listed
    in ``missing_depth``. With ``image_size=(h, w)`` images are resized with ``cv2.INTER_AREA`` when
    shrinking both sides (no aliasing), ``cv2.INTER_LINEAR`` otherwise, and depth with nearest
    neighbour (no mixing of depths across edges). ``files`` restricts the dataset to these
    relative paths, in their order (e.g. from a split file).

    A sample is ``{"image": 3 x H x W float32 RGB in [0, 1], "name": str, "index": int}`` plus
    ``"depth"`` (H x W float32 metres, 0 invalid) and ``"valid"`` (H x W bool) with ``depth_dir``;
    a file that cannot be read gives ``{"name", "index", "error": reason}`` instead.
    """

    def __init__(
        self,
        image_dir: str | Path,
        depth_dir: str | Path | None = None,
        depth_suffix: str = ".png",
        depth_scale: float = 1.0,
        image_size: tuple[int, int] | None = None,
        files: Sequence[str] | None = None,
        depth_name: str | None = None,
        association_file: str | Path | None = None,
        size_multiple: int | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.depth_dir = None if depth_dir is None else Path(depth_dir)
        self.depth_suffix = depth_suffix
        self.depth_scale = check_depth_scale(depth_scale) if self.depth_dir is not None else depth_scale
        if depth_name is not None and association_file is not None:
            raise ValueError("give data.depth_name or data.association_file, not both")
        self.depth_name = None if depth_name is None else check_depth_name(depth_name)
        self.association = None if association_file is None else read_association_file(association_file)
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"image_size must be (height, width) with positive sides, got {image_size}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if size_multiple is not None and size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
        self.size_multiple = size_multiple
        if files is None and self.association is not None:
            files = list(self.association)

        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist or is not a folder")
        if self.depth_dir is not None and not self.depth_dir.is_dir():
            raise FileNotFoundError(f"depth folder {self.depth_dir} does not exist or is not a folder")

        if files is None:
            # A depth folder nested inside the image folder must not be listed as images.
            skip = () if self.depth_dir is None else (self.depth_dir,)
            self.files = list_image_files(self.image_dir, skip)
            if self.depth_dir is not None:
                self.files = self._without_depth_files(self.files)
            if not self.files:
                suffixes = " ".join(sorted(IMAGE_SUFFIXES))
                raise ValueError(f"no image ({suffixes}) found under {self.image_dir}")
        else:
            self.files = list(files)
            absent = [name for name in self.files if not (self.image_dir / name).is_file()]
            if absent:
                raise FileNotFoundError(
                    f"{len(absent)} listed image(s) do not exist under {self.image_dir}: {preview(absent)}"
                )
            if not self.files:
                raise ValueError(f"the file list for {self.image_dir} is empty")

        self.missing_depth: list[str] = []
        if self.depth_dir is not None:
            self.missing_depth = [name for name in self.files if not self.depth_path(name).is_file()]
            if self.missing_depth:
                log.warning(
                    "%d of %d images under %s have no depth file (%s) in %s and are excluded: %s",
                    len(self.missing_depth),
                    len(self.files),
                    self.image_dir,
                    self.depth_rule(),
                    self.depth_dir,
                    preview(self.missing_depth),
                )
                missing = set(self.missing_depth)
                self.files = [name for name in self.files if name not in missing]
            if not self.files:
                raise ValueError(
                    f"none of the images under {self.image_dir} has a depth file in {self.depth_dir} (by "
                    f"{self.depth_rule()}; e.g. {self.missing_depth[0]} -> {self.depth_path(self.missing_depth[0])}): "
                    "check depth_dir and depth_suffix, depth_name or association_file"
                )

    def __len__(self) -> int:
        """Number of images."""
        return len(self.files)

    def depth_rule(self) -> str:
        """How an image's depth file is named, for messages."""
        if self.association is not None:
            return "the association file"
        return f"depth_name {self.depth_name}" if self.depth_name is not None else f"suffix {self.depth_suffix}"

    def _without_depth_files(self, names: list[str]) -> list[str]:
        """The listed names less those that are the depth file of another listed image (depth beside images)."""
        owner = {self.depth_path(name).resolve(): name for name in names}
        kept = [name for name in names if owner.get((self.image_dir / name).resolve(), name) == name]
        if len(kept) < len(names):
            log.info("%s: %d files are the depth maps of other images, not images", self.image_dir,
                     len(names) - len(kept))
        return kept

    def depth_path(self, name: str) -> Path:
        """Path of the depth file of the image with relative path ``name`` (``depth_dir`` itself when the image does
        not fit the ``depth_name`` pattern or the association file: never a file)."""
        if self.depth_dir is None:
            raise ValueError("this dataset has no depth_dir")
        if self.association is not None:
            relative = self.association.get(name)
        elif self.depth_name is not None:
            relative = depth_name_of(self.depth_name, name)
        else:
            relative = posixpath.splitext(name)[0] + self.depth_suffix
        return self.depth_dir if relative is None else self.depth_dir / relative

    def read_ground_truth(self, name: str, height: int, width: int) -> np.ndarray:
        """H x W float32 metres (0 invalid) of image ``name`` (H x W); UnreadableFileError if unreadable.

        ``.csv`` files hold sparse points (columns x, y, metres: ``depthadapt.alignment.sparse.read_sparse_csv``).
        """
        path = self.depth_path(name)
        if path.suffix.lower() == ".csv":
            try:
                return read_sparse_csv(path, height, width).numpy() * np.float32(self.depth_scale)
            except (OSError, ValueError) as err:
                raise UnreadableFileError(path, str(err)) from None
        return read_depth(path, self.depth_scale)

    def exclude(self, names: Iterable[str]) -> int:
        """Drop the images with these relative paths (e.g. already processed); return how many."""
        names = set(names)
        before = len(self.files)
        self.files = [name for name in self.files if name not in names]
        return before - len(self.files)

    def size_of(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a stored image of this size is served at: ``image_size``, else each side at its
        nearest ``size_multiple``, else its own."""
        if self.image_size is not None:
            return self.image_size
        if self.size_multiple is not None:
            return nearest_multiple(height, self.size_multiple), nearest_multiple(width, self.size_multiple)
        return height, width

    @staticmethod
    def _resize(array: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
        return cv2.resize(array, (size[1], size[0]), interpolation=interpolation)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``: image 3 x H x W, name, index (+ depth, valid H x W), or an error sample."""
        name = self.files[index]
        try:
            image = read_image(self.image_dir / name)
            depth = None
            if self.depth_dir is not None:
                depth = self.read_ground_truth(name, *image.shape[:2])
                if depth.shape != image.shape[:2]:
                    raise UnreadableFileError(
                        self.depth_path(name),
                        f"depth is {depth.shape[0]} x {depth.shape[1]} but the image is "
                        f"{image.shape[0]} x {image.shape[1]}",
                    )
        except UnreadableFileError as err:
            log.warning("skipping %s: %s", name, err)
            return {"name": name, "index": index, "error": str(err)}

        stored = image.shape[:2]
        size = self.size_of(*stored)
        if size != stored:
            shrink = size[0] <= stored[0] and size[1] <= stored[1]
            image = self._resize(image, size, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if depth is not None:
                depth = self._resize(depth, size, cv2.INTER_NEAREST)
        sample = make_sample(image, depth, name, index)
        sample["stored_size"] = torch.tensor(stored)
        return sample


class ImageFolderDataModule(LightningDataModule):
    """One image folder (optionally with depth) for fit / validate / test / predict.

    ``split_file`` (relative image paths, one per line, ``#`` comments) restricts the folder.
    During fit the last ``val_fraction`` of the sorted images is held out for validation
    (none if 0); ``validate`` uses that split, or the whole folder when ``val_fraction`` is 0.
    Fit, validate and test need ``depth_dir``; predict reads images only, so images without
    ground truth are still predicted, unless ``predict_with_depth`` (e.g. sparse metric points for
    ``SparseAlignedDepth``). ``hflip`` randomly flips training samples. ``evaluation_protocol``: the depth range
    and crop its ground truth is evaluated with (tasks read it). Depth files are named as ``ImageFolderDataset``
    says (``depth_suffix``, ``depth_name`` or ``association_file``); ``depth_scale`` turns their stored values into
    metres and has to be set (None: an error listing the usual conventions) whenever depth is read.
    """

    def __init__(
        self,
        image_dir: str | None = None,
        depth_dir: str | None = None,
        depth_suffix: str = ".png",
        depth_scale: float | None = 1.0,
        depth_name: str | None = None,
        association_file: str | None = None,
        image_size: tuple[int, int] | None = None,
        val_fraction: float = 0.0,
        split_file: str | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        hflip: bool = False,
        predict_with_depth: bool = False,
        evaluation_protocol: EvaluationProtocol = DEFAULT_PROTOCOL,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.image_dir = image_dir
        self.depth_dir = depth_dir
        self.depth_suffix = depth_suffix
        if depth_scale is not None:
            check_depth_scale(depth_scale)
        self.depth_scale = depth_scale
        if depth_name is not None:
            check_depth_name(depth_name)
        self.depth_name = depth_name
        self.association_file = association_file
        self.image_size = None if image_size is None else tuple(image_size)
        self.val_fraction = val_fraction
        self.split_file = split_file
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.hflip = hflip
        self.predict_with_depth = predict_with_depth
        self.evaluation_protocol = evaluation_protocol
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: ImageFolderDataset | None = None
        self.predict_dataset: ImageFolderDataset | None = None

    def _dataset(self, with_depth: bool, stage: str) -> ImageFolderDataset:
        if self.image_dir is None:
            raise ValueError(f"data.image_dir is required for {stage}: set it to the folder of images")
        if with_depth and self.depth_dir is None:
            raise ValueError(
                f"{stage} needs ground-truth depth: set data.depth_dir to the folder of depth maps"
            )
        files = None
        if self.split_file is not None:
            files = read_split_file(self.split_file)
            if not files:
                raise ValueError(f"split file {self.split_file} lists no image")
        try:
            return ImageFolderDataset(
                self.image_dir,
                depth_dir=self.depth_dir if with_depth else None,
                depth_suffix=self.depth_suffix,
                depth_scale=self.depth_scale,
                depth_name=self.depth_name,
                association_file=self.association_file,
                image_size=self.image_size,
                files=files,
            )
        except FileNotFoundError as err:
            if files is None:
                raise
            raise FileNotFoundError(f"split file {self.split_file}: {err}") from err

    def _split(self) -> tuple[ImageFolderDataset, list[int], list[int]]:
        dataset = self._dataset(with_depth=True, stage="fit")
        n = len(dataset)
        n_val = max(1, round(n * self.val_fraction)) if self.val_fraction > 0 else 0
        if n_val >= n:
            raise ValueError(
                f"data.val_fraction={self.val_fraction} leaves no training image out of {n}; lower it"
            )
        return dataset, list(range(n - n_val)), list(range(n - n_val, n))

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test`` or ``predict``) once."""
        if stage == "fit" and self.train_dataset is None:
            dataset, train_idx, val_idx = self._split()
            train: Dataset = Subset(dataset, train_idx)
            self.train_dataset = HorizontalFlip(train) if self.hflip else train
            self.val_dataset = Subset(dataset, val_idx) if val_idx else None
        elif stage == "validate" and self.val_dataset is None:
            if self.val_fraction > 0:
                dataset, _, val_idx = self._split()
                self.val_dataset = Subset(dataset, val_idx)
            else:
                self.val_dataset = self._dataset(with_depth=True, stage="validate")
        elif stage == "test" and self.test_dataset is None:
            self.test_dataset = self._dataset(with_depth=True, stage="test")
        elif stage == "predict" and self.predict_dataset is None:
            self.predict_dataset = self._dataset(with_depth=self.predict_with_depth, stage="predict")

    def _loader(self, dataset: Dataset | None, stage: str, shuffle: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        return sample_loader(dataset, self.batch_size, self.num_workers, shuffle)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (see ``collate_samples``)."""
        return self._loader(self.train_dataset, "fit", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in sorted order; ``[]`` (no validation) when fitting with val_fraction 0."""
        if self.val_dataset is None and self.train_dataset is not None:
            return []
        return self._loader(self.val_dataset, "validate")

    def test_dataloader(self) -> DataLoader:
        """Test batches over the whole folder (or split file), in order."""
        return self._loader(self.test_dataset, "test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches over the whole folder (or split file), images only, in order."""
        return self._loader(self.predict_dataset, "predict")
