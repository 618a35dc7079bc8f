"""Offline synthetic domains: a procedural street / room renderer with RGB, metric z-depth, instance ids and
intrinsics, in named visual styles (``source``, ``target``, ``simulator`` and the held-out ``HELD_OUT``) or a
randomised style per image (``RANDOM``), plus depth-aware haze.

Framework-free (torch only); deterministic in (family, style, seed, index).
"""

from depthadapt.synth.builder import SceneBuilder
from depthadapt.synth.camera import Camera
from depthadapt.synth.layouts import sample_scene
from depthadapt.synth.randomize import RANDOM, STYLE_NAMES, SUPPORT, in_support, random_style, resolve_style
from depthadapt.synth.render import RENDER_VERSION, apply_haze, render_sample, render_scene
from depthadapt.synth.scene import FAMILIES, Scene, Surface
from depthadapt.synth.seeds import sample_seed
from depthadapt.synth.styles import HELD_OUT, STYLES, Style
from depthadapt.synth.textures import Texture

__all__ = [
    "FAMILIES",
    "HELD_OUT",
    "RANDOM",
    "RENDER_VERSION",
    "STYLES",
    "STYLE_NAMES",
    "SUPPORT",
    "Camera",
    "Scene",
    "SceneBuilder",
    "Style",
    "Surface",
    "Texture",
    "apply_haze",
    "in_support",
    "random_style",
    "render_sample",
    "render_scene",
    "resolve_style",
    "sample_scene",
    "sample_seed",
]
