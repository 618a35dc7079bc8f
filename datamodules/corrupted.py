"""Corrupted: every (sample, corruption, severity) combination of a dataset, KITTI-C style."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from depthadapt.corruptions import check_corruption, corrupt

__all__ = ["Corrupted"]


class Corrupted(Dataset):
    """Wrap a dataset of dict samples (``image`` 3 x H x W in [0, 1]) to enumerate its corrupted versions.

    Item ``k`` is sample ``k % len(dataset)`` under corruption ``corruptions[k // (len(dataset) * S)]`` at
    severity ``severities[(k // len(dataset)) % S]`` (``S = len(severities)``): each (corruption, severity)
    condition is a contiguous block in dataset order. The item is the wrapped sample with ``image`` corrupted,
    seeded by the sample's ``index`` (its position when it has none), plus ``corruption`` (str) and
    ``severity`` (int). Samples with an ``error`` key are returned unchanged.
    """

    def __init__(self, dataset: Dataset, corruptions: list[str], severities: list[int]) -> None:
        if isinstance(corruptions, str):
            raise ValueError(f"corruptions must be a list of names, got the string {corruptions!r}")
        if not corruptions or not severities:
            raise ValueError(f"corruptions and severities must be non-empty, got {corruptions!r} and {severities!r}")
        for name in corruptions:
            check_corruption(name, 1)
        for severity in severities:
            check_corruption(corruptions[0], severity)
        self.dataset = dataset
        self.corruptions = list(corruptions)
        self.severities = list(severities)

    def __len__(self) -> int:
        return len(self.dataset) * len(self.corruptions) * len(self.severities)

    def condition(self, index: int) -> tuple[int, str, int]:
        """(wrapped-sample position, corruption, severity) of item `index`."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a Corrupted dataset of length {len(self)}")
        condition, position = divmod(index % len(self), len(self.dataset))
        corruption, severity = divmod(condition, len(self.severities))
        return position, self.corruptions[corruption], self.severities[severity]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The wrapped sample with ``image`` 3 x H x W corrupted, plus ``corruption`` and ``severity``."""
        position, corruption, severity = self.condition(index)
        sample = self.dataset[position]
        if "error" in sample:
            return sample
        seed = torch.tensor([int(sample.get("index", position))])
        image = corrupt(sample["image"][None], corruption, severity, seed=seed)[0]
        return {**sample, "image": image, "corruption": corruption, "severity": severity}
