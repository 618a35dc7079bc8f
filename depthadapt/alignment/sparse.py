"""Metric depth from a relative model and a few metric points (LiDAR returns, survey points, a sparse sensor).

Per image, the relative disparity is fitted to the points' inverse depth, 1 / metric = s * out + t (the
maintainers' recipe for relative -> metric, in disparity space), by `depthadapt.alignment.fit_scale_shift`
(least squares, or RANSAC against wrong points), and the aligned disparity is clamped to the valid range and
inverted. The RANSAC inlier threshold is relative: `relative_threshold` x the image's median point disparity,
so one setting suits near and far scenes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from depthadapt.alignment import check_choice, fit_scale_shift
from depthadapt.metrics import depth_to_disparity

METHODS = ("lstsq", "ransac")
CSV_COLUMNS = ("x", "y", "metres")


@dataclass(frozen=True)
class SparseAlignment:
    """`depth` B x H x W metres; `scale`, `shift` (B,) of 1 / depth = scale * out + shift; `points` (B,) used;
    `fallback` (B,) bool: fewer than `min_points` points or no fit (the depth is then not trustworthy)."""

    depth: Tensor
    scale: Tensor
    shift: Tensor
    points: Tensor
    fallback: Tensor


def read_sparse_csv(path: str | os.PathLike, height: int, width: int) -> Tensor:
    """A CSV with columns x, y (pixel column and row, rounded), metres -> H x W depth (0 elsewhere).

    Points on the same pixel are averaged; a point outside the image, a missing column or a non-number is an
    error naming the file and the line.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: needs the columns {', '.join(CSV_COLUMNS)} (header line), missing {missing}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                x, y, metres = (float(row[c]) for c in CSV_COLUMNS)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {line}: x, y and metres must be numbers ({error})") from error
            col, rw = round(x), round(y)
            if not (0 <= col < width and 0 <= rw < height):
                raise ValueError(f"{path}, line {line}: pixel ({x}, {y}) is outside the {width} x {height} image")
            if not (np.isfinite(metres) and metres > 0):
                raise ValueError(f"{path}, line {line}: metres must be a positive number, got {metres}")
            rows.append((rw * width + col, metres))
    depth = np.zeros(height * width)
    if rows:
        index, metres = np.asarray(rows).T
        index = index.astype(np.int64)
        counts = np.bincount(index, minlength=height * width)
        sums = np.bincount(index, weights=metres, minlength=height * width)
        depth = np.divide(sums, counts, out=depth, where=counts > 0)
    return torch.from_numpy(depth.astype(np.float32)).reshape(height, width)


def align_to_sparse(
    disparity: Tensor,
    sparse_depth: Tensor,
    method: str = "ransac",
    min_points: int = 10,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    relative_threshold: float = 0.05,
    max_trials: int = 1000,
    seed: int = 0,
) -> SparseAlignment:
    """Metric depth B x H x W from relative disparity B x H x W and sparse metric depth B x H x W (0 = no point).

    Points outside [min_depth, max_depth] are ignored; the aligned disparity is clamped to
    [1 / max_depth, 1 / min_depth]. RANSAC draws minimal two-point hypotheses; inliers are within
    `relative_threshold` x the median point disparity of the image.
    """
    check_choice("method", method, METHODS)
    if disparity.shape != sparse_depth.shape or disparity.ndim != 3:
        raise ValueError(
            f"disparity and sparse_depth must both be B x H x W, got {tuple(disparity.shape)} and "
            f"{tuple(sparse_depth.shape)}"
        )
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    disparity = disparity.to(torch.float64)
    sparse_depth = sparse_depth.to(device=disparity.device, dtype=torch.float64)
    valid = torch.isfinite(sparse_depth) & (sparse_depth >= min_depth) & (sparse_depth <= max_depth)
    target = depth_to_disparity(sparse_depth, valid)
    points = valid.flatten(1).sum(1)
    # Fit in units of each image's median point disparity, so that the threshold is relative.
    unit = torch.stack([t[v].median() if v.any() else t.new_tensor(1.0) for t, v in zip(target, valid, strict=True)])
    fit = fit_scale_shift(
        disparity, target / unit[:, None, None], valid, method=method, min_samples=2,
        residual_threshold=relative_threshold, max_trials=max_trials, seed=seed,
    )
    scale, shift = fit.scale * unit, fit.shift * unit
    aligned = (scale[:, None, None] * disparity + shift[:, None, None]).clamp(1.0 / max_depth, 1.0 / min_depth)
    return SparseAlignment(
        depth=(1.0 / aligned).float(),
        scale=scale.float(),
        shift=shift.float(),
        points=points,
        fallback=fit.fallback | (points < min_points),
    )
