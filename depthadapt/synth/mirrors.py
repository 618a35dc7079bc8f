"""Mirrors on the ground (puddles on a street, polished patches of a room's floor): where they lie and the camera
whose view they show. A failure mode of relative depth models: the image shows another depth than the geometry."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from depthadapt.synth.camera import Camera
from depthadapt.synth.raycast import Hit
from depthadapt.synth.scene import Scene, Surface

__all__ = ["ground_mirror_mask", "mirrored_in_ground"]


def mirrored_in_ground(camera: Camera) -> Camera:
    """The camera mirrored in the ground plane y = 0, principal point mirrored vertically: its image, flipped
    upside down, is what a mirror lying on the ground shows at each pixel of ``camera``'s image."""
    x, y, z = camera.position
    return replace(camera, position=(x, -y, z), pitch=-camera.pitch, cy=camera.height - 1 - camera.cy)


def ground_mirror_mask(scene: Scene, hit: Hit, generator: torch.Generator) -> Tensor:
    """Mirror patches on the ground (H * W,) in [0, 1] (their reflectance; 0 elsewhere): 1-4 discs on the ground
    plane (puddles on a street, polished patches of a room's floor), each centred on a random visible ground
    point, with a radius of 15-40 % of that point's depth (so each covers a similar share of the image)."""
    prim = hit.prim.flatten()[hit.pixels]
    ground = (scene.surface[prim] == Surface.ROAD) | (scene.surface[prim] == Surface.FLOOR)
    mask = torch.zeros(hit.prim.numel())
    points, depth = hit.points[ground], hit.depth.flatten()[hit.pixels[ground]]
    if not len(points):
        return mask
    reflectance = torch.zeros(len(points))
    for _ in range(int(torch.randint(1, 5, (), generator=generator))):
        k = int(torch.randint(len(points), (), generator=generator))
        radius = float(depth[k]) * (0.15 + 0.25 * torch.rand((), generator=generator).item())
        strength = 0.8 + 0.15 * torch.rand((), generator=generator).item()
        distance = ((points[:, 0] - points[k, 0]) ** 2 + (points[:, 2] - points[k, 2]) ** 2).sqrt()
        edge = ((radius - distance) / (0.15 * radius)).clamp(0.0, 1.0)  # a soft rim
        reflectance = torch.maximum(reflectance, strength * edge)
    mask[hit.pixels[ground]] = reflectance
    return mask
