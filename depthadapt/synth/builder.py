"""Building scenes: a collector of primitives with their surface and object id, and the random draws of a layout."""

from __future__ import annotations

import math

import torch

from depthadapt.synth.camera import Camera
from depthadapt.synth.scene import Scene, Surface

__all__ = ["Draws", "SceneBuilder", "offset"]


class SceneBuilder:
    """Collects primitives (and their surface and instance id) and builds a ``Scene``."""

    def __init__(self) -> None:
        self._prims: dict[str, list[tuple[list[float], int, int]]] = {
            "plane": [], "box": [], "cylinder": [], "sphere": []
        }
        self._instances = 0

    def new_instance(self) -> int:
        """A fresh object id (1, 2, ...)."""
        self._instances += 1
        return self._instances

    def plane(self, normal: tuple[float, float, float], offset: float, surface: Surface) -> None:
        """Background plane n . x = offset; ``normal`` (unit) faces the camera."""
        self._prims["plane"].append(([*normal, offset], int(surface), 0))

    def box(self, centre: tuple[float, float, float], half: tuple[float, float, float], yaw: float,
            surface: Surface, instance: int) -> None:
        """Box with these centre, half sizes (its local x, y, z) and yaw about +y."""
        self._prims["box"].append(([*centre, *half, yaw], int(surface), instance))

    def cylinder(self, x: float, z: float, radius: float, y0: float, y1: float, surface: Surface,
                 instance: int) -> None:
        """Vertical cylinder with a top cap."""
        self._prims["cylinder"].append(([x, z, radius, y0, y1], int(surface), instance))

    def sphere(self, centre: tuple[float, float, float], radius: float, surface: Surface, instance: int) -> None:
        """Sphere."""
        self._prims["sphere"].append(([*centre, radius], int(surface), instance))

    def build(self, family: str, camera: Camera, min_depth: float, max_depth: float, **extra) -> Scene:
        """The scene of everything added so far (``extra``: sun_azimuth, lamp, layout)."""
        widths = {"plane": 4, "box": 7, "cylinder": 5, "sphere": 4}
        tables = {
            k: torch.tensor([p for p, _, _ in v], dtype=torch.float32).reshape(-1, widths[k])
            for k, v in self._prims.items()
        }
        order = [e for k in ("plane", "box", "cylinder", "sphere") for e in self._prims[k]]
        return Scene(
            family, camera, tables["plane"], tables["box"], tables["cylinder"], tables["sphere"],
            torch.tensor([s for _, s, _ in order], dtype=torch.long),
            torch.tensor([i for _, _, i in order], dtype=torch.long),
            min_depth, max_depth, **extra,
        )


class Draws:
    """Scalar draws from a ``torch.Generator`` (never the global RNG)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.g).item()

    def chance(self, p: float) -> bool:
        return torch.rand((), generator=self.g).item() < p

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return int(torch.randint(lo, hi + 1, (), generator=self.g))

    def sign(self) -> float:
        return 1.0 if self.chance(0.5) else -1.0


def offset(x: float, z: float, yaw: float, along: float, across: float = 0.0) -> tuple[float, float]:
    """(x, z) moved by ``along`` the local z axis and ``across`` the local x axis of a yawed object."""
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * across + s * along, z - s * across + c * along
