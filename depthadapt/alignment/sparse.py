"""Metric depth from a relative model and a few metric points (LiDAR returns, survey points, a sparse sensor).

Per image, the relative disparity is fitted to the points' inverse depth, 1 / metric = s * out + t (the
maintainers' recipe for relative -> metric, in disparity space), and the aligned disparity is clamped to the valid
range and inverted. A scale s <= 0 (nearer looks farther) is never a fit: such an image is a fallback.

Both robust methods are built for a few dozen points, not for the dense pseudo-label fit (``fit_scale_shift``'s
RANSAC with 50-point samples and an absolute threshold), and start alike: every line through two points with a
positive scale (all pairs, or ``max_trials`` random ones), the least-median-of-squares one (Rousseeuw's LMedS) and
its robust sigma, so the scale of the residuals follows the model's own error on each image.

``tukey`` (the default) iterates Tukey's biweight from that line (weights zero beyond ``tukey_c`` sigmas): with
clean points it is nearly least squares, and a wrong point far from the line gets no weight. ``ransac`` takes the
hypothesis with the most points within ``inlier_sigmas`` sigmas and refits it by least squares: a hard cut, which
with few points and an imperfect model may keep a small cluster and extrapolate badly (benchmarks/sparse_alignment.py).
Both stay robust while fewer than half of the points are wrong. A robust fit that puts one of the image's own points
beyond ``max_depth`` or behind the camera (a consensus of a few points against the rest, seen with 10 points on a
frame the model gets badly wrong) is replaced by least squares on all points.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from depthadapt.alignment import check_choice
from depthadapt.alignment.solver import weighted_scale_shift
from depthadapt.metrics import depth_to_disparity

__all__ = ["CSV_COLUMNS", "METHODS", "SparseAlignment", "SparseFitOptions", "SparseMethod", "align_to_sparse",
           "fit_sparse_line", "fit_sparse_tukey", "read_sparse_csv"]

log = logging.getLogger(__name__)

SparseMethod = Literal["lstsq", "ransac", "tukey"]
METHODS: tuple[str, ...] = get_args(SparseMethod)
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "x": ("x", "u", "col", "column"),
    "y": ("y", "v", "row"),
    "metres": ("metres", "meters", "metre", "meter", "m", "depth", "depth_m", "z"),
}
"""The header names a sparse CSV may use for each column (case and surrounding spaces ignored)."""
# Rousseeuw & Leroy's consistency factors: median |r| of a normal is 0.6745 sigma, with a small-sample correction.
_MAD_TO_SIGMA = 1.4826
# Residual blocks of at most this many elements (hypotheses x points): bounded memory for dense "sparse" maps.
_BLOCK_ELEMENTS = 2**22
_SHOWN = 5  # bad CSV lines named in the warning


@dataclass(frozen=True)
class SparseFitOptions:
    """How ``align_to_sparse`` fits each image: ``method`` (``tukey``: ``fit_sparse_tukey`` with cut-off ``tukey_c``
    robust sigmas; ``ransac``: ``fit_sparse_line`` with threshold ``inlier_sigmas``; ``lstsq``), ``max_trials``
    two-point lines and their ``seed``; fewer than ``min_points`` points make a fallback; points outside
    [``min_depth``, ``max_depth``] metres are ignored and the output is clamped to that range."""

    method: SparseMethod = "tukey"
    min_points: int = 10
    tukey_c: float = 8.0
    inlier_sigmas: float = 2.5
    max_trials: int = 1000
    seed: int = 0
    min_depth: float = 1e-3
    max_depth: float = 80.0

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        for name, value in (("inlier_sigmas", self.inlier_sigmas), ("tukey_c", self.tukey_c)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class SparseAlignment:
    """`depth` B x H x W metres; `scale`, `shift` (B,) of 1 / depth = scale * out + shift; `points` (B,) used;
    `inliers` (B,) the points of the final fit; `fallback` (B,) bool: fewer than `min_points` points, or no fit
    with a positive scale (then scale 1, shift 0): the depth is not metric."""

    depth: Tensor
    scale: Tensor
    shift: Tensor
    points: Tensor
    inliers: Tensor
    fallback: Tensor


def _column(fields: list[str], names: tuple[str, ...]) -> str | None:
    """The header field that is one of ``names`` (case and surrounding spaces ignored), if any."""
    return next((field for field in fields if field.strip().lower() in names), None)


def read_sparse_csv(path: str | os.PathLike, height: int, width: int) -> Tensor:
    """A CSV of points (columns x, y: pixel column and row, rounded; and depth in metres) -> H x W depth (0 elsewhere).

    Header names: ``CSV_COLUMNS`` (e.g. ``x, y, metres`` or ``u, v, depth``), any case, a UTF-8 BOM (Excel) ignored.
    Points on the same pixel are averaged. A missing column is an error naming the file; a row that is not a point
    (not a number, not finite, outside the image, depth <= 0) is skipped with a warning naming the file and line.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        columns = {key: _column(fields, names) for key, names in CSV_COLUMNS.items()}
        missing = [key for key, field in columns.items() if field is None]
        if missing:
            wanted = "; ".join(f"{key}: one of {', '.join(CSV_COLUMNS[key])}" for key in missing)
            raise ValueError(f"{path}: the header line {fields} lacks a column for {wanted}")
        rows, bad = [], []
        for line, row in enumerate(reader, start=2):
            try:
                x, y, metres = (float(row[columns[key]]) for key in CSV_COLUMNS)
            except (TypeError, ValueError):
                bad.append(f"line {line}: not three numbers")
                continue
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(metres)):
                bad.append(f"line {line}: not finite")
            elif not (0 <= round(x) < width and 0 <= round(y) < height):
                bad.append(f"line {line}: pixel ({x:g}, {y:g}) outside the {width} x {height} image")
            elif metres <= 0:
                bad.append(f"line {line}: depth {metres:g} <= 0")
            else:
                rows.append((round(y) * width + round(x), metres))
    if bad:
        more = f"; ... ({len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        log.warning("%s: %d of %d rows skipped (%s%s)", path, len(bad), len(bad) + len(rows),
                    "; ".join(bad[:_SHOWN]), more)
    depth = np.zeros(height * width)
    if rows:
        index, metres = np.asarray(rows).T
        index = index.astype(np.int64)
        counts = np.bincount(index, minlength=height * width)
        sums = np.bincount(index, weights=metres, minlength=height * width)
        depth = np.divide(sums, counts, out=depth, where=counts > 0)
    return torch.from_numpy(depth.astype(np.float32)).reshape(height, width)


def _pairs(count: int, max_trials: int, generator: torch.Generator) -> Tensor:
    """Index pairs i != j of ``count`` points: all of them when there are at most ``max_trials``, else that many
    drawn at random -> T x 2 int64."""
    if count * (count - 1) // 2 <= max_trials:
        return torch.combinations(torch.arange(count), 2)
    first = torch.randint(count, (max_trials,), generator=generator)
    second = torch.randint(count - 1, (max_trials,), generator=generator)
    return torch.stack([first, second + (second >= first)], 1)


def _residual_blocks(p: Tensor, t: Tensor, scale: Tensor, shift: Tensor):
    """|scale * p + shift - t| for blocks of hypotheses: p, t (N,), scale, shift (T,) -> start, block x N."""
    size = max(1, _BLOCK_ELEMENTS // len(p))
    for start in range(0, len(scale), size):
        yield start, (scale[start : start + size, None] * p + shift[start : start + size, None] - t).abs_()


def _least_median_lines(
    p: Tensor, t: Tensor, max_trials: int, seed: int
) -> tuple[Tensor, Tensor, int, Tensor] | None:
    """The lines through two points with a positive scale (all pairs, or ``max_trials`` random ones) and the least
    median of squares one: p, t (N,) float64 -> scale, shift (T,), its index, the LMedS sigma; None without any."""
    count = len(p)
    if count < 2:
        return None
    pairs = _pairs(count, max_trials, torch.Generator().manual_seed(seed))
    dp = p[pairs[:, 1]] - p[pairs[:, 0]]
    spread = (p - p.mean()).abs().max()
    usable = dp.abs() > 1e-12 * spread.clamp_min(1e-300)
    scale = (t[pairs[:, 1]] - t[pairs[:, 0]]) / torch.where(usable, dp, 1.0)
    usable &= scale > 0
    if not bool(usable.any()):
        return None
    scale = scale[usable]
    shift = t[pairs[usable, 0]] - scale * p[pairs[usable, 0]]
    # LMedS: the h-th smallest |residual|, h = floor(N / 2) + 1 (half the points plus one parameter of two).
    h = min(count, count // 2 + 1)
    least_median = torch.cat([block.kthvalue(h, dim=1).values for _, block in _residual_blocks(p, t, scale, shift)])
    best = int(least_median.argmin())
    sigma = _MAD_TO_SIGMA * (1 + 5 / max(count - 2, 1)) * least_median[best]
    return scale, shift, best, sigma.clamp_min(1e-9 * t.abs().median().clamp_min(1e-300))


def fit_sparse_line(
    p: Tensor, t: Tensor, inlier_sigmas: float = 2.5, max_trials: int = 1000, seed: int = 0
) -> tuple[float, float, Tensor] | None:
    """RANSAC fit of t ~ scale * p + shift, scale > 0, on a few points: p, t (N,) -> scale, shift, inliers (N,)
    bool; None when no line with a positive scale goes through two of the points.

    Two-point hypotheses with scale > 0; threshold ``inlier_sigmas`` x the LMedS scale estimate of the residuals;
    the hypothesis with the most points within it (ties: the smaller sum of their squared residuals) is refitted by
    least squares on those points; None too when that refit's scale is not positive (the consensus falls).
    """
    p, t = p.double(), t.double()
    lines = _least_median_lines(p, t, max_trials, seed)
    if lines is None:
        return None
    scale, shift, _, sigma = lines
    threshold = inlier_sigmas * sigma
    inlier_counts, squared_sums = [], []
    for _, block in _residual_blocks(p, t, scale, shift):
        within = block <= threshold
        inlier_counts.append(within.sum(1))
        squared_sums.append(torch.where(within, block.square(), 0.0).sum(1))
    inlier_count, squared_sum = torch.cat(inlier_counts), torch.cat(squared_sums)
    line = int(torch.where(inlier_count == inlier_count.max(), squared_sum, math.inf).argmin())
    inliers = (scale[line] * p + shift[line] - t).abs() <= threshold
    refit_scale, refit_shift, degenerate = weighted_scale_shift(p, t, inliers)
    if bool(degenerate) or float(refit_scale) <= 0:  # the consensus itself falls: the points do not fit the model
        return None
    return float(refit_scale), float(refit_shift), inliers


def fit_sparse_tukey(
    p: Tensor, t: Tensor, c: float = 8.0, max_trials: int = 1000, seed: int = 0, iterations: int = 50
) -> tuple[float, float, Tensor] | None:
    """Tukey biweight M-estimate of t ~ scale * p + shift, scale > 0, on a few points: p, t (N,) -> scale, shift,
    inliers (N,) bool (the points of non-zero weight); None when no positive-scale fit exists.

    Starts at the least-median-of-squares line through two points and its robust sigma; iteratively reweighted
    least squares with weights (1 - (r / (c sigma))^2)^2, zero beyond ``c`` sigmas. ``c`` = 8, chosen on the
    benchmark's validation frames (4.685, the textbook 95 % Gaussian efficiency, and 6 cut true points of a real
    model's heavy-tailed errors, judged by a small sample's rough LMedS sigma): clean points give nearly the least
    squares fit, while a wrong point far from the line still gets no weight.
    """
    p, t = p.double(), t.double()
    lines = _least_median_lines(p, t, max_trials, seed)
    if lines is None:
        return None
    scale_all, shift_all, best, sigma = lines
    scale, shift = scale_all[best], shift_all[best]
    cutoff = c * sigma
    for _ in range(iterations):
        u = (scale * p + shift - t) / cutoff
        weight = (1 - u.square()).clamp_min(0).square()
        new_scale, new_shift, degenerate = weighted_scale_shift(p, t, weight)
        if bool(degenerate):
            return None
        converged = bool((new_scale - scale).abs() <= 1e-12 * scale.abs() and (new_shift - shift).abs() <= 1e-12 *
                         (shift.abs() + scale.abs() * p.abs().max()))
        scale, shift = new_scale, new_shift
        if converged:
            break
    if float(scale) <= 0:
        return None
    inliers = (scale * p + shift - t).abs() < cutoff
    return float(scale), float(shift), inliers


def align_to_sparse(
    disparity: Tensor, sparse_depth: Tensor, options: SparseFitOptions = SparseFitOptions()
) -> SparseAlignment:
    """Metric depth B x H x W from relative disparity B x H x W and sparse metric depth B x H x W (0 = no point).

    ``options`` (``SparseFitOptions``) choose the fit. Points outside [min_depth, max_depth] or where the disparity
    is not finite are ignored; the aligned disparity is clamped to [1 / max_depth, 1 / min_depth]. An image with
    fewer than ``min_points`` points, or whose fit has no positive scale, is a fallback (without a positive fit:
    scale 1, shift 0).
    """
    method, min_depth, max_depth = options.method, options.min_depth, options.max_depth
    if disparity.shape != sparse_depth.shape or disparity.ndim != 3:
        raise ValueError(
            f"disparity and sparse_depth must both be B x H x W, got {tuple(disparity.shape)} and "
            f"{tuple(sparse_depth.shape)}"
        )
    disparity = disparity.to(torch.float64)
    sparse_depth = sparse_depth.to(device=disparity.device, dtype=torch.float64)
    valid = (torch.isfinite(sparse_depth) & (sparse_depth >= min_depth) & (sparse_depth <= max_depth)
             & torch.isfinite(disparity))
    target = depth_to_disparity(sparse_depth, valid)
    batch = len(disparity)
    scale, shift = torch.ones(batch, dtype=torch.float64), torch.zeros(batch, dtype=torch.float64)
    inliers, fitted = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.bool)
    for b in range(batch):
        p, t = disparity[b][valid[b]].cpu(), target[b][valid[b]].cpu()
        fit = None
        if method == "ransac":
            fit = fit_sparse_line(p, t, options.inlier_sigmas, options.max_trials, options.seed)
        elif method == "tukey":
            fit = fit_sparse_tukey(p, t, options.tukey_c, options.max_trials, options.seed)
        # A robust fit that sends one of the image's own points beyond max_depth (or behind the camera) followed a
        # subset against points it cannot call wrong (few points, a model far off): least squares on all instead.
        if method == "lstsq" or fit is None or float(fit[0] * p.min() + fit[1]) < 1.0 / max_depth:
            s, sh, degenerate = weighted_scale_shift(p, t, torch.ones_like(p, dtype=torch.bool))
            fit = None if bool(degenerate) else (float(s), float(sh), torch.ones_like(p, dtype=torch.bool))
        if fit is not None and fit[0] > 0:
            scale[b], shift[b], inliers[b], fitted[b] = fit[0], fit[1], int(fit[2].sum()), True
    points = valid.flatten(1).sum(1).cpu()
    scale, shift = scale.to(disparity.device), shift.to(disparity.device)
    aligned = (scale[:, None, None] * disparity + shift[:, None, None]).clamp(1.0 / max_depth, 1.0 / min_depth)
    return SparseAlignment(
        depth=(1.0 / aligned).float(),
        scale=scale.float(),
        shift=shift.float(),
        points=points,
        inliers=inliers,
        fallback=~fitted | (points < options.min_points),
    )
