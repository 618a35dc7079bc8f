"""Mirror patches on the ground (``ground_mirrors``): the image shows the scene mirrored, the depth the ground."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.synthetic import SyntheticDataModule, SyntheticDataset
from depthadapt.synth import Camera, Surface, render_sample, sample_scene, sample_seed
from depthadapt.synth.mirrors import mirrored_in_ground

pytestmark = pytest.mark.unit

H, W = 42, 140  # street, small


def _surfaces(family: str, style: str, index: int) -> torch.Tensor:
    """The surface (``Surface`` value, -1 for sky) of every pixel of ``render_sample``'s scene for these arguments."""
    scene = sample_scene(family, torch.Generator().manual_seed(sample_seed(family, style, 0, index)), H, W)
    prim = scene.cast().prim
    return torch.where(prim >= 0, scene.surface[prim.clamp_min(0)], -1)


def test_the_mirrored_camera_casts_the_reflected_rays() -> None:
    camera = Camera((0.7, 1.6, -2.0), yaw=0.3, pitch=0.08, fx=90.0, fy=90.0, cx=61.3, cy=17.2, height=H, width=W)
    mirrored = mirrored_in_ground(camera)
    assert mirrored.position == (0.7, -1.6, -2.0)
    reflected = camera.rays() * torch.tensor([1.0, -1.0, 1.0])[:, None, None]
    rays = mirrored.rays().flip(1)  # upside down: row v of the mirror image is row H - 1 - v of its camera's
    # Same direction per pixel (the mirrored camera's rays are scaled to its own camera-z of 1).
    cosine = (rays * reflected).sum(0) / (rays.norm(dim=0) * reflected.norm(dim=0))
    assert cosine.min() > 1 - 1e-6
    # Each ray from the mirrored position meets the ground where the camera's own ray would (a point on both).
    ray = camera.rays()[:, -1, 5]  # a pixel of the bottom row looks down at the ground
    point = torch.tensor(camera.position) + (camera.position[1] / -ray[1]) * ray
    image_ray = rays[:, -1, 5]
    through = torch.tensor(mirrored.position) + (mirrored.position[1] / -image_ray[1]) * image_ray
    assert torch.allclose(point, through, atol=1e-4)


@pytest.mark.parametrize(("family", "style", "index"), [("street", "sintel", 3), ("room", "random", 5)])
def test_mirrors_change_the_image_on_the_ground_only_and_never_the_depth(family: str, style: str, index: int) -> None:
    plain = render_sample(family, style, 0, index, H, W)
    mirrored = render_sample(family, style, 0, index, H, W, ground_mirrors=1.0)
    for key in ("depth", "instances", "parts", "intrinsics"):
        assert torch.equal(plain[key], mirrored[key]), key
    changed = (plain["image"] != mirrored["image"]).any(0)
    assert changed.float().mean() > 0.005
    surfaces = _surfaces(family, style, index)
    ground = (surfaces == Surface.ROAD) | (surfaces == Surface.FLOOR)
    assert ground[changed].all()
    assert torch.equal(render_sample(family, style, 0, index, H, W, ground_mirrors=1.0)["image"], mirrored["image"])


def test_the_chance_of_mirrors_per_sample() -> None:
    count = 16
    changed = [not torch.equal(render_sample("room", "random", 0, i, 14, 28)["image"],
                               render_sample("room", "random", 0, i, 14, 28, ground_mirrors=0.5)["image"])
               for i in range(count)]
    share = sum(changed) / count
    assert abs(share - 0.5) < 3 * math.sqrt(0.25 / count), share  # within 3 standard deviations


def test_datamodule_passes_the_switch_and_checks_it(tmp_path) -> None:
    with pytest.raises(ValueError, match="data.ground_mirrors must be a probability"):
        SyntheticDataModule(ground_mirrors=1.5)
    with pytest.raises(ValueError, match="ground_mirrors must be a probability"):
        SyntheticDataset("street", "source", 0, 1, 14, 28, ground_mirrors=-0.1)
    data = SyntheticDataModule(height=H, width=W, style="sintel", ground_mirrors=1.0, train_range=(0, 3),
                               val_range=(3, 4), test_range=(4, 5), cache_dir=str(tmp_path))
    data.setup("test")
    sample = data.datasets["test"][0]
    expected = render_sample("street", "sintel", 0, 4, H, W, ground_mirrors=1.0)["image"]
    assert torch.equal(sample["image"], (expected * 255).round() / 255)
    assert [p.name for p in tmp_path.iterdir()] == [f"street-sintel-seed0-{H}x{W}-haze0-mirrors1-v2"]
    plain = SyntheticDataset("street", "sintel", 4, 5, H, W, cache_dir=tmp_path)
    assert plain.cache_dir.name == f"street-sintel-seed0-{H}x{W}-haze0-v2"  # earlier caches keep their names
    assert not torch.equal(plain[0]["image"], sample["image"])
