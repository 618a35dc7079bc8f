"""Appearance styles (the domains): palettes, procedural textures, lighting, sky and camera response.

Textures are evaluated in surface coordinates (metres), so they shrink with distance like real ones, and are
box-filtered over each pixel's footprint (analytically for the periodic patterns, by fading octaves for noise),
so distant texture turns into its mean instead of aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from depthadapt.synth.scene import Surface

__all__ = ["STYLES", "TEXTURE_KINDS", "Style", "Texture", "pattern", "tile_hash", "value_noise"]

Colour = tuple[float, float, float]

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


@dataclass(frozen=True)
class Style:
    """One visual domain. Colours are linear RGB; the camera maps radiance to [0, 1] with
    ``1 - 1 / (1 + exposure * x)``, gamma 2 (square root), then contrast, saturation, tint, vignette, noise."""

    name: str
    palette: dict[Surface, tuple[Colour, ...]]
    textures: dict[Surface, Texture]
    sky_zenith: Colour
    sky_horizon: Colour
    sun_elevation: tuple[float, float]  # degrees, drawn uniformly per image
    sun_colour: Colour  # sun or lamp radiance
    ambient_colour: Colour
    marking_colour: Colour = (0.8, 0.8, 0.78)
    window_colour: Colour = (0.05, 0.07, 0.1)
    reflectivity: float = 0.35  # of glass; car paint gets a fifth of it
    exposure: float = 1.6
    contrast: float = 1.0
    saturation: float = 1.0
    tint: Colour = (1.0, 1.0, 1.0)
    vignette: float = 0.0
    noise_std: float = 0.0
    haze_colour: Colour = (0.8, 0.82, 0.85)  # airlight (display space) for ``apply_haze``
    shadows: bool = True
    window_spacing: tuple[float, float] = (2.4, 3.6)
    notes: str = field(default="", compare=False)


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


_SOURCE = Style(
    name="source",
    notes="bright daylight, warm palette, bricks and paving, blue sky",
    palette={
        Surface.ROAD: ((0.16, 0.15, 0.14),),
        Surface.SIDEWALK: ((0.55, 0.46, 0.36), (0.5, 0.45, 0.4)),
        Surface.FACADE: ((0.55, 0.22, 0.13), (0.68, 0.45, 0.22), (0.75, 0.62, 0.45), (0.5, 0.3, 0.2),
                         (0.72, 0.5, 0.35)),
        Surface.CAR: ((0.6, 0.05, 0.04), (0.75, 0.72, 0.66), (0.06, 0.06, 0.07), (0.1, 0.2, 0.5),
                      (0.75, 0.55, 0.08), (0.45, 0.45, 0.45)),
        Surface.GLASS: ((0.05, 0.06, 0.07),),
        Surface.TYRE: ((0.03, 0.03, 0.03),),
        Surface.POLE: ((0.12, 0.22, 0.13), (0.25, 0.25, 0.25)),
        Surface.TRUNK: ((0.25, 0.15, 0.08),),
        Surface.FOLIAGE: ((0.12, 0.3, 0.06), (0.2, 0.35, 0.05)),
        Surface.FLOOR: ((0.5, 0.3, 0.15), (0.6, 0.4, 0.2)),
        Surface.WALL: ((0.8, 0.7, 0.55), (0.75, 0.6, 0.45), (0.7, 0.72, 0.6)),
        Surface.CEILING: ((0.85, 0.82, 0.75),),
        Surface.FURNITURE: ((0.45, 0.25, 0.12), (0.6, 0.15, 0.1), (0.7, 0.55, 0.3), (0.3, 0.35, 0.15)),
        Surface.BALL: ((0.8, 0.15, 0.05), (0.85, 0.7, 0.1), (0.2, 0.4, 0.75)),
    },
    textures={
        Surface.ROAD: Texture("noise", period=1.5, contrast=0.35, grain=0.5),
        Surface.SIDEWALK: Texture("checker", period=0.6, contrast=0.15, variation=0.25, grain=0.3),
        Surface.FACADE: Texture("bricks", period=0.3, aspect=0.3, contrast=-0.5, variation=0.3),
        Surface.CAR: Texture("plain"),
        Surface.POLE: Texture("noise", period=0.5, contrast=0.2),
        Surface.TRUNK: Texture("stripes", period=0.08, contrast=0.4, variation=0.5),
        Surface.FOLIAGE: Texture("noise", period=0.4, contrast=0.9, grain=0.6),
        Surface.FLOOR: Texture("bricks", period=1.6, aspect=0.1, contrast=0.5, variation=0.5, grain=0.4),
        Surface.WALL: Texture("stripes", period=0.12, contrast=0.12),
        Surface.FURNITURE: Texture("noise", period=0.3, contrast=0.4, grain=0.3),
        Surface.BALL: Texture("stripes", period=0.15, contrast=0.7),
    },
    sky_zenith=(0.12, 0.28, 0.75),
    sky_horizon=(0.55, 0.7, 0.95),
    sun_elevation=(30.0, 65.0),
    sun_colour=(3.2, 2.9, 2.4),
    ambient_colour=(0.55, 0.6, 0.75),
    marking_colour=(0.85, 0.85, 0.8),
    exposure=1.3,
    contrast=1.1,
    saturation=1.15,
    tint=(1.03, 1.0, 0.94),
    vignette=0.1,
    noise_std=0.008,
    haze_colour=(0.78, 0.82, 0.88),
)

_TARGET = Style(
    name="target",
    notes="overcast dusk, cool desaturated palette, concrete panels and tiles, low contrast, sensor noise",
    palette={
        Surface.ROAD: ((0.2, 0.21, 0.23),),
        Surface.SIDEWALK: ((0.35, 0.37, 0.4), (0.3, 0.33, 0.36)),
        Surface.FACADE: ((0.45, 0.47, 0.5), (0.3, 0.35, 0.4), (0.55, 0.57, 0.58), (0.25, 0.3, 0.3),
                         (0.4, 0.45, 0.52)),
        Surface.CAR: ((0.3, 0.32, 0.36), (0.7, 0.72, 0.75), (0.08, 0.09, 0.1), (0.15, 0.25, 0.3),
                      (0.35, 0.4, 0.35)),
        Surface.GLASS: ((0.08, 0.1, 0.12),),
        Surface.TYRE: ((0.04, 0.04, 0.05),),
        Surface.POLE: ((0.4, 0.42, 0.45),),
        Surface.TRUNK: ((0.2, 0.19, 0.18),),
        Surface.FOLIAGE: ((0.15, 0.22, 0.2), (0.2, 0.25, 0.22)),
        Surface.FLOOR: ((0.5, 0.55, 0.58), (0.35, 0.4, 0.45)),
        Surface.WALL: ((0.6, 0.65, 0.7), (0.45, 0.55, 0.6), (0.7, 0.72, 0.74)),
        Surface.CEILING: ((0.7, 0.74, 0.78),),
        Surface.FURNITURE: ((0.25, 0.3, 0.38), (0.5, 0.52, 0.55), (0.2, 0.22, 0.25), (0.35, 0.45, 0.5)),
        Surface.BALL: ((0.3, 0.5, 0.55), (0.6, 0.6, 0.65)),
    },
    textures={
        Surface.ROAD: Texture("noise", period=4.0, contrast=0.25, grain=0.2),
        Surface.SIDEWALK: Texture("noise", period=1.0, contrast=0.3, grain=0.3),
        Surface.FACADE: Texture("stripes", period=1.2, contrast=0.25, along_v=True, variation=0.2, grain=0.3),
        Surface.CAR: Texture("plain"),
        Surface.POLE: Texture("plain"),
        Surface.TRUNK: Texture("noise", period=0.2, contrast=0.3),
        Surface.FOLIAGE: Texture("checker", period=0.3, contrast=0.4, grain=0.5),
        Surface.FLOOR: Texture("checker", period=0.5, contrast=0.35, variation=0.1),
        Surface.WALL: Texture("noise", period=0.8, contrast=0.2, grain=0.3),
        Surface.FURNITURE: Texture("stripes", period=0.06, contrast=0.25),
        Surface.BALL: Texture("checker", period=0.12, contrast=0.5),
    },
    sky_zenith=(0.42, 0.45, 0.52),
    sky_horizon=(0.62, 0.6, 0.62),
    sun_elevation=(6.0, 18.0),
    sun_colour=(1.2, 0.8, 0.55),
    ambient_colour=(0.6, 0.66, 0.78),
    marking_colour=(0.55, 0.55, 0.5),
    window_colour=(0.04, 0.05, 0.06),
    reflectivity=0.15,
    exposure=1.2,
    contrast=0.8,
    saturation=0.45,
    tint=(0.92, 0.98, 1.08),
    vignette=0.25,
    noise_std=0.03,
    haze_colour=(0.62, 0.64, 0.68),
    window_spacing=(3.0, 4.5),
)

_SIMULATOR = Style(
    name="simulator",
    notes="game-engine look: flat colours, no texture, hard light, no camera effects",
    palette={
        Surface.ROAD: ((0.2, 0.2, 0.2),),
        Surface.SIDEWALK: ((0.5, 0.5, 0.5),),
        Surface.FACADE: ((0.7, 0.3, 0.3), (0.3, 0.5, 0.7), (0.8, 0.75, 0.3), (0.4, 0.7, 0.4)),
        Surface.CAR: ((0.9, 0.1, 0.1), (0.1, 0.3, 0.9), (0.9, 0.9, 0.9), (0.1, 0.8, 0.2)),
        Surface.GLASS: ((0.1, 0.15, 0.3),),
        Surface.TYRE: ((0.05, 0.05, 0.05),),
        Surface.POLE: ((0.6, 0.6, 0.6),),
        Surface.TRUNK: ((0.4, 0.25, 0.1),),
        Surface.FOLIAGE: ((0.1, 0.6, 0.1),),
        Surface.FLOOR: ((0.6, 0.45, 0.3),),
        Surface.WALL: ((0.85, 0.85, 0.85), (0.7, 0.8, 0.9)),
        Surface.CEILING: ((0.95, 0.95, 0.95),),
        Surface.FURNITURE: ((0.8, 0.2, 0.2), (0.2, 0.4, 0.8), (0.9, 0.7, 0.2)),
        Surface.BALL: ((0.9, 0.9, 0.1), (0.9, 0.1, 0.6)),
    },
    textures={},
    sky_zenith=(0.2, 0.45, 1.0),
    sky_horizon=(0.45, 0.7, 1.0),
    sun_elevation=(45.0, 60.0),
    sun_colour=(2.5, 2.5, 2.5),
    ambient_colour=(0.7, 0.7, 0.7),
    marking_colour=(0.9, 0.9, 0.9),
    window_colour=(0.1, 0.15, 0.3),
    reflectivity=0.0,
    exposure=1.2,
    haze_colour=(0.75, 0.85, 1.0),
)

STYLES: dict[str, Style] = {s.name: s for s in (_SOURCE, _TARGET, _SIMULATOR)}
"""The built-in domains by name: ``source``, ``target`` and ``simulator``."""
