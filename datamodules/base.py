"""What every dataset and datamodule shares: the sample protocol, file listing, flips, collate and loaders.

Per-dataset files (``image_folder.py``, ``kitti.py``, ``synthetic.py`` ...) only read their formats into samples
of this protocol; everything generic lives here.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from depthadapt.io import list_image_files

__all__ = [
    "SAMPLE_KEYS",
    "EpochShuffle",
    "HorizontalFlip",
    "SampleDataset",
    "SizeGroupedBatches",
    "collate_samples",
    "list_image_files",  # re-exported: the listing lives in the core (the annotation tool uses it too)
    "make_sample",
    "preview",
    "read_split_file",
    "sample_loader",
]

log = logging.getLogger(__name__)

SAMPLE_KEYS: dict[str, str] = {
    "image": "3 x H x W float32 RGB in [0, 1]",
    "name": "relative path of the sample (its identity: outputs, caches and weak labels are keyed by it)",
    "index": "int, the sample's index (seeds per-sample randomness such as corruptions)",
    "depth": "H x W float32 metres, 0 invalid (labelled datasets)",
    "valid": "H x W bool (with depth)",
    "instances": "H x W int64 instance ids, 0 background (weak labels)",
    "ordinal": "P x 5 float (y1, x1, y2, x2, label), padding rows y1 = -1 (weak labels)",
    "intrinsics": "(4,) float32 fx, fy, cx, cy in pixels (datasets that know them)",
    "stored_size": "(2,) int64 height, width of the image file before any resize (labels' pixels refer to it)",
    "error": "why the sample could not be read (then only name and index are present)",
}
"""The keys a sample dict may hold, and what each is."""


@runtime_checkable
class SampleDataset(Protocol):
    """A map-style dataset of sample dicts (``SAMPLE_KEYS``) whose samples are named by ``files``."""

    files: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


_SHOWN = 10  # how many names a message lists before it only counts


def preview(names: Sequence[str]) -> str:
    """The first names of a list, comma-separated, with a count of the rest."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def read_split_file(path: str | Path) -> list[str]:
    """Relative image paths listed in a text file, one per line; blank lines and ``#`` lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.removeprefix("./"))
    return names


def make_sample(image: np.ndarray, depth: np.ndarray | None, name: str, index: int) -> dict[str, Any]:
    """Sample dict from an H x W x 3 uint8 RGB image and H x W depth: image 3 x H x W in [0, 1], depth, valid."""
    sample: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0),
        "name": name,
        "index": index,
    }
    if depth is not None:
        depth = np.array(depth, dtype=np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        sample["depth"] = torch.from_numpy(depth)
        sample["valid"] = sample["depth"] > 0
    return sample


def _flip_intrinsics(intrinsics: torch.Tensor, width: int) -> torch.Tensor:
    flipped = intrinsics.clone()
    flipped[2] = width - 1 - flipped[2]
    return flipped


def _flip_pairs(pairs: torch.Tensor, width: int) -> torch.Tensor:
    flipped = pairs.clone()
    real = flipped[:, 0] >= 0
    flipped[real, 1] = width - 1 - flipped[real, 1]
    flipped[real, 3] = width - 1 - flipped[real, 3]
    return flipped


_PIXEL_KEYS = ("image", "depth", "valid", "instances")
_COORDINATE_FLIPS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "intrinsics": _flip_intrinsics,
    "ordinal": _flip_pairs,
}


class HorizontalFlip(Dataset):
    """Flip samples left-right with chance ``p``: the pixel maps of ``SAMPLE_KEYS`` and the coordinates that refer
    to columns (the principal point of ``intrinsics``, the pairs of ``ordinal``); error samples pass unchanged.

    The coin of a sample is seeded by (``seed``, sample index, epoch), so flips are the same in every run, every
    worker layout and after a resume. ``EpochShuffle`` passes the epoch in the key (``epoch * len + index``);
    a plain index is epoch 0. ``seed`` defaults to ``torch.initial_seed()`` (the config's ``seed_everything``).
    """

    def __init__(self, dataset: Dataset, p: float = 0.5, seed: int | None = None) -> None:
        self.dataset = dataset
        self.p = p
        self.seed = torch.initial_seed() if seed is None else seed

    def __len__(self) -> int:
        """Length of the wrapped dataset."""
        return len(self.dataset)

    def flips(self, index: int, epoch: int = 0) -> bool:
        """True when sample ``index`` is flipped in ``epoch``."""
        generator = torch.Generator().manual_seed(_mix(self.seed, index, epoch))
        return torch.rand((), generator=generator).item() < self.p

    def __getitem__(self, key: int) -> dict[str, Any]:
        """Sample ``key % len`` of the wrapped dataset, flipped at random (epoch ``key // len``)."""
        epoch, index = divmod(int(key), len(self))
        sample = self.dataset[index]
        if "error" in sample or not self.flips(index, epoch):
            return sample
        width = sample["image"].shape[-1]
        flipped = {k: v.flip(-1) if k in _PIXEL_KEYS else v for k, v in sample.items()}
        for name, flip in _COORDINATE_FLIPS.items():
            if name in flipped:
                flipped[name] = flip(flipped[name], width)
        return flipped


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    seed = 0x9E3779B97F4A7C15
    for value in values:
        seed = (seed ^ (int(value) & 0xFFFF_FFFF_FFFF_FFFF)) * 0x100000001B3 % 2**64
    return seed & 0x7FFF_FFFF_FFFF_FFFF


class EpochShuffle(Sampler[int]):
    """A random order per epoch, seeded by (``seed``, epoch): the same in every run and after a resume.

    Lightning calls ``set_epoch`` at the start of every training epoch. With ``epoch_keys`` the sampler yields
    ``epoch * size + index`` so that epoch-aware wrappers (``HorizontalFlip``) seed their randomness by epoch.
    """

    def __init__(self, size: int, seed: int, epoch_keys: bool = False) -> None:
        self.size, self.seed, self.epoch_keys = size, seed, epoch_keys
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)
        offset = self.epoch * self.size if self.epoch_keys else 0
        return iter((order + offset).tolist())


class SizeGroupedBatches(Sampler[list[int]]):
    """Batches of up to ``batch_size`` keys of ``sampler`` whose samples lie in one group: consecutive index spans of
    the dataset of lengths ``group_sizes`` (a ``ConcatDataset``'s parts, one image size each).

    Each group's keys are batched in the sampler's order, a batch is yielded as soon as it is full and the groups'
    last, partial batches at the end (with one group: torch's ``BatchSampler``). Keys may carry the epoch
    (``EpochShuffle``'s ``epoch_keys``): the group is that of ``key % len(dataset)``. Lightning sets the epoch on
    ``self.sampler``.
    """

    def __init__(self, sampler: Iterable[int], group_sizes: Sequence[int], batch_size: int) -> None:
        if batch_size < 1 or not group_sizes or min(group_sizes) < 1:
            raise ValueError(f"need batch_size >= 1 and non-empty groups, got {batch_size} and {list(group_sizes)}")
        self.sampler, self.group_sizes, self.batch_size = sampler, list(group_sizes), batch_size
        self.ends = list(itertools.accumulate(self.group_sizes))

    def __len__(self) -> int:
        return sum(math.ceil(size / self.batch_size) for size in self.group_sizes)

    def __iter__(self) -> Iterator[list[int]]:
        pending: list[list[int]] = [[] for _ in self.group_sizes]
        for key in self.sampler:
            group = pending[bisect.bisect_right(self.ends, key % self.ends[-1])]
            group.append(key)
            if len(group) == self.batch_size:
                yield group.copy()
                group.clear()
        yield from (group for group in pending if group)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: tensors (image B x 3 x H x W, depth / valid / instances B x H x W,
    intrinsics B x 4) stacked, ``index`` a (B,) tensor, other values (name, corruption, ...) as lists.

    Failed samples go to ``batch["skipped"] = [(name, error), ...]`` (always present); a batch
    where every sample failed has only ``skipped`` and ``name=[]``.
    """
    skipped = [(s["name"], s["error"]) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    if not good:
        return {"skipped": skipped, "name": []}
    sizes = {tuple(s["image"].shape[-2:]) for s in good}
    if len(sizes) > 1:
        raise ValueError(
            f"images in one batch must share a size, got {sorted(sizes)} "
            f"({', '.join(s['name'] for s in good)}): use batch_size 1 or set image_size"
        )
    batch: dict[str, Any] = {"skipped": skipped}
    for key, value in good[0].items():
        values = [s[key] for s in good]
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack(values)
        elif key == "index":
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch


def sample_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False,
    group_sizes: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader of dict samples batched by ``collate_samples`` (workers kept alive across epochs).

    Shuffling is ``EpochShuffle`` seeded by ``torch.initial_seed()`` (the config's ``seed_everything``), so the
    data order depends on the seed and the epoch only. ``group_sizes`` (consecutive spans of one image size
    each) makes every batch come from one span (``SizeGroupedBatches``).
    """
    sampler = None
    if shuffle:
        sampler = EpochShuffle(len(dataset), torch.initial_seed(), epoch_keys=isinstance(dataset, HorizontalFlip))
    loader = dict(num_workers=num_workers, collate_fn=collate_samples, persistent_workers=num_workers > 0)
    if group_sizes is not None and len(group_sizes) > 1:
        order = SequentialSampler(dataset) if sampler is None else sampler
        batches = SizeGroupedBatches(order, group_sizes, batch_size)
        return DataLoader(dataset, batch_sampler=batches, **loader)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader)
