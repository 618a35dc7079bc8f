"""Random scene layouts per family (``street``, ``room``) and ``sample_scene``, the entry point."""

from __future__ import annotations

from collections.abc import Callable

import torch

from depthadapt.synth.builder import Draws, SceneBuilder
from depthadapt.synth.layouts.room import room
from depthadapt.synth.layouts.street import street
from depthadapt.synth.scene import FAMILIES, Scene

__all__ = ["LAYOUTS", "sample_scene"]

LAYOUTS: dict[str, Callable[[SceneBuilder, Draws, int, int], Scene]] = {"street": street, "room": room}
"""The layout function of each family (``FAMILIES``)."""


def sample_scene(family: str, generator: torch.Generator, height: int, width: int) -> Scene:
    """A random ``street`` or ``room`` scene with its camera for an H x W image, drawn from ``generator``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}: choose one of {', '.join(FAMILIES)}")
    if height < 2 or width < 2:
        raise ValueError(f"image size must be at least 2 x 2, got {height} x {width}")
    return LAYOUTS[family](SceneBuilder(), Draws(generator), height, width)
