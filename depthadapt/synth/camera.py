"""Pinhole cameras. World frame: x right, y up, z forward, metres; camera frame: OpenCV (x right, y down, z
forward). Rays have unnormalised directions whose camera-z component is 1, so the ray parameter of a hit *is* its
z-depth (distance along the optical axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Camera", "dot3"]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world ``position``, ``yaw`` about +y (0 looks along +z, > 0 turns right), ``pitch``
    (> 0 looks down), intrinsics in pixels (pixel centres at integer coordinates) and the image size."""

    position: tuple[float, float, float]
    yaw: float
    pitch: float
    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    def axes(self) -> tuple[tuple[float, float, float], ...]:
        """World directions of the camera's right, down and forward axes."""
        cy, sy, cp, sp = math.cos(self.yaw), math.sin(self.yaw), math.cos(self.pitch), math.sin(self.pitch)
        forward = (sy * cp, -sp, cy * cp)
        right = (cy, 0.0, -sy)
        down = (-sy * sp, -cp, -cy * sp)  # right x forward
        return right, down, forward

    def rays(self) -> Tensor:
        """World ray directions 3 x H x W, scaled so that their camera-z component is 1."""
        a = (torch.arange(self.width, dtype=torch.float32) - self.cx) / self.fx
        b = (torch.arange(self.height, dtype=torch.float32) - self.cy) / self.fy
        right, down, forward = self.axes()
        return torch.stack(
            [right[i] * a[None, :] + down[i] * b[:, None] + forward[i] for i in range(3)]
        )

    def to_camera(self, points: Tensor) -> Tensor:
        """Camera-frame coordinates (..., 3) of world points (..., 3)."""
        rel = points - torch.tensor(self.position)
        return torch.stack([dot3(rel, axis) for axis in self.axes()], dim=-1)

    @property
    def intrinsics(self) -> Tensor:
        """(fx, fy, cx, cy) float32 (4,)."""
        return torch.tensor([self.fx, self.fy, self.cx, self.cy], dtype=torch.float32)


def dot3(v: Tensor, axis: tuple[float, float, float]) -> Tensor:
    return v[..., 0] * axis[0] + v[..., 1] * axis[1] + v[..., 2] * axis[2]
