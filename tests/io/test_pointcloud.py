"""Point clouds from depth: checked against the synthetic renderer's own geometry; PLY files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from depthadapt.io import depth_to_points, make_intrinsics, unproject, write_ply
from depthadapt.synth import render_sample, sample_scene, sample_seed

pytestmark = pytest.mark.unit

FAMILY, STYLE, SEED, INDEX, HEIGHT, WIDTH = "street", "source", 0, 3, 56, 168


@pytest.fixture(scope="module")
def street() -> tuple[dict, object]:
    """A rendered street sample and its scene, rebuilt from the same seed as `render_sample` builds it."""
    sample = render_sample(FAMILY, STYLE, SEED, INDEX, HEIGHT, WIDTH)
    generator = torch.Generator().manual_seed(sample_seed(FAMILY, STYLE, SEED, INDEX))
    return sample, sample_scene(FAMILY, generator, HEIGHT, WIDTH)


def test_points_are_the_ray_casters_hit_points(street) -> None:
    sample, scene = street
    points, colors = depth_to_points(sample["depth"], sample["intrinsics"], sample["image"])
    valid = sample["depth"].flatten() > 0
    hit = scene.cast()
    hit_valid = valid[hit.pixels]
    expected = scene.camera.to_camera(hit.points[hit_valid])  # world hit points in the camera frame
    assert len(points) == int(valid.sum()) == len(expected) > 0.3 * HEIGHT * WIDTH
    assert (points - expected).abs().max() < 1e-3 * (1 + expected[:, 2].max())
    assert colors.dtype == torch.uint8 and colors.shape == points.shape


def test_road_points_lie_on_the_ground_plane(street) -> None:
    sample, scene = street
    cam = scene.camera
    points, _ = depth_to_points(sample["depth"], sample["intrinsics"])
    right, down, forward = (torch.tensor(axis) for axis in cam.axes())
    world = torch.tensor(cam.position) + points[:, :1] * right + points[:, 1:2] * down + points[:, 2:] * forward
    hit = scene.cast()
    ground = (hit.normals[:, 1] > 0.999) & (hit.points[:, 1].abs() < 1e-4)  # the road plane y = 0
    ground = ground[(sample["depth"].flatten() > 0)[hit.pixels]]
    assert ground.sum() > 0.1 * len(points)
    assert world[ground, 1].abs().max() < 1e-3 * (1 + points[ground, 2].max())  # camera height cancels out
    assert (world[~ground, 1] > 0.01).float().mean() > 0.9  # everything else stands above the road


def test_unproject_and_intrinsics() -> None:
    depth = torch.full((2, 3, 5), 2.0)
    k = make_intrinsics(3, 5, focal=4.0)
    assert k == (4.0, 4.0, 2.0, 1.0)
    grid = unproject(depth, torch.tensor([k, (2.0, 8.0, 0.0, 0.0)]))
    assert grid.shape == (2, 3, 5, 3)
    assert torch.allclose(grid[0, 1, 2], torch.tensor([0.0, 0.0, 2.0]))  # the principal point looks ahead
    assert torch.allclose(grid[0, 0, 4], torch.tensor([1.0, -0.5, 2.0]))  # x = (4 - 2) / 4 * 2, y = (0 - 1) / 4 * 2
    assert torch.allclose(grid[1, 2, 3], torch.tensor([3.0, 0.5, 2.0]))  # fx and fy are not swapped
    assert make_intrinsics(3, 5, fx=1, fy=2, cx=3, cy=4) == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="focal, or all of fx, fy, cx, cy"):
        make_intrinsics(3, 5, fx=1.0)
    depth[0, 0, 0], depth[0, 1, 1] = 0.0, float("nan")
    points, _ = depth_to_points(depth[0], k)
    assert len(points) == 13
    with pytest.raises(ValueError, match="one image"):
        depth_to_points(depth, k)


def test_write_ply_binary_little_endian(tmp_path: Path) -> None:
    points = torch.tensor([[0.0, 1.0, 2.0], [3.5, -4.0, 5.25]])
    colors = torch.tensor([[255, 0, 10], [1, 2, 3]], dtype=torch.uint8)
    path = write_ply(tmp_path / "cloud.ply", points, colors)
    header = path.read_bytes()[:200]
    assert b"format binary_little_endian 1.0" in header and b"property float x" in header
    assert b"property uchar red" in header
    vertex = PlyData.read(str(path))["vertex"]
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), points.numpy())
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), colors.numpy())
    write_ply(tmp_path / "plain.ply", points.numpy())
    assert "red" not in PlyData.read(str(tmp_path / "plain.ply"))["vertex"].data.dtype.names
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "bad.ply", points, colors.float())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply", "plain.ply"]  # no temporary leftovers
