"""Procedural textures in surface coordinates (metres): lattice hashes, value noise, box-filtered patterns.

Textures shrink with distance like real ones and are box-filtered over each pixel's footprint (analytically for
the periodic patterns, by fading octaves for noise), so distant texture turns into its mean instead of aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TEXTURE_KINDS", "Texture", "coverage", "fbm", "filtered_square", "pattern", "tile_hash", "value_noise"]

TEXTURE_KINDS: tuple[str, ...] = ("plain", "noise", "checker", "stripes", "bricks")

@dataclass(frozen=True)
class Texture:
    """A procedural texture: ``kind`` (one of ``TEXTURE_KINDS``), ``period`` (tile / brick / stripe / noise size
    along u, metres), ``aspect`` (size along v over size along u), ``contrast`` (how much the pattern darkens
    the base colour; negative lightens), ``variation`` (per-tile brightness jitter), ``grain`` (fine noise)."""

    kind: str = "plain"
    period: float = 1.0
    aspect: float = 1.0
    contrast: float = 0.3
    variation: float = 0.0
    grain: float = 0.0
    along_v: bool = False  # stripes vary along v (horizontal bands on walls) instead of u

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"unknown texture kind {self.kind!r}: choose one of {', '.join(TEXTURE_KINDS)}")


def _hash(ix: Tensor, iy: Tensor, seed: int) -> Tensor:
    """Integer lattice hash in [0, 1): exact int64 arithmetic, identical on every machine."""
    h = ((ix * 73856093) ^ (iy * 19349663) ^ (seed * 83492791)) & 0x7FFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0x7FFFFFFF
    h = h ^ (h >> 16)
    return h.float() * (1.0 / 2**31)


def tile_hash(u: Tensor, v: Tensor, seed: int) -> Tensor:
    """A random value in [0, 1) per unit cell of (u, v) (M,)."""
    return _hash(u.floor().long(), v.floor().long(), seed)


def value_noise(u: Tensor, v: Tensor, seed: int) -> Tensor:
    """Smooth lattice value noise in [0, 1] at (u, v) (M,), one feature per unit."""
    iu, iv = u.floor(), v.floor()
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.long(), iv.long()
    h00, h10 = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    h01, h11 = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return torch.lerp(torch.lerp(h00, h10, fu), torch.lerp(h01, h11, fu), fv)


def _fade(footprint: Tensor, period: float) -> Tensor:
    """Weight of a feature of this period seen with this footprint: 1 when resolved, 0 beyond Nyquist."""
    return (1.5 - 2.0 * footprint / period).clamp(0.0, 1.0)


def fbm(u: Tensor, v: Tensor, footprint: Tensor, period: float, seed: int, octaves: int = 3) -> Tensor:
    """Fractal value noise in [0, 1] (M,), octaves finer than the pixel footprint faded to their mean."""
    total, norm = torch.zeros_like(u), 0.0
    for k in range(octaves):
        scale, amp = period / 2**k, 0.5**k
        total += amp * 0.5 + amp * (value_noise(u / scale, v / scale, seed + k) - 0.5) * _fade(footprint, scale)
        norm += amp
    return total / norm


def _square_integral(x: Tensor, duty: float) -> Tensor:
    """Integral from 0 to x of the unit-period square wave that is 1 on [0, duty)."""
    cell = x.floor()
    return cell * duty + (x - cell).clamp(max=duty)


def filtered_square(x: Tensor, duty: float, width: Tensor) -> Tensor:
    """Mean over [x - width / 2, x + width / 2] of the unit-period square wave 1 on [0, duty) (M,)."""
    width = width.clamp_min(1e-4)
    return (_square_integral(x + width / 2, duty) - _square_integral(x - width / 2, duty)) / width


def coverage(x: Tensor, lo: float | Tensor, hi: float | Tensor, width: Tensor) -> Tensor:
    """Fraction of [x - width / 2, x + width / 2] inside [lo, hi] (M,): an anti-aliased band."""
    width = width.clamp_min(1e-4)
    return ((torch.clamp(x + width / 2, max=hi) - torch.clamp(x - width / 2, min=lo)) / width).clamp(0.0, 1.0)


def pattern(texture: Texture, uv: Tensor, footprint: Tensor, seed: int) -> Tensor:
    """Brightness factor (M,) of ``texture`` at surface coordinates ``uv`` (M, 2) with pixel ``footprint`` (M, 2)."""
    u, v = uv[:, 0], uv[:, 1]
    fu, fv = footprint[:, 0], footprint[:, 1]
    pu, pv = texture.period, texture.period * texture.aspect
    kind = texture.kind
    tiles = None  # cell coordinates for the per-tile variation
    if kind == "plain":
        m = torch.zeros_like(u)
    elif kind == "noise":
        m = fbm(u, v, torch.maximum(fu, fv), pu, seed)
    elif kind == "checker":
        a, b = filtered_square(u / pu, 0.5, fu / pu), filtered_square(v / pv, 0.5, fv / pv)
        m = a + b - 2 * a * b
        tiles = (u / pu, v / pv)
    elif kind == "stripes":
        x, f, p = (v, fv, pv) if texture.along_v else (u, fu, pu)
        m = filtered_square(x / p, 0.5, f / p)
        tiles = (x / (2 * p), torch.zeros_like(x))
    else:  # bricks: running bond, mortar joints are the pattern
        row = (v / pv).floor()
        shifted = u / pu + 0.5 * (row - 2 * (row / 2).floor())
        joint = 0.08 * min(1.0, pv / pu)
        brick = filtered_square(v / pv, 1 - joint, fv / pv) * filtered_square(shifted, 1 - joint * pv / pu, fu / pu)
        m = 1 - brick
        tiles = (shifted, row)
    out = 1 - texture.contrast * m
    if tiles is not None and texture.variation:
        jitter = tile_hash(tiles[0], tiles[1], seed + 17) - 0.5
        out = out * (1 + texture.variation * jitter * _fade(torch.maximum(fu, fv), min(pu, pv)))
    if texture.grain:
        fine = min(pu, pv) / 8
        out = out * (1 + texture.grain * (value_noise(u / fine, v / fine, seed + 29) - 0.5) *
                     _fade(torch.maximum(fu, fv), fine))
    return out
