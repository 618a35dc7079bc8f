"""Offline synthetic domains: a procedural street / room renderer with RGB, metric z-depth, instance ids and
intrinsics, in several visual styles (``source``, ``target``, ``simulator``), plus depth-aware haze.

Framework-free (torch only); deterministic in (family, style, seed, index).
"""

from depthadapt.synth.render import RENDER_VERSION, apply_haze, render_sample, render_scene, sample_seed
from depthadapt.synth.scene import FAMILIES, Camera, Scene, SceneBuilder, Surface, sample_scene
from depthadapt.synth.styles import STYLES, Style, Texture

__all__ = [
    "FAMILIES",
    "RENDER_VERSION",
    "STYLES",
    "Camera",
    "Scene",
    "SceneBuilder",
    "Style",
    "Surface",
    "Texture",
    "apply_haze",
    "render_sample",
    "render_scene",
    "sample_scene",
    "sample_seed",
]
