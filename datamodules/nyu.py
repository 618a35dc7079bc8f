"""NYU Depth v2: the labelled ``.mat`` with the official 654-image test split, and extracted folders.

NYU is evaluated as the official evaluation does (``NYU_EIGEN``: 1e-3..10 m, Eigen crop); the datamodules state it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
from torch.utils.data import Dataset

from datamodules.base import make_sample
from datamodules.image_folder import ImageFolderDataModule
from datamodules.real import SPLITS_DIR, PairedDepthDataModule, read_split
from depthadapt.io import UnreadableFileError
from depthadapt.metrics import NYU_EIGEN, EvaluationProtocol

__all__ = ["NYU_TEST_SPLIT", "NYUv2DataModule", "NYUv2Dataset", "NYUv2FolderDataModule"]

log = logging.getLogger(__name__)

NYU_TEST_SPLIT = SPLITS_DIR / "nyu_test_654.txt"


class NYUv2Dataset(Dataset):
    """Labelled NYU Depth v2 from ``nyu_depth_v2_labeled.mat``: RGB and in-painted depth in metres.

    MATLAB v7.3 (HDF5) stores arrays transposed: ``images`` is N x 3 x W x H and ``depths``
    N x W x H in the file (W = 640, H = 480); samples are upright: image 3 x H x W, depth and valid
    H x W. ``split_file`` lists zero-based indices (default: the official 654-image test split);
    names are the zero-padded indices (``"0001"``). The HDF5 file is opened lazily in each process,
    so DataLoader workers each get their own handle.
    """

    LAYOUT = (
        "  nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5, from the NYU Depth v2 page) with datasets\n"
        "  images (N x 3 x 640 x 480 uint8) and depths (N x 640 x 480 float, metres)"
    )

    def __init__(self, mat_path: str | Path, split_file: str | Path | None = None, with_depth: bool = True) -> None:
        self.mat_path = Path(mat_path)
        if not self.mat_path.is_file():
            raise FileNotFoundError(f"NYU Depth v2 file {self.mat_path} does not exist; expected:\n{self.LAYOUT}")
        split_path = NYU_TEST_SPLIT if split_file is None else Path(split_file)
        entries = read_split(split_path, "0")
        with self._open() as file:
            count = self._check(file)
        try:
            self.indices = [int(entry) for entry in entries]
        except ValueError:
            raise ValueError(f"split file {split_path} must list integer indices, one per line") from None
        bad = [i for i in self.indices if not 0 <= i < count]
        if bad:
            raise ValueError(
                f"split file {split_path}: indices {bad[:10]} are outside 0..{count - 1} of {self.mat_path} "
                "(indices are zero-based)"
            )
        self.with_depth = with_depth
        self._file: h5py.File | None = None
        self._file_pid: int | None = None

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.mat_path, "r")
        except OSError as err:
            raise UnreadableFileError(
                self.mat_path, f"not a MATLAB v7.3 (HDF5) file ({err}); expected:\n{self.LAYOUT}"
            ) from None

    def _check(self, file: h5py.File) -> int:
        """Number of images after checking the datasets' presence, shapes and types."""
        images, depths = file.get("images"), file.get("depths")
        if not isinstance(images, h5py.Dataset) or not isinstance(depths, h5py.Dataset):
            raise UnreadableFileError(
                self.mat_path, f"datasets 'images' and 'depths' missing; expected:\n{self.LAYOUT}"
            )
        if (
            images.ndim != 4
            or images.shape[1] != 3
            or images.dtype != "uint8"
            or depths.shape != (images.shape[0], *images.shape[2:])
        ):
            raise UnreadableFileError(
                self.mat_path,
                f"images {images.shape} {images.dtype} and depths {depths.shape} do not match; "
                f"expected:\n{self.LAYOUT}",
            )
        return images.shape[0]

    def _handle(self) -> h5py.File:
        # An HDF5 handle must not cross a fork: a DataLoader worker opens its own.
        if self._file is None or self._file_pid != os.getpid():
            self._file, self._file_pid = self._open(), os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = state["_file_pid"] = None
        return state

    @property
    def files(self) -> list[str]:
        """Sample names: zero-padded indices into the ``.mat``."""
        return [f"{i:04d}" for i in self.indices]

    def exclude(self, names: Iterable[str]) -> int:
        """Drop the samples with these names (e.g. already processed); return how many."""
        names = set(names)
        before = len(self.indices)
        self.indices = [i for i in self.indices if f"{i:04d}" not in names]
        return before - len(self.indices)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``: image 3 x H x W, depth and valid H x W (upright), name, index; or an error sample."""
        i = self.indices[index]
        name = f"{i:04d}"
        try:
            file = self._handle()
            image = file["images"][i].transpose(2, 1, 0)  # 3 x W x H -> H x W x 3
            depth = file["depths"][i].T if self.with_depth else None
        except (OSError, UnreadableFileError) as err:
            log.warning("skipping %s: %s", name, err)
            return {"name": name, "index": index, "error": f"cannot read image {i} of {self.mat_path}: {err}"}
        return make_sample(image, depth, name, index)


class NYUv2DataModule(PairedDepthDataModule):
    """NYU Depth v2 labelled ``.mat`` over ``split_file`` (default: the official 654 test images).

    Evaluated with ``evaluation_protocol`` (default ``NYU_EIGEN``: 1e-3..10 m, Eigen crop).
    """

    dataset_class = NYUv2Dataset

    def __init__(
        self,
        mat_path: str,
        split_file: str | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        evaluation_protocol: EvaluationProtocol = NYU_EIGEN,
    ) -> None:
        super().__init__(batch_size, num_workers, evaluation_protocol, mat_path=mat_path, split_file=split_file)


class NYUv2FolderDataModule(ImageFolderDataModule):
    """Extracted NYU Depth v2: ``image_dir/a.png`` with ``depth_dir/a.png`` (millimetres) or ``a.npy`` (metres).

    ``depth_scale`` defaults to 0.001 for 16-bit PNG depth and 1.0 otherwise. Evaluated with ``evaluation_protocol``
    (default ``NYU_EIGEN``: 1e-3..10 m, the Eigen crop of 480 x 640 images).
    """

    def __init__(
        self,
        image_dir: str,
        depth_dir: str,
        depth_suffix: str = ".png",
        depth_scale: float | None = None,
        split_file: str | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        evaluation_protocol: EvaluationProtocol = NYU_EIGEN,
    ) -> None:
        if depth_scale is None:
            depth_scale = 0.001 if depth_suffix.lower().endswith(".png") else 1.0
        super().__init__(image_dir, depth_dir, depth_suffix, depth_scale, split_file=split_file, batch_size=batch_size,
                         num_workers=num_workers, evaluation_protocol=evaluation_protocol)
