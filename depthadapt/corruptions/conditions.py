"""Evaluation conditions: the clean images and each corruption at one severity, seeded per sample.

The one way every evaluation under corruptions runs (WeSTAR's validation and test, pretraining scores,
benchmarks): ``EvaluationConditions(["fog", "dark"], 3)`` names ``clean``, ``fog-3``, ``dark-3`` and applies each to a
batch with the samples' own seeds, so a sample looks the same under a condition wherever it is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from depthadapt.corruptions.apply import check_corruption, corrupt

CLEAN = "clean"


class EvaluationConditions:
    """``clean`` plus ``<corruption>-<severity>`` for each of ``corruptions``."""

    def __init__(self, corruptions: Sequence[str] = (), severity: int = 3) -> None:
        for corruption in corruptions:
            check_corruption(corruption, severity)
        self.severity = severity
        self.corruptions: dict[str, str | None] = {CLEAN: None} | {f"{c}-{severity}": c for c in corruptions}

    @property
    def names(self) -> list[str]:
        """Condition names, ``clean`` first."""
        return list(self.corruptions)

    def __iter__(self) -> Iterator[str]:
        return iter(self.corruptions)

    def __len__(self) -> int:
        return len(self.corruptions)

    def apply(self, name: str, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images in [0, 1] under condition ``name``, seeded by the (B,) sample ``seeds``."""
        corruption = self.corruptions[name]
        if corruption is None:
            return images
        return corrupt(images, corruption, self.severity, seed=seeds.to(torch.long))
