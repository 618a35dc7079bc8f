"""Ray-primitive intersection (planes, yawed boxes, vertical cylinders, spheres) and surface frames (normals,
texture coordinates in metres, tangents) of the hit points, vectorised over rays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FRAMES", "INF", "INTERSECT", "Hit", "keep_nearest", "norm3", "plane_t", "project_down"]

_T_MIN = 1e-3  # hits closer than this along a ray are ignored (self-intersection of shadow rays)
INF = float("inf")


@dataclass
class Hit:
    """What the camera rays hit: per-pixel maps and, for the M hit pixels (``pixels``, flat indices), points,
    normals, texture coordinates (metres on the surface) and their footprints (metres per pixel along u, v)."""

    depth: Tensor  # H x W z-depth, inf where nothing was hit
    prim: Tensor  # H x W int64 primitive index, -1 where nothing was hit
    rays: Tensor  # 3 x H x W ray directions (camera-z component 1)
    pixels: Tensor  # (M,) int64
    points: Tensor  # (M, 3)
    normals: Tensor  # (M, 3), unit, facing the camera
    uv: Tensor  # (M, 2)
    footprint: Tensor  # (M, 2)


def keep_nearest(depth: Tensor, prim: Tensor, t: Tensor, k: int) -> None:
    """z-buffer update in place: where ``t`` is nearer than ``depth``, take it and primitive ``k``."""
    prim.masked_fill_(t < depth, k)
    torch.minimum(depth, t, out=depth)


def norm3(v: Tensor) -> Tensor:
    """Euclidean norm over the last axis of (..., 3) (much faster than linalg.vector_norm for 3 elements)."""
    return (v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2]).sqrt()


def project_down(points: Tensor, to_light: Tensor) -> Tensor:
    """Points (..., 3) moved along ``to_light`` onto the plane y = 0 (lights are above every occluder)."""
    ly = to_light[..., 1:2].clamp_min(1e-6)
    return points - points[..., 1:2] / ly * to_light


def _safe(d: Tensor) -> Tensor:
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def plane_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    nx, ny, nz, offset = p
    nd = nx * dx + ny * dy + nz * dz
    t = (offset - (nx * ox + ny * oy + nz * oz)) / _safe(nd)
    return torch.where((nd < 0) & (t > _T_MIN), t, INF)


def _box_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    cx, cy, cz, hx, hy, hz, yaw = p
    c, s = math.cos(yaw), math.sin(yaw)
    rx, rz = ox - cx, oz - cz
    local = ((c * rx - s * rz, c * dx - s * dz, hx), (oy - cy, dy, hy), (s * rx + c * rz, s * dx + c * dz, hz))
    near = far = None
    for lo, ld, h in local:
        inv = 1.0 / _safe(ld)
        t1, t2 = (-h - lo) * inv, (h - lo) * inv
        a, b = torch.minimum(t1, t2), torch.maximum(t1, t2)
        near = a if near is None else torch.maximum(near, a)
        far = b if far is None else torch.minimum(far, b)
    return torch.where((near <= far) & (near > _T_MIN), near, INF)


def _cylinder_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    x, z, r, y0, y1 = p
    rx, rz = ox - x, oz - z
    a = (dx * dx + dz * dz).clamp_min(1e-12)
    b = rx * dx + rz * dz
    disc = b * b - a * (rx * rx + rz * rz - r * r)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    y = oy + t * dy
    t = torch.where((disc >= 0) & (t > _T_MIN) & (y >= y0) & (y <= y1), t, INF)
    tc = (y1 - oy) / _safe(dy)
    px, pz = rx + tc * dx, rz + tc * dz
    cap = (dy < 0) & (tc > _T_MIN) & (px * px + pz * pz <= r * r) & (tc < t)
    return torch.where(cap, tc, t)


def _sphere_t(p: list[float], ox, oy, oz, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    x, y, z, r = p
    rx, ry, rz = ox - x, oy - y, oz - z
    a = dx * dx + dy * dy + dz * dz
    b = rx * dx + ry * dy + rz * dz
    disc = b * b - a * (rx * rx + ry * ry + rz * rz - r * r)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc >= 0) & (t > _T_MIN), t, INF)


INTERSECT = {"box": _box_t, "cylinder": _cylinder_t, "sphere": _sphere_t}

_AXES = torch.eye(3)


def _axis_frames(local: Tensor, axis: Tensor, sign: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Local normal, uv and tangents of axis-aligned faces: ``local`` (M, 3) offsets from the face's minimum
    corner; faces across x use (z, y), across y (x, z), across z (x, y) as (u, v)."""
    u_axis = torch.tensor([2, 0, 0])[axis]
    v_axis = torch.tensor([1, 2, 1])[axis]
    normal = _AXES[axis] * sign[:, None]
    uv = torch.stack([local.gather(1, u_axis[:, None])[:, 0], local.gather(1, v_axis[:, None])[:, 0]], 1)
    return normal, uv, torch.stack([_AXES[u_axis], _AXES[v_axis]], 1)


def plane_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    normal = p[:, :3]
    axis = normal.abs().argmax(1)
    _, uv, tangents = _axis_frames(points, axis, torch.ones(len(p)))
    return normal, uv, tangents


def box_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    c, s = torch.cos(p[:, 6]), torch.sin(p[:, 6])
    rel = points - p[:, :3]
    local = torch.stack([c * rel[:, 0] - s * rel[:, 2], rel[:, 1], s * rel[:, 0] + c * rel[:, 2]], 1)
    half = p[:, 3:6]
    axis = (local.abs() / half).argmax(1)
    sign = local.gather(1, axis[:, None])[:, 0].sign()
    normal, uv, tangents = _axis_frames(local + half, axis, sign)

    def to_world(v: Tensor) -> Tensor:
        cc, ss = c.view(-1, *[1] * (v.dim() - 2)), s.view(-1, *[1] * (v.dim() - 2))
        return torch.stack([cc * v[..., 0] + ss * v[..., 2], v[..., 1], -ss * v[..., 0] + cc * v[..., 2]], -1)

    return to_world(normal), uv, to_world(tangents)


def _round_frames(radial: Tensor, r: Tensor, height: Tensor, normal: Tensor) -> tuple[Tensor, Tensor]:
    """uv (arc length, height) and tangents of surfaces around a vertical axis; ``radial`` (M, 2) is (x, z)."""
    u = torch.atan2(radial[:, 1], radial[:, 0]) * r
    horizontal = torch.stack([-radial[:, 1], torch.zeros_like(u), radial[:, 0]], 1)
    horizontal = horizontal / norm3(horizontal).clamp_min(1e-9)[:, None]
    vertical = torch.cross(normal, horizontal, dim=1)
    return torch.stack([u, height], 1), torch.stack([horizontal, vertical], 1)


def cylinder_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    radial = torch.stack([points[:, 0] - p[:, 0], points[:, 2] - p[:, 1]], 1)
    r = p[:, 2]
    cap = (points[:, 1] >= p[:, 4] - 1e-4) & (radial[:, 0] ** 2 + radial[:, 1] ** 2 < (r * 0.999) ** 2)
    normal = torch.stack([radial[:, 0] / r, torch.zeros_like(r), radial[:, 1] / r], 1)
    normal[cap] = torch.tensor([0.0, 1.0, 0.0])
    uv, tangents = _round_frames(radial, r, points[:, 1] - p[:, 3], normal)
    return normal, uv, tangents


def sphere_frames(p: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rel = points - p[:, :3]
    r = p[:, 3]
    normal = rel / r[:, None]
    uv, tangents = _round_frames(rel[:, [0, 2]], r, rel[:, 1] + r, normal)
    return normal, uv, tangents


FRAMES = (plane_frames, box_frames, cylinder_frames, sphere_frames)
"""Surface frame functions of planes, boxes, cylinders and spheres (the order of a scene's primitives)."""
