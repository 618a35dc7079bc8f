"""Appearance styles (the domains): palettes, procedural textures, lighting, sky and camera response.

The named built-in domains are ``source``, ``target`` and ``simulator`` (the stand-ins of the methods' demos)
and the held-out domains ``HELD_OUT`` that the foundation-like source model never sees in training; the
randomised training family is ``depthadapt.synth.randomize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from depthadapt.synth.scene import Surface
from depthadapt.synth.textures import Texture

__all__ = ["HELD_OUT", "STYLES", "Colour", "Style"]

Colour = tuple[float, float, float]


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
    haze_beta: float = 0.0  # haze (1/m) that ``render_sample`` adds to every image of the style
    shadows: bool = True
    window_spacing: tuple[float, float] = (2.4, 3.6)
    notes: str = field(default="", compare=False)


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

_SINTEL = Style(
    name="sintel",
    notes="held out, hard: animated-film look, saturated purple / teal / orange, low hard sunlight, strong contrast",
    palette={
        Surface.ROAD: ((0.18, 0.1, 0.22),),
        Surface.SIDEWALK: ((0.7, 0.35, 0.15), (0.55, 0.2, 0.35)),
        Surface.FACADE: ((0.45, 0.1, 0.55), (0.05, 0.45, 0.5), (0.85, 0.4, 0.05), (0.6, 0.05, 0.2)),
        Surface.CAR: ((0.9, 0.8, 0.05), (0.05, 0.7, 0.6), (0.8, 0.05, 0.4)),
        Surface.GLASS: ((0.02, 0.15, 0.25),),
        Surface.TYRE: ((0.05, 0.02, 0.06),),
        Surface.POLE: ((0.1, 0.5, 0.45),),
        Surface.TRUNK: ((0.45, 0.12, 0.05),),
        Surface.FOLIAGE: ((0.05, 0.55, 0.25), (0.45, 0.6, 0.02)),
        Surface.FLOOR: ((0.6, 0.2, 0.1),),
        Surface.WALL: ((0.2, 0.5, 0.6),),
        Surface.CEILING: ((0.8, 0.7, 0.9),),
        Surface.FURNITURE: ((0.7, 0.1, 0.5), (0.1, 0.6, 0.5)),
        Surface.BALL: ((0.95, 0.6, 0.05), (0.1, 0.3, 0.9)),
    },
    textures={
        Surface.ROAD: Texture("stripes", period=2.5, contrast=0.3),
        Surface.SIDEWALK: Texture("checker", period=1.2, contrast=0.45, variation=0.4),
        Surface.FACADE: Texture("checker", period=1.5, aspect=2.0, contrast=0.35, variation=0.5),
        Surface.CAR: Texture("plain"),
        Surface.TRUNK: Texture("stripes", period=0.2, contrast=0.6),
        Surface.FOLIAGE: Texture("bricks", period=0.5, aspect=0.5, contrast=0.7),
    },
    sky_zenith=(0.3, 0.08, 0.5),
    sky_horizon=(1.0, 0.45, 0.15),
    sun_elevation=(7.0, 14.0),
    sun_colour=(6.0, 3.3, 1.4),
    ambient_colour=(0.3, 0.22, 0.6),
    marking_colour=(0.95, 0.85, 0.2),
    window_colour=(0.9, 0.6, 0.15),  # lit windows
    reflectivity=0.1,
    exposure=1.4,
    contrast=1.45,
    saturation=1.9,
    haze_colour=(0.95, 0.55, 0.35),
)

_SEPIA = Style(
    name="sepia",
    notes="held out: an old photograph, nearly monochrome brown tint, film grain, strong vignette, grey sky",
    palette=_SOURCE.palette,
    textures={**_TARGET.textures, Surface.FACADE: Texture("bricks", period=0.4, aspect=0.5, contrast=0.4)},
    sky_zenith=(0.6, 0.6, 0.6),
    sky_horizon=(0.8, 0.8, 0.78),
    sun_elevation=(25.0, 50.0),
    sun_colour=(2.6, 2.5, 2.3),
    ambient_colour=(0.6, 0.6, 0.6),
    exposure=1.5,
    contrast=0.95,
    saturation=0.12,
    tint=(1.15, 0.97, 0.72),
    vignette=0.5,
    noise_std=0.05,
    haze_colour=(0.75, 0.7, 0.6),
)

_NEON = Style(
    name="neon",
    notes="held out: a room lit by a magenta lamp against cyan ambient light, saturated",
    palette={**_SIMULATOR.palette, Surface.WALL: ((0.5, 0.5, 0.55), (0.3, 0.3, 0.4)),
             Surface.FLOOR: ((0.2, 0.2, 0.25),),
             Surface.FURNITURE: ((0.7, 0.7, 0.7), (0.2, 0.5, 0.6), (0.6, 0.2, 0.3))},
    textures={Surface.FLOOR: Texture("checker", period=0.6, contrast=0.5),
              Surface.WALL: Texture("stripes", period=0.4, contrast=0.3, along_v=True)},
    sky_zenith=(0.0, 0.0, 0.0),
    sky_horizon=(0.0, 0.0, 0.0),
    sun_elevation=(0.0, 0.0),
    sun_colour=(3.5, 0.5, 3.0),
    ambient_colour=(0.04, 0.22, 0.3),
    exposure=2.6,
    contrast=1.15,
    saturation=1.5,
    noise_std=0.02,
)

_PASTEL = Style(
    name="pastel",
    notes="held out: an over-exposed, low-contrast room in pale pastel colours, almost no texture",
    palette={**_TARGET.palette, Surface.WALL: ((0.9, 0.75, 0.8), (0.75, 0.85, 0.95), (0.85, 0.95, 0.8)),
             Surface.FLOOR: ((0.95, 0.9, 0.75),), Surface.CEILING: ((0.97, 0.97, 0.95),),
             Surface.FURNITURE: ((0.8, 0.65, 0.9), (0.65, 0.9, 0.85), (0.95, 0.8, 0.6))},
    textures={Surface.FLOOR: Texture("noise", period=2.0, contrast=0.1)},
    sky_zenith=(0.8, 0.85, 0.95),
    sky_horizon=(0.9, 0.92, 0.95),
    sun_elevation=(0.0, 0.0),
    sun_colour=(1.6, 1.55, 1.5),
    ambient_colour=(0.35, 0.35, 0.37),
    exposure=2.4,
    contrast=0.68,
    saturation=1.3,
)

HELD_OUT: dict[str, str] = {"sintel": "street", "sepia": "street", "neon": "room", "pastel": "room"}
"""The held-out domains (style name -> family): the foundation-like model's out-of-domain test styles."""

STYLES: dict[str, Style] = {s.name: s for s in (_SOURCE, _TARGET, _SIMULATOR, _SINTEL, _SEPIA, _NEON, _PASTEL)}
"""The named domains: ``source``, ``target``, ``simulator`` and the held-out ones (``HELD_OUT``)."""
