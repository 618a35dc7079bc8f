"""The procedural synthetic domains (``depthadapt.synth``) as a dataset and a LightningDataModule.

Samples are rendered on the fly, deterministically from (family, style, seed, index), so any range of
indices is a reproducible split; with ``cache_dir`` each sample is rendered once and kept as a ``.pt`` file.
Images are quantised to 8 bit like a camera's, so a cached sample equals a freshly rendered one.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.image_folder import HorizontalFlip, sample_loader
from datamodules.weak_labels import WeakLabels, check_instance_source
from depthadapt.io import atomic_path
from depthadapt.synth import FAMILIES, RENDER_VERSION, STYLES, apply_haze, render_sample

__all__ = ["DEFAULT_SIZES", "SyntheticDataModule", "SyntheticDataset"]

log = logging.getLogger(__name__)

DEFAULT_SIZES: dict[str, tuple[int, int]] = {"street": (196, 644), "room": (266, 350)}
"""(height, width) per family: KITTI-like and NYU-like aspect ratios, multiples of 14."""


def _check_names(family: str, style: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}: choose one of {', '.join(FAMILIES)}")
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}: choose one of {', '.join(STYLES)}")


def _check_range(name: str, span: Sequence[int]) -> tuple[int, int]:
    if len(span) != 2:
        raise ValueError(f"{name} must be (start, stop), got {span}")
    start, stop = int(span[0]), int(span[1])
    if not 0 <= start < stop:
        raise ValueError(f"{name} must satisfy 0 <= start < stop, got ({start}, {stop})")
    return start, stop


class SyntheticDataset(Dataset):
    """Samples ``start .. stop - 1`` of a synthetic domain at ``height`` x ``width``.

    A sample: ``image`` 3 x H x W float32 in [0, 1] (8-bit steps), ``depth`` H x W float32 metric z-depth
    (0 invalid), ``valid`` H x W bool, ``instances`` H x W int64 (0 background), ``intrinsics`` (fx, fy, cx,
    cy) float32, ``name`` ``"family/style/000012"`` and ``index`` (the global sample index, here 12).
    ``haze_beta`` > 0 adds depth-aware haze (``apply_haze``, the style's airlight colour).
    """

    def __init__(
        self,
        family: str,
        style: str,
        start: int,
        stop: int,
        height: int,
        width: int,
        seed: int = 0,
        haze_beta: float = 0.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        _check_names(family, style)
        self.start, self.stop = _check_range("the index range", (start, stop))
        if height < 2 or width < 2:
            raise ValueError(f"image size must be at least 2 x 2, got {height} x {width}")
        if haze_beta < 0:
            raise ValueError(f"haze_beta must be >= 0, got {haze_beta}")
        self.family, self.style = family, style
        self.height, self.width = int(height), int(width)
        self.seed, self.haze_beta = int(seed), float(haze_beta)
        self.cache_dir = None
        if cache_dir is not None:
            key = f"{family}-{style}-seed{seed}-{height}x{width}-haze{haze_beta:g}-v{RENDER_VERSION}"
            self.cache_dir = Path(cache_dir) / key

    def __len__(self) -> int:
        """Number of samples, ``stop - start``."""
        return self.stop - self.start

    def render(self, index: int) -> dict[str, torch.Tensor]:
        """Render global sample ``index``: image (uint8 3 x H x W), depth, instances (int16), intrinsics."""
        sample = render_sample(self.family, self.style, self.seed, index, self.height, self.width)
        image = sample["image"]
        if self.haze_beta > 0:
            airlight = STYLES[self.style].haze_colour
            image = apply_haze(image[None], sample["depth"][None], self.haze_beta, airlight)[0]
        return {
            "image": (image * 255).round().to(torch.uint8),
            "depth": sample["depth"],
            "instances": sample["instances"].to(torch.int16),
            "intrinsics": sample["intrinsics"],
        }

    def _load_or_render(self, index: int) -> dict[str, torch.Tensor]:
        if self.cache_dir is None:
            return self.render(index)
        path = self.cache_dir / f"{index:06d}.pt"
        if path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
                log.warning("re-rendering %s: the cached file is unreadable (%s)", path, err)
        stored = self.render(index)
        with atomic_path(path) as tmp:
            torch.save(stored, tmp)
        return stored

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``start + i``: image 3 x H x W, depth / valid / instances H x W, intrinsics (4,), name, index."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for a dataset of {len(self)}")
        index = self.start + i
        stored = self._load_or_render(index)
        depth = stored["depth"]
        return {
            "image": stored["image"].float() / 255.0,
            "depth": depth,
            "valid": depth > 0,
            "instances": stored["instances"].long(),
            "intrinsics": stored["intrinsics"],
            "name": f"{self.family}/{self.style}/{index:06d}",
            "index": index,
        }


class SyntheticDataModule(LightningDataModule):
    """A synthetic domain for fit / validate / test / predict (``predict_range``, by default the test range).

    ``height`` / ``width`` default to 196 x 644 for ``street`` and 266 x 350 for ``room``. Index ranges are
    [start, stop); the training range may not overlap the validation or test range. ``hflip`` randomly
    flips training samples. ``cache_dir`` keeps rendered samples on disk (``SyntheticDataset``).
    Training samples carry weak labels (``WeakLabels``): ``instances`` from ``instance_source`` (the
    scenes' own ``ground_truth`` ids by default, or ``sam2`` masks cached in ``mask_cache_dir``, or
    ``superpixels``) and ``ordinal`` pairs from ``ordinal_file``.
    """

    def __init__(
        self,
        family: str = "street",
        style: str = "source",
        height: int | None = None,
        width: int | None = None,
        train_range: tuple[int, int] = (0, 2000),
        val_range: tuple[int, int] = (2000, 2100),
        test_range: tuple[int, int] = (2100, 2300),
        predict_range: tuple[int, int] | None = None,
        seed: int = 0,
        haze_beta: float = 0.0,
        cache_dir: str | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        hflip: bool = False,
        instance_source: str | None = "ground_truth",
        mask_cache_dir: str | None = None,
        superpixels: int = 64,
        ordinal_file: str | None = None,
    ) -> None:
        super().__init__()
        _check_names(family, style)
        check_instance_source(instance_source, mask_cache_dir)
        self.train_range = _check_range("data.train_range", train_range)
        self.val_range = _check_range("data.val_range", val_range)
        self.test_range = _check_range("data.test_range", test_range)
        self.predict_range = self.test_range
        if predict_range is not None:
            self.predict_range = _check_range("data.predict_range", predict_range)
        for name, other in (("data.val_range", self.val_range), ("data.test_range", self.test_range)):
            if self.train_range[0] < other[1] and other[0] < self.train_range[1]:
                raise ValueError(
                    f"data.train_range {self.train_range} overlaps {name} {other}: evaluation samples would "
                    "be trained on; choose disjoint index ranges"
                )
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if haze_beta < 0:
            raise ValueError(f"data.haze_beta must be >= 0, got {haze_beta}")
        default_h, default_w = DEFAULT_SIZES[family]
        self.family, self.style = family, style
        self.height = default_h if height is None else height
        self.width = default_w if width is None else width
        self.seed, self.haze_beta, self.cache_dir = seed, haze_beta, cache_dir
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.weak_labels = dict(
            instance_source=instance_source, mask_cache_dir=mask_cache_dir, superpixels=superpixels,
            ordinal_file=ordinal_file,
        )
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, span: tuple[int, int]) -> SyntheticDataset:
        """The samples of index range ``span`` with this module's settings."""
        return SyntheticDataset(self.family, self.style, *span, self.height, self.width, self.seed,
                                self.haze_beta, self.cache_dir)

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "fit":
            train = WeakLabels(self.dataset(self.train_range), **self.weak_labels)
            self.datasets["train"] = HorizontalFlip(train) if self.hflip else train
        if stage in ("fit", "validate"):
            self.datasets["val"] = self.dataset(self.val_range)
        if stage == "test":
            self.datasets["test"] = self.dataset(self.test_range)
        if stage == "predict":
            self.datasets["predict"] = self.dataset(self.predict_range)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() for the {split} split before asking for its dataloader")
        return sample_loader(self.datasets[split], self.batch_size, self.num_workers, shuffle)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (see ``collate_samples``)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in index order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches in index order."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The prediction range's batches (default: the test range) in index order."""
        return self._loader("predict")
