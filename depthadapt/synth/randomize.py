"""Domain randomisation: a random ``Style`` per image for the foundation-like model's training set.

``random_style(family, seed, index)`` draws palettes (HSV, per surface), textures, time of day (sun elevation
and colour), sky, ambient light, haze and the camera response (exposure, contrast, saturation, tint, vignette,
noise), deterministically from (family, seed, index). The draws stay inside ``SUPPORT``, and every held-out
style (``styles.HELD_OUT``) lies outside it on at least one axis, so the training distribution never contains
a held-out domain (``in_support`` checks a style).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator

import torch

from depthadapt.synth.scene import Surface
from depthadapt.synth.seeds import sample_seed
from depthadapt.synth.styles import STYLES, Colour, Style
from depthadapt.synth.textures import TEXTURE_KINDS, Texture

__all__ = ["RANDOM", "STYLE_NAMES", "SUPPORT", "in_support", "random_style", "resolve_style"]

RANDOM = "random"
"""The style name of the randomised family (``render_sample(family, RANDOM, seed, index, ...)``)."""

STYLE_NAMES: tuple[str, ...] = (*STYLES, RANDOM)

SUPPORT: dict[str, tuple[float, float]] = {
    "exposure": (1.0, 2.2),
    "contrast": (0.75, 1.25),
    "saturation": (0.5, 1.35),
    "tint": (0.93, 1.07),  # every channel
    "vignette": (0.0, 0.3),
    "noise_std": (0.0, 0.03),
    "haze_beta": (0.0, 0.02),
    "light_green": (0.55, 1.0),  # green over the larger of red and blue, of sun / lamp light: white to orange
}
"""The ranges of the randomised camera response, haze and light colour (the axes ``in_support`` checks)."""

# Per surface: (value range, saturation range) of palette colours (hue is uniform) and texture period range (m).
_SURFACES: dict[Surface, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    Surface.ROAD: ((0.08, 0.35), (0.0, 0.25), (0.5, 5.0)),
    Surface.SIDEWALK: ((0.25, 0.7), (0.0, 0.4), (0.2, 1.5)),
    Surface.FACADE: ((0.2, 0.85), (0.05, 0.7), (0.2, 2.0)),
    Surface.CAR: ((0.05, 0.9), (0.0, 0.9), (1.0, 1.0)),
    Surface.GLASS: ((0.02, 0.15), (0.0, 0.5), (1.0, 1.0)),
    Surface.TYRE: ((0.01, 0.06), (0.0, 0.2), (1.0, 1.0)),
    Surface.POLE: ((0.1, 0.6), (0.0, 0.5), (0.1, 1.0)),
    Surface.TRUNK: ((0.1, 0.35), (0.2, 0.7), (0.05, 0.4)),
    Surface.FOLIAGE: ((0.1, 0.45), (0.3, 0.9), (0.2, 1.0)),
    Surface.FLOOR: ((0.15, 0.75), (0.05, 0.7), (0.2, 2.0)),
    Surface.WALL: ((0.35, 0.9), (0.0, 0.5), (0.05, 1.0)),
    Surface.CEILING: ((0.6, 0.95), (0.0, 0.2), (0.3, 2.0)),
    Surface.FURNITURE: ((0.1, 0.85), (0.0, 0.8), (0.05, 0.6)),
    Surface.BALL: ((0.3, 0.9), (0.3, 0.9), (0.05, 0.3)),
}
_PLAIN_SURFACES = (Surface.CAR, Surface.GLASS, Surface.TYRE)  # paint and glass stay untextured


class _Draws:
    """Uniform draws from a generator seeded by (family, seed, index): one fixed block, consumed in order."""

    def __init__(self, family: str, seed: int, index: int) -> None:
        generator = torch.Generator().manual_seed(sample_seed(family, f"{RANDOM}-style", seed, index))
        self._values: Iterator[float] = iter(torch.rand(1024, generator=generator).tolist())

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * next(self._values)

    def log_uniform(self, lo: float, hi: float) -> float:
        return math.exp(self.uniform(math.log(lo), math.log(hi)))

    def choice(self, options: tuple) -> object:
        return options[min(int(self.uniform(0, len(options))), len(options) - 1)]

    def range(self, name: str) -> float:
        return self.uniform(*SUPPORT[name])

    def hsv(self, value: tuple[float, float], saturation: tuple[float, float], hue: tuple[float, float] = (0, 1)
            ) -> Colour:
        h, s, v = self.uniform(*hue), self.uniform(*saturation), self.uniform(*value)
        return colorsys.hsv_to_rgb(h % 1.0, s, v)


def _texture(d: _Draws, period: tuple[float, float]) -> Texture:
    return Texture(str(d.choice(TEXTURE_KINDS)), period=d.log_uniform(*period), aspect=d.log_uniform(0.2, 2.0),
                   contrast=d.uniform(-0.5, 0.8), variation=d.uniform(0.0, 0.5), grain=d.uniform(0.0, 0.6),
                   along_v=d.uniform(0, 1) < 0.5)


def _light(d: _Draws, warmth: float, intensity: float) -> Colour:
    """Sun or lamp radiance: white (warmth 0) to orange (warmth 1), green kept inside ``SUPPORT``."""
    lo = SUPPORT["light_green"][0]
    green = 1.0 - (1.0 - lo) * 0.8 * warmth
    return intensity, intensity * green, intensity * max(green - 0.25 * warmth, lo)


def random_style(family: str, seed: int, index: int) -> Style:
    """The randomised style of sample ``index`` of ``family`` (deterministic in family, seed and index)."""
    d = _Draws(family, seed, index)
    palette = {kind: tuple(d.hsv(value, sat) for _ in range(int(d.uniform(2, 6)))) for kind, (value, sat, _) in
               _SURFACES.items()}
    textures = {kind: _texture(d, period) for kind, (_, _, period) in _SURFACES.items() if kind not in _PLAIN_SURFACES}
    day = d.uniform(0.0, 1.0)  # time of day: 0 dawn / dusk (low warm sun), 1 noon
    elevation = 4.0 + 66.0 * day
    overcast = d.uniform(0.0, 1.0)
    sky_sat = (0.05, 0.6 * (1 - overcast) + 0.05)
    zenith = d.hsv((0.25 + 0.6 * day, 0.35 + 0.6 * day), sky_sat, (0.52, 0.68))
    horizon_hue = (0.0, 0.15) if day < 0.3 else (0.5, 0.65)  # orange at dawn and dusk
    horizon = d.hsv((0.5 + 0.4 * day, 0.6 + 0.4 * day), (0.0, sky_sat[1] * 0.6), horizon_hue)
    if family == "room":  # the lamp's colour and strength; daylight does not reach in
        sun = _light(d, d.uniform(0.0, 0.7), d.uniform(1.5, 4.5))
        ambient = _light(d, d.uniform(0.0, 0.5), d.uniform(0.2, 0.9))
        haze = 0.0
    else:
        sun = _light(d, 1.0 - day, d.uniform(1.0, 4.0) * (1.0 - 0.6 * overcast))
        ambient = tuple(c * d.uniform(0.35, 0.9) for c in (0.9 + 0.1 * overcast, 0.95, 1.0 + 0.2 * (1 - overcast)))
        haze = d.range("haze_beta") if d.uniform(0, 1) < 0.4 else 0.0
    tint = tuple(d.range("tint") for _ in range(3))
    airlight = tuple(min(1.0, c) for c in d.hsv((0.55, 0.95), (0.0, 0.25)))
    return Style(
        name=RANDOM, palette=palette, textures=textures, sky_zenith=zenith, sky_horizon=horizon,
        sun_elevation=(elevation, min(85.0, elevation + 8.0)), sun_colour=sun, ambient_colour=ambient,
        marking_colour=d.hsv((0.5, 0.95), (0.0, 0.6)), window_colour=d.hsv((0.02, 0.2), (0.0, 0.5)),
        reflectivity=d.uniform(0.0, 0.5), exposure=d.range("exposure"), contrast=d.range("contrast"),
        saturation=d.range("saturation"), tint=tint, vignette=d.range("vignette"),
        noise_std=d.range("noise_std") if d.uniform(0, 1) < 0.6 else 0.0, haze_colour=airlight, haze_beta=haze,
        shadows=d.uniform(0, 1) < 0.85, window_spacing=(d.uniform(1.8, 3.0), d.uniform(3.2, 4.8)),
        notes=f"randomised {family} style, seed {seed}, index {index}",
    )


def _light_green(colour: Colour) -> float:
    return colour[1] / max(colour[0], colour[2], 1e-6)


def in_support(style: Style) -> bool:
    """Whether ``style`` lies inside the randomised family's ``SUPPORT`` on every axis."""
    values = {
        "exposure": [style.exposure], "contrast": [style.contrast], "saturation": [style.saturation],
        "tint": list(style.tint), "vignette": [style.vignette], "noise_std": [style.noise_std],
        "haze_beta": [style.haze_beta], "light_green": [_light_green(style.sun_colour)],
    }
    return all(SUPPORT[k][0] - 1e-9 <= v <= SUPPORT[k][1] + 1e-9 for k, vs in values.items() for v in vs)


def resolve_style(family: str, style: str, seed: int, index: int) -> Style:
    """The ``Style`` that sample ``index`` of ``style`` uses: a named one, or the random draw for ``RANDOM``."""
    if style == RANDOM:
        return random_style(family, seed, index)
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: choose one of {', '.join(STYLE_NAMES)}")
    return STYLES[style]
