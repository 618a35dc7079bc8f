"""The procedural synthetic domains (``depthadapt.synth``) as a dataset and a LightningDataModule.

Samples are rendered on the fly, deterministically from (family, style, seed, index), so any range of
indices is a reproducible split; with ``cache_dir`` each sample is rendered once and kept as a ``.pt`` file.
Images are quantised to 8 bit like a camera's, so a cached sample equals a freshly rendered one. ``style``
``random`` draws a randomised style per sample, and ``family`` may list both families (the foundation-like
model's training set); ``Augmented`` adds photometric and corruption-style augmentation to the training samples.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from lightning import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from datamodules.base import HorizontalFlip, sample_loader
from datamodules.weak_labels import WeakLabels, WeakLabelSources
from depthadapt.augmentation import PhotometricAugmentation, check_corruption_draw, random_corruption
from depthadapt.io import atomic_path
from depthadapt.metrics import EvaluationProtocol
from depthadapt.synth import FAMILIES, RENDER_VERSION, STYLE_NAMES, render_sample
from depthadapt.synth.seeds import sample_seed

__all__ = ["DEFAULT_SIZES", "Augmented", "SyntheticDataModule", "SyntheticDataset", "synthetic_datamodule"]

log = logging.getLogger(__name__)

DEFAULT_SIZES: dict[str, tuple[int, int]] = {"street": (196, 644), "room": (266, 350)}
"""(height, width) per family: KITTI-like and NYU-like aspect ratios, multiples of 14."""

DATA_CORRUPTION_NAMES = ("data.corruption_p", "data.train_corruptions")
SCENE_INSTANCES = WeakLabelSources(instance_source="ground_truth")  # the scenes' own object ids, no ordinal pairs


def _check_names(family: str, style: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}: choose one of {', '.join(FAMILIES)}")
    if style not in STYLE_NAMES:
        raise ValueError(f"unknown synthetic style {style!r}: choose one of {', '.join(STYLE_NAMES)}")


def _per_family(name: str, value: int | list[int] | None, families: list[str], k: int, default: int) -> int:
    """Family ``k``'s value of ``name``: one value for all, or a list of one per family."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if len(value) != len(families):
        raise ValueError(f"{name} must be one value or one per family ({', '.join(families)}), got {list(value)}")
    return int(value[k])


def _check_ground_mirrors(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1] (the chance of mirror patches per sample), "
                         f"got {value}")


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
    ``haze_beta`` > 0 adds depth-aware haze (``apply_haze``, the style's airlight colour) on top of the style's own.
    ``ground_mirrors`` is the chance that a sample has mirror patches on its ground (puddles, polished floor) that
    show the scene mirrored while the depth stays the ground's (``depthadapt.synth.render_scene``); 0: none.
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
        ground_mirrors: float = 0.0,
    ) -> None:
        _check_names(family, style)
        self.start, self.stop = _check_range("the index range", (start, stop))
        if height < 2 or width < 2:
            raise ValueError(f"image size must be at least 2 x 2, got {height} x {width}")
        if haze_beta < 0:
            raise ValueError(f"haze_beta must be >= 0, got {haze_beta}")
        _check_ground_mirrors("ground_mirrors", ground_mirrors)
        self.family, self.style = family, style
        self.height, self.width = int(height), int(width)
        self.seed, self.haze_beta, self.ground_mirrors = int(seed), float(haze_beta), float(ground_mirrors)
        self.cache_dir = None
        if cache_dir is not None:
            mirrors = f"-mirrors{ground_mirrors:g}" if ground_mirrors else ""  # earlier caches keep their names
            key = f"{family}-{style}-seed{seed}-{height}x{width}-haze{haze_beta:g}{mirrors}-v{RENDER_VERSION}"
            self.cache_dir = Path(cache_dir) / key

    def __len__(self) -> int:
        """Number of samples, ``stop - start``."""
        return self.stop - self.start

    def render(self, index: int) -> dict[str, torch.Tensor]:
        """Render global sample ``index``: image (uint8 3 x H x W), depth, instances (int16), intrinsics."""
        sample = render_sample(self.family, self.style, self.seed, index, self.height, self.width,
                               self.haze_beta, self.ground_mirrors)
        image = sample["image"]
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


class Augmented(Dataset):
    """Photometric and corruption-style augmentation of the images of ``dataset`` (for training), per sample.

    ``photometric``: arguments of ``PhotometricAugmentation`` (colour jitter, grayscale, blur, noise); then,
    with chance ``corruption_p``, one of ``corruptions`` (``depthadapt.corruptions`` names) at a severity from 1
    to ``max_severity``. The draws of sample ``index`` come from (``seed``, index) only: the same in every run,
    worker layout and resume. Error samples pass unchanged.
    """

    def __init__(
        self,
        dataset: Dataset,
        photometric: dict[str, Any] | None = None,
        corruptions: Sequence[str] = (),
        corruption_p: float = 0.0,
        max_severity: int = 3,
        seed: int = 0,
    ) -> None:
        check_corruption_draw(corruptions, corruption_p, max_severity, DATA_CORRUPTION_NAMES)
        self.dataset = dataset
        self.photometric = PhotometricAugmentation(**(photometric or {}))
        self.corruptions, self.corruption_p, self.max_severity = tuple(corruptions), corruption_p, max_severity
        self.seed = seed

    def __len__(self) -> int:
        """Length of the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index`` of the wrapped dataset with its image augmented (3 x H x W in [0, 1])."""
        sample = self.dataset[index]
        if "error" in sample:
            return sample
        generator = torch.Generator().manual_seed(sample_seed("augment", "train", self.seed, index))
        image = sample["image"][None]
        with torch.random.fork_rng(devices=[]):  # kornia draws from the global generator
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            image = self.photometric(image)
        if self.corruption_p > 0:
            draws = torch.rand(1, 3, generator=generator)
            image = random_corruption(image, self.corruptions, self.corruption_p, self.max_severity, draws,
                                      torch.tensor([index]))
        return {**sample, "image": image[0].clamp(0.0, 1.0)}


class SyntheticDataModule(LightningDataModule):
    """A synthetic domain for fit / validate / test / predict (``predict_range``, by default the test range).

    ``family`` is ``street``, ``room`` or a list of both (every range then holds that range of each family);
    ``style`` is a named style or ``random`` (domain randomisation).
    ``height`` / ``width`` default to 196 x 644 for ``street`` and 266 x 350 for ``room``; with several families,
    each is one value or a list of one per family (then every batch holds one family: ``SizeGroupedBatches``).
    Index ranges are [start, stop); the training range may not overlap the validation or test range. ``hflip``
    randomly flips training samples; ``photometric`` (``PhotometricAugmentation`` arguments) and ``train_corruptions``
    (drawn with chance ``corruption_p`` at severity 1..``corruption_max_severity``) augment them (``Augmented``).
    ``cache_dir`` keeps rendered samples on disk (``SyntheticDataset``). ``ground_mirrors``: the chance that a sample
    has mirror patches on its ground (``SyntheticDataset``; a failure mode of relative teachers), 0 by default.
    Training samples carry the weak labels ``weak_labels`` (``WeakLabelSources``) says: ``instances`` from its
    ``instance_source`` (the scenes' own ``ground_truth`` ids by default, or ``sam2`` masks cached in
    ``mask_cache_dir``, or ``superpixels``) and ``ordinal`` pairs, from ``ordinal_file`` (people's labels) or drawn
    from the ground truth by the simulated annotator ``ordinal_simulation`` (``depthadapt.westar.OrdinalSimulation``).
    """

    def __init__(
        self,
        family: str | list[str] = "street",
        style: str = "source",
        height: int | list[int] | None = None,
        width: int | list[int] | None = None,
        train_range: tuple[int, int] = (0, 2000),
        val_range: tuple[int, int] = (2000, 2100),
        test_range: tuple[int, int] = (2100, 2300),
        predict_range: tuple[int, int] | None = None,
        seed: int = 0,
        haze_beta: float = 0.0,
        cache_dir: str | None = None,
        ground_mirrors: float = 0.0,
        batch_size: int = 4,
        num_workers: int = 0,
        hflip: bool = False,
        photometric: dict[str, Any] | None = None,
        train_corruptions: list[str] | None = None,
        corruption_p: float = 0.0,
        corruption_max_severity: int = 3,
        weak_labels: WeakLabelSources = SCENE_INSTANCES,
    ) -> None:
        super().__init__()
        self.evaluation_protocol = EvaluationProtocol()  # 1e-3..80 m, no crop: the scenes' whole range
        self.families = [family] if isinstance(family, str) else list(family)
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"data.family must be a family or a list of distinct families, got {family!r}")
        for name in self.families:
            _check_names(name, style)
        weak_labels.check_masks()
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
        _check_ground_mirrors("data.ground_mirrors", ground_mirrors)
        self.family, self.style = family, style
        self.sizes = [(_per_family("data.height", height, self.families, k, DEFAULT_SIZES[name][0]),
                       _per_family("data.width", width, self.families, k, DEFAULT_SIZES[name][1]))
                      for k, name in enumerate(self.families)]
        self.seed, self.haze_beta, self.cache_dir, self.ground_mirrors = seed, haze_beta, cache_dir, ground_mirrors
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.augmentation = dict(photometric=photometric, corruptions=train_corruptions or (),
                                 corruption_p=corruption_p, max_severity=corruption_max_severity, seed=seed)
        check_corruption_draw(self.augmentation["corruptions"], corruption_p, corruption_max_severity,
                              DATA_CORRUPTION_NAMES)
        self.weak_labels = weak_labels
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, span: tuple[int, int]) -> Dataset:
        """The samples of index range ``span`` with this module's settings (of each family, in order)."""
        parts = [SyntheticDataset(family, self.style, *span, *size, self.seed, self.haze_beta, self.cache_dir,
                                  self.ground_mirrors)
                 for family, size in zip(self.families, self.sizes, strict=True)]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "fit":
            train: Dataset = WeakLabels(self.dataset(self.train_range), self.weak_labels)
            if self.augmentation["photometric"] or self.augmentation["corruption_p"] > 0:
                train = Augmented(train, **self.augmentation)
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
        start, stop = {"train": self.train_range, "val": self.val_range, "test": self.test_range,
                       "predict": self.predict_range}[split]
        group_sizes = [stop - start] * len(self.families) if len(set(self.sizes)) > 1 else None
        return sample_loader(self.datasets[split], self.batch_size, self.num_workers, shuffle, group_sizes)

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


def synthetic_datamodule(init_args: dict[str, Any]) -> SyntheticDataModule:
    """A ``SyntheticDataModule`` from a config's ``init_args`` (a data fragment's), typed and checked as the CLI
    does: nested settings (``weak_labels``) become their dataclasses, an unknown key is an error naming it."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SyntheticDataModule, "data")
    return parser.instantiate(parser.parse_object({"data": init_args})).data
