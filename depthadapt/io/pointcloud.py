"""Metric depth maps to 3D point clouds (pinhole back-projection) and binary PLY files.

Camera frame: OpenCV (x right, y down, z forward), metres; pixel centres at integer coordinates, so the
principal point of a centred camera is ((W - 1) / 2, (H - 1) / 2). Depth is z-depth (0 or non-finite invalid).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from depthadapt.io.atomic import atomic_path


def check_intrinsics(intrinsics: Sequence[float], what: str = "intrinsics") -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) as floats, or a ValueError naming ``what``: four finite numbers, fx and fy > 0 pixels."""
    values = tuple(float(v) for v in intrinsics)
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or not (values[0] > 0 and values[1] > 0):
        raise ValueError(f"{what} must be [fx, fy, cx, cy] in pixels: four finite numbers with fx, fy > 0, got "
                         f"{list(values)}")
    return values


def make_intrinsics(
    height: int,
    width: int,
    *,
    focal: float | None = None,
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels from explicit values, or from one `focal` length with the principal point centred."""
    explicit = (fx, fy, cx, cy)
    if focal is not None and any(v is not None for v in explicit):
        raise ValueError("give either focal or fx, fy, cx, cy, not both")
    if focal is not None:
        fx = fy = float(focal)
        cx, cy = (width - 1) / 2, (height - 1) / 2
    elif any(v is None for v in explicit):
        raise ValueError(f"intrinsics need focal, or all of fx, fy, cx, cy (got fx={fx}, fy={fy}, cx={cx}, cy={cy})")
    return check_intrinsics((fx, fy, cx, cy))


def unproject(depth: Tensor, intrinsics: Tensor | Sequence[float]) -> Tensor:
    """Camera-frame points of every pixel: depth (...) x H x W, intrinsics (..., 4) fx fy cx cy -> (...) x H x W x 3."""
    height, width = depth.shape[-2:]
    k = torch.as_tensor(intrinsics, dtype=depth.dtype, device=depth.device)
    if k.shape[-1] != 4:
        raise ValueError(f"intrinsics must be (fx, fy, cx, cy), got shape {tuple(k.shape)}")
    fx, fy, cx, cy = (k[..., i, None, None] for i in range(4))
    u = torch.arange(width, dtype=depth.dtype, device=depth.device)
    v = torch.arange(height, dtype=depth.dtype, device=depth.device)[:, None]
    return torch.stack(((u - cx) / fx * depth, (v - cy) / fy * depth, depth), dim=-1)


def depth_to_points(
    depth: Tensor, intrinsics: Tensor | Sequence[float], image: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """One image's valid pixels as points: depth H x W (metres) -> N x 3, row-major pixel order.

    `image` (3 x H x W float in [0, 1], or uint8) gives each point its colour: N x 3 uint8 (None without).
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be H x W (one image; unproject handles batches), got {tuple(depth.shape)}")
    check_intrinsics(torch.as_tensor(intrinsics).flatten().tolist())
    valid = torch.isfinite(depth) & (depth > 0)
    points = unproject(torch.where(valid, depth, 0.0), intrinsics)[valid]
    if image is None:
        return points, None
    if image.shape != (3, *depth.shape):
        raise ValueError(f"image must be 3 x {depth.shape[0]} x {depth.shape[1]}, got {tuple(image.shape)}")
    rgb = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return points, rgb.permute(1, 2, 0)[valid]


def write_ply(path: str | os.PathLike, points: Tensor | np.ndarray, colors: Tensor | np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY: x y z float32 (+ red green blue uint8), atomically (plyfile)."""
    from plyfile import PlyData, PlyElement

    xyz = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must be N x 3, got {xyz.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        rgb = np.asarray(colors.detach().cpu() if isinstance(colors, Tensor) else colors)
        if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
            raise ValueError(f"colors must be N x 3 uint8 like the points {xyz.shape}, got {rgb.shape} {rgb.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(xyz), dtype=fields)
    for i, name in enumerate("xyz"):
        vertices[name] = xyz[:, i]
    if colors is not None:
        for i, name in enumerate(("red", "green", "blue")):
            vertices[name] = rgb[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertices, "vertex")], text=False, byte_order="<").write(str(tmp))
    return Path(path)
