"""Sparse metric alignment on synthetic street scenes: a relative prediction made metric by a few points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depthadapt.alignment.sparse import align_to_sparse, read_sparse_csv
from depthadapt.synth import render_sample

pytestmark = pytest.mark.unit

HEIGHT, WIDTH = 56, 168
SCALES, SHIFTS = (3.0, 0.5, 12.0), (0.2, 1.5, -0.01)  # the known affine maps truth -> relative prediction


@pytest.fixture(scope="module")
def scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """Depth of three street scenes B x H x W (0 = sky) and a relative prediction: affine disparity + noise."""
    depth = torch.stack([render_sample("street", "source", 0, i, HEIGHT, WIDTH)["depth"] for i in range(3)])
    generator = torch.Generator().manual_seed(0)
    disparity = torch.where(depth > 0, 1.0 / depth.clamp_min(1e-6), 0.0)
    scale, shift = torch.tensor(SCALES)[:, None, None], torch.tensor(SHIFTS)[:, None, None]
    noise = 1 + 0.01 * torch.randn(depth.shape, generator=generator)  # 1 % of the signal
    relative = disparity * noise * scale + shift
    return depth, relative


def sparse_points(depth: torch.Tensor, count: int, outliers: float, seed: int) -> torch.Tensor:
    """`count` random valid pixels per image keep their depth; a fraction `outliers` get a wrong one."""
    generator = torch.Generator().manual_seed(seed)
    sparse = torch.zeros_like(depth)
    for b in range(len(depth)):
        pixels = (depth[b].flatten() > 0).nonzero().squeeze(1)
        chosen = pixels[torch.randperm(len(pixels), generator=generator)[:count]]
        values = depth[b].flatten()[chosen].clone()
        wrong = torch.rand(count, generator=generator) < outliers
        values[wrong] = 1 + 60 * torch.rand(int(wrong.sum()), generator=generator)  # e.g. LiDAR through glass
        sparse[b].view(-1)[chosen] = values
    return sparse


def abs_rel(pred: torch.Tensor, depth: torch.Tensor) -> float:
    valid = depth > 0
    return ((pred[valid] - depth[valid]).abs() / depth[valid]).mean().item()


@pytest.mark.parametrize("count", [50, 500])
def test_clean_points_recover_metric_depth(scenes, count: int) -> None:
    depth, relative = scenes
    result = align_to_sparse(relative, sparse_points(depth, count, 0.0, seed=count), method="lstsq")
    assert result.depth.shape == depth.shape and not result.fallback.any()
    assert (result.points == count).all()
    assert abs_rel(result.depth, depth) < 0.03
    assert torch.allclose(result.scale, 1 / torch.tensor(SCALES), rtol=0.05)  # inverts the known map
    assert result.depth.min() >= 1e-3 and result.depth.max() <= 80.0


def test_ransac_beats_lstsq_with_outliers(scenes) -> None:
    depth, relative = scenes
    sparse = sparse_points(depth, 200, 0.3, seed=1)
    lstsq = align_to_sparse(relative, sparse, method="lstsq")
    ransac = align_to_sparse(relative, sparse, method="ransac")
    assert abs_rel(ransac.depth, depth) < 0.03
    assert abs_rel(lstsq.depth, depth) > 3 * abs_rel(ransac.depth, depth)


def test_too_few_points_are_flagged(scenes) -> None:
    depth, relative = scenes
    sparse = sparse_points(depth, 50, 0.0, seed=2)
    sparse[1] = 0
    sparse[1, 10, 10] = 5.0  # one point cannot fix scale and shift
    result = align_to_sparse(relative, sparse, method="ransac", min_points=10)
    assert result.fallback.tolist() == [False, True, False]
    assert result.points.tolist() == [50, 1, 50]
    with pytest.raises(ValueError, match="B x H x W"):
        align_to_sparse(relative[0], sparse[0])


def test_read_sparse_csv(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("x,y,metres\n2,1,4.0\n2.4,0.6,6.0\n0,3,10\n")
    depth = read_sparse_csv(path, height=4, width=5)
    assert depth.shape == (4, 5)
    assert depth[1, 2] == 5.0 and depth[3, 0] == 10.0  # x is the column; two points on one pixel averaged
    assert (depth > 0).sum() == 2
    path.write_text("x,y,metres\n7,1,4.0\n")
    with pytest.raises(ValueError, match=r"points.csv, line 2: pixel \(7.0, 1.0\) is outside"):
        read_sparse_csv(path, height=4, width=5)
    path.write_text("u,v,depth\n1,1,1\n")
    with pytest.raises(ValueError, match="needs the columns x, y, metres"):
        read_sparse_csv(path, height=4, width=5)
