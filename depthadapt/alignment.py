"""Scale/shift alignment of a prediction to a target (batched, torch).

``lstsq_scale_shift`` is the closed-form weighted least-squares fit. ``fit_scale_shift`` is the general
entry point of the pseudo-labeller: least squares or RANSAC (``depthadapt.ransac``: sklearn's
``RANSACRegressor`` as the reference, a batched torch RANSAC that follows its semantics), on all valid points
or on the "support" points at the extremes of the target's distribution, with its options in one
``ScaleShiftFitOptions``. ``_weighted_scale_shift`` (a solver that reduces over the last dim and broadcasts
over any leading dims, e.g. B x trials x N) is the building block of every fit.

Speed: a fit's full-resolution work is the validity test, the support selection and its packing; on the CPU
these run row by row in numpy (O(n) order statistics, ``flatnonzero``), on a GPU batched in torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ScaleShiftFit", "ScaleShiftFitOptions", "check_choice", "fit_scale_shift", "lstsq_scale_shift"]

# Spread of pred below this fraction of its magnitude counts as "constant": below float32 resolution
# (~6e-8) even after averaging over millions of pixels, so any real variation in the input stays above it.
_REL_SPREAD_TOL = 1e-12


def _check_shapes(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
    """Raise a ValueError naming the argument unless pred, target (and mask) are one B x H x W or B x N shape."""
    if pred.shape != target.shape:
        raise ValueError(
            "pred and target must have the same shape, got "
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and target must be B x H x W or B x N, got shape {tuple(pred.shape)}")
    if mask is not None and mask.shape != pred.shape:
        raise ValueError(
            f"mask must have the shape of pred {tuple(pred.shape)}, got mask {tuple(mask.shape)}"
        )


def _prepare_inputs(
    pred: Tensor, target: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Validate and flatten B x H x W (or B x N) inputs -> float64 pred, target (B x N), bool valid, dtype.

    Invalid entries (masked out, NaN or inf in pred or target) are zeroed in the returned values so that
    masked sums never see a NaN; ``valid`` tells which entries count.
    """
    _check_shapes(pred, target, mask)
    out_dtype = pred.dtype if pred.is_floating_point() else torch.get_default_dtype()
    pred = pred.flatten(1)
    target = target.flatten(1).to(pred.device)
    # Checked in the input dtype and zeroed in place in fresh float64 copies: the fewest passes over and
    # allocations of full-size maps (this runs on every pixel of every image).
    valid = torch.isfinite(pred) & torch.isfinite(target)
    if mask is not None:
        valid &= mask.flatten(1).to(device=pred.device, dtype=torch.bool)
    invalid = ~valid
    p = pred.to(torch.float64, copy=True).masked_fill_(invalid, 0.0)
    t = target.to(torch.float64, copy=True).masked_fill_(invalid, 0.0)
    return p, t, valid, out_dtype


def _weighted_scale_shift(p: Tensor, t: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least squares t ~ scale * p + shift over the last dim: ... x N -> scale, shift, degenerate.

    ``p`` and ``t`` must be finite where ``w > 0`` (float64 recommended); ``w`` is a 0/1 mask or
    non-negative weights, broadcastable against ``p``. Degenerate rows (fewer than 2 points with
    positive weight, or constant p) get scale 0 and shift = weighted mean of t; rows with no weight at
    all get scale 1, shift 0.
    """
    w = w.to(p.dtype)
    p, t, w = torch.broadcast_tensors(p, t, w)
    count = (w > 0).sum(-1)
    wsum = w.sum(-1)
    safe_wsum = wsum.clamp_min(torch.finfo(p.dtype).tiny)
    mean_p = (w * p).sum(-1) / safe_wsum
    mean_t = (w * t).sum(-1) / safe_wsum
    # Centred moments: far better conditioned than the raw normal equations when |mean| >> spread.
    dp = p - mean_p.unsqueeze(-1)
    dt = t - mean_t.unsqueeze(-1)
    var_p = (w * dp * dp).sum(-1)
    cov = (w * dp * dt).sum(-1)
    scale_p = torch.where(w > 0, p.abs(), 0.0).amax(-1) if p.shape[-1] > 0 else torch.zeros_like(wsum)
    degenerate = (count < 2) | (var_p <= wsum * (_REL_SPREAD_TOL * scale_p) ** 2)
    scale = cov / torch.where(degenerate, torch.ones_like(var_p), var_p)
    shift = mean_t - scale * mean_p
    empty = count == 0
    scale = torch.where(degenerate, empty.to(p.dtype), scale)
    shift = torch.where(degenerate, torch.where(empty, torch.zeros_like(mean_t), mean_t), shift)
    return scale, shift, degenerate


def lstsq_scale_shift(
    pred: Tensor, target: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image least-squares fit: pred, target, mask B x H x W or B x N -> scale, shift, degenerate (B,).

    Minimises ``sum over valid of (scale * pred + shift - target) ** 2`` for each image, where valid is
    ``mask`` (all True if None) and pred, target finite. Solved in closed form in float64 for all images at
    once; ``scale`` and ``shift`` come back in pred's dtype, ``degenerate`` is bool.

    Degenerate images (fewer than 2 valid points, or pred constant over the valid points) have no unique
    solution; they are flagged and get the best defined fallback instead of NaN:
    ``scale = 0, shift = mean(target over valid)`` when there is at least one valid point (the
    least-squares optimum among constant predictions), and ``scale = 1, shift = 0`` (identity) when there
    is none.
    """
    p, t, valid, out_dtype = _prepare_inputs(pred, target, mask)
    scale, shift, degenerate = _weighted_scale_shift(p, t, valid)
    return scale.to(out_dtype), shift.to(out_dtype), degenerate


_METHODS = ("lstsq", "ransac")
_SUPPORTS = ("all", "extremes")
_BACKENDS = ("torch", "sklearn")
# Order statistics on the CPU: rows longer than this many sample points are bracketed from a strided sample
# first (then only the points inside the bracket are partitioned), shorter ones are partitioned directly.
_SAMPLE_POINTS = 16384
# Half-width of the bracket in standard deviations of a sample rank (binomial), plus a few points.
_BRACKET_SIGMAS = 5.0


@dataclass(frozen=True)
class ScaleShiftFit:
    """Result of ``fit_scale_shift``; unpacks as ``scale, shift, inliers = fit``.

    - ``scale``, ``shift``: (B,), in pred's dtype: ``target ~ scale * pred + shift``.
    - ``inliers``: bool, pred's shape: the points the final least-squares fit used.
    - ``fallback``: (B,) bool: the requested fit was impossible (too few valid or support points, constant
      pred, no RANSAC consensus) and the image got the fallback (least squares on all valid points, or the
      identity when even that is degenerate).
    - ``support_count``: (B,) int64: valid points taking part in the fit (all valid, or the extremes).
    - ``inlier_ratio``: (B,) ``inliers / support_count``; 1 for least squares, 0 for a fallback.
    - ``trials``: (B,) int64: RANSAC hypotheses scored before the adaptive stop (sklearn's ``n_trials_``);
      0 for least squares.
    """

    scale: Tensor
    shift: Tensor
    inliers: Tensor
    fallback: Tensor
    support_count: Tensor
    inlier_ratio: Tensor
    trials: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.scale, self.shift, self.inliers))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass(frozen=True)
class ScaleShiftFitOptions:
    """The options of ``fit_scale_shift`` in one value that a config can hold; validated when built.

    ``fit_scale_shift(pred, target, mask, options)`` or ``fit_scale_shift(pred, target, mask, **asdict(options))``.

    - ``method``: ``"lstsq"`` (closed form) or ``"ransac"`` (then a least-squares refit on the inliers).
    - ``support``: ``"all"`` valid points or the ``"extremes"``: target strictly below its per-image
      ``percentiles[0]`` or strictly above its ``percentiles[1]`` (numpy's linear interpolation).
    - ``backend``: ``"torch"`` (batched, any device) or ``"sklearn"`` (``RANSACRegressor``, the reference).
    - ``max_trials``, ``min_samples``, ``residual_threshold`` (target units, inlier if ``<=``), ``seed``: RANSAC.
    """

    method: str = "lstsq"
    support: str = "all"
    percentiles: tuple[float, float] = (10, 90)
    backend: str = "torch"
    max_trials: int = 1000
    min_samples: int = 50
    residual_threshold: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "percentiles", tuple(self.percentiles))  # a config may give a list
        check_choice("method", self.method, _METHODS)
        check_choice("support", self.support, _SUPPORTS)
        check_choice("backend", self.backend, _BACKENDS)
        low_high = self.percentiles
        if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {low_high!r}")
        for name, least in (("max_trials", 1), ("min_samples", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                why = " (a line needs two points)" if name == "min_samples" else ""
                raise ValueError(f"{name} must be an int >= {least}{why}, got {value!r}")
        if not (math.isfinite(self.residual_threshold) and self.residual_threshold >= 0):
            raise ValueError(f"residual_threshold must be finite and >= 0, got {self.residual_threshold!r}")


def _valid_mask(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor | None:
    """Entries that count: pred, target, mask B x N -> bool B x N, or None when every entry counts."""
    # Two sums are finite exactly when no NaN or inf is present (or, rarely, when huge values overflow: then
    # the elementwise test below decides): a read-only pass instead of the much slower elementwise isfinite.
    if bool(torch.isfinite(pred.sum() + target.sum())):
        valid = None
    else:
        valid = torch.isfinite(pred) & torch.isfinite(target)
    if mask is not None:
        mask = mask.flatten(1).to(device=pred.device, dtype=torch.bool)
        valid = mask if valid is None else valid & mask
    return None if valid is None or bool(valid.all()) else valid


def _order_statistics(values: np.ndarray, ranks: tuple[int, int]) -> tuple[float, float]:
    """The values of two adjacent 0-based ranks of a 1-D array, as ``np.sort(values)[ranks]``, in O(n).

    Long rows: a bracket around the ranks from a strided sample, then a partition of the points inside it
    only; a bracket that misses (checked by counting) falls back to partitioning the whole row.
    """
    n = values.size
    if n > 4 * _SAMPLE_POINTS:
        sample = values[:: n // _SAMPLE_POINTS]
        m = sample.size
        centre = ranks[0] * (m - 1) / max(n - 1, 1)
        q = centre / max(m - 1, 1)
        half = _BRACKET_SIGMAS * math.sqrt(m * q * (1 - q)) + 4
        first, last = math.floor(centre - half), math.ceil(centre + 1 + half)
        ends = np.partition(sample, [max(first, 0), min(last, m - 1)])
        low = ends[first] if first >= 0 else -np.inf
        high = ends[last] if last < m else np.inf
        below = int(np.count_nonzero(values < low))
        inside = values[np.flatnonzero((values >= low) & (values <= high))]
        local = (ranks[0] - below, ranks[1] - below)
        if 0 <= local[0] and local[1] < inside.size:
            part = np.partition(inside, local)
            return part[local[0]].item(), part[local[1]].item()
    part = np.partition(values, ranks)
    return part[ranks[0]].item(), part[ranks[1]].item()


def _percentile_ranks(percentile: float, n: int) -> tuple[int, int, float]:
    """numpy's linear-interpolation percentile of n sorted values: ranks below and above, weight of the upper."""
    position = percentile / 100 * (n - 1)
    below = math.floor(position)
    return below, min(below + 1, n - 1), position - below


def _extremes_numpy(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Values strictly below the low or above the high percentile (numpy's linear interpolation): 1-D -> bool.

    The percentile lies between the two order statistics it interpolates, and no value lies strictly between
    those, so each strict comparison is one against an order statistic: no rounding of the bound matters.
    """
    k, k1, weight = _percentile_ranks(percentiles[0], values.size)
    below, above = _order_statistics(values, (k, k1))
    low = values <= below if weight > 0 and above > below else values < below
    j, j1, _ = _percentile_ranks(percentiles[1], values.size)
    below, above = _order_statistics(values, (j, j1))
    high = values >= above if above > below else values > above
    return low | high


def _numpy(x: Tensor) -> np.ndarray:
    """A CPU float tensor as a float32 or float64 numpy array (a view where it can be)."""
    return x.detach().numpy() if x.dtype in (torch.float32, torch.float64) else x.detach().double().numpy()


def _support_points_numpy(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CPU support selection and packing, image by image in numpy: p, t, valid B x N -> idx, pc, tc, count.

    ``idx`` B x W (padding N) and the float64 values ``pc``, ``tc`` B x W (padding 0) of each image's support
    points packed to the front, ``count`` (B,). numpy's comparisons, ``flatnonzero`` and takes run several
    times faster than torch's on the CPU (measured), and these full-resolution passes are most of a fit's time.
    """
    batch, n = t.shape
    values = _numpy(t)
    keep_rows = None if valid is None else valid.numpy()

    def select(b: int) -> np.ndarray:
        base = None if keep_rows is None else np.flatnonzero(keep_rows[b])
        row = values[b] if base is None else values[b, base]
        if support == "all" or row.size == 0:
            return np.arange(n) if base is None else base
        chosen = np.flatnonzero(_extremes_numpy(row, percentiles))
        return chosen if base is None else base[chosen]

    # numpy releases the GIL in these loops: the images run on torch's intra-op thread count.
    workers = min(batch, torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(select, range(batch)))
    else:
        rows = [select(b) for b in range(batch)]
    count = torch.tensor([r.size for r in rows], dtype=torch.long)
    width = int(count.max()) if batch else 0
    idx = np.full((batch, width), n, dtype=np.int64)
    pc, tc = np.zeros((batch, width)), np.zeros((batch, width))
    for b, (chosen, row_p) in enumerate(zip(rows, _numpy(p), strict=True)):
        idx[b, : chosen.size] = chosen
        pc[b, : chosen.size] = row_p[chosen]
        tc[b, : chosen.size] = values[b, chosen]
    return torch.from_numpy(idx), torch.from_numpy(pc), torch.from_numpy(tc), count


def _compact(chosen: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of each row's chosen points, packed to the front: bool B x N -> idx B x W (padding N), count (B,)."""
    batch, n = chosen.shape
    rows, cols = chosen.nonzero(as_tuple=True)
    count = chosen.sum(1)
    slot = torch.arange(rows.numel(), device=chosen.device) - (count.cumsum(0) - count)[rows]
    idx = torch.full((batch, int(count.max()) if batch else 0), n, dtype=torch.long, device=chosen.device)
    idx[rows, slot] = cols
    return idx, count


def _support_points_torch(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched support selection and packing in torch (GPUs): the outputs of ``_support_points_numpy``.

    The same rule as ``_extremes_numpy``, with the order statistics read off one sort of every row.
    """
    idx, count = _compact(_support_mask_torch(t, valid, support, percentiles))
    used = torch.arange(idx.shape[1], device=idx.device) < count[:, None]
    gather = idx.clamp_max(max(t.shape[1] - 1, 0))
    pc = torch.where(used, p.gather(1, gather).double(), 0.0)
    tc = torch.where(used, t.gather(1, gather).double(), 0.0)
    return idx, pc, tc, count


def _support_mask_torch(t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]) -> Tensor:
    """The support points of ``_extremes_numpy``'s rule, batched: t, valid B x N -> bool B x N."""
    valid = torch.ones_like(t, dtype=torch.bool) if valid is None else valid
    if support == "all" or t.numel() == 0:
        return valid
    n = valid.sum(1, keepdim=True)
    ordered = torch.where(valid, t, torch.inf).sort(1).values

    def ranks(percentile: float) -> tuple[Tensor, Tensor, Tensor]:
        position = percentile / 100 * (n - 1).clamp_min(0).double()
        below = position.floor()
        upper = torch.minimum(below.long() + 1, (n - 1).clamp_min(0))
        return ordered.gather(1, below.long()), ordered.gather(1, upper), position - below

    below, above, weight = ranks(percentiles[0])
    low = torch.where((weight > 0) & (above > below), t <= below, t < below)
    below, above, _ = ranks(percentiles[1])
    high = torch.where(above > below, t >= above, t > above)
    return valid & (low | high)


def fit_scale_shift(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    options: ScaleShiftFitOptions | None = None,
    **overrides: Any,
) -> ScaleShiftFit:
    """Per-image fit of ``target ~ scale * pred + shift``: pred, target, mask B x H x W or B x N -> ScaleShiftFit.

    The options are a ``ScaleShiftFitOptions`` (defaults if None) and/or its fields as keywords, which
    override it: ``method``, ``support``, ``percentiles``, ``backend``, ``max_trials``, ``min_samples``,
    ``residual_threshold``, ``seed`` (see ``ScaleShiftFitOptions``).

    Valid points are ``mask`` (all if None) where pred and target are finite. ``support="extremes"`` keeps
    only the valid points whose target is below its per-image ``percentiles[0]`` or above its
    ``percentiles[1]`` (the paper's support points: give the metric map as ``target``).

    ``method="lstsq"`` solves least squares on the support points in closed form. ``method="ransac"`` runs
    RANSAC on them (sklearn's semantics: ``max_trials`` hypotheses through ``min_samples`` random points,
    inliers where ``|scale * pred + shift - target| <= residual_threshold``, most inliers wins, sklearn's
    adaptive early stop at 99 % confidence) and refits least squares on the winner's inliers.
    ``backend="sklearn"`` loops over the images with ``sklearn.linear_model.RANSACRegressor`` (the
    reference); ``backend="torch"`` fits all images and hypotheses at once on pred's device, reproducibly
    for a ``seed`` (an image's hypotheses and stopping trial do not depend on the rest of the batch). Its
    inlier counts are float32 sums, exact up to 2**24 support points per image.

    The fit happens in whatever space pred and target are given in (disparity or depth): the caller
    converts, and ``residual_threshold`` is in the target's units (1/m for metric disparity, m for depth).

    Never raises on bad data: an image with too few valid or support points (< 2 for least squares,
    < ``min_samples`` for RANSAC), constant pred, or no RANSAC consensus gets ``fallback=True`` and least
    squares on all its valid points, or the identity (scale 1, shift 0) when that is degenerate too.
    """
    opts = replace(options or ScaleShiftFitOptions(), **overrides)  # validated again with the overrides
    _check_shapes(pred, target, mask)
    out_dtype = pred.dtype if pred.is_floating_point() else torch.get_default_dtype()
    p, t = pred.flatten(1), target.flatten(1).to(pred.device)
    batch, n = p.shape
    valid = _valid_mask(p, t, mask)
    # Everything after the selection runs on the support points packed to the front of each row (B x W).
    selection = _support_points_numpy if p.device.type == "cpu" else _support_points_torch
    idx, pc, tc, support_count = selection(p, t, valid, opts.support, opts.percentiles)
    used = torch.arange(idx.shape[1], device=p.device) < support_count[:, None]
    if opts.method == "ransac":
        from depthadapt.ransac import ransac_sklearn, ransac_torch  # ransac builds on this module's solver

        ransac = ransac_sklearn if opts.backend == "sklearn" else ransac_torch
        used, found, trials = ransac(
            pc, tc, used, opts.max_trials, opts.min_samples, opts.residual_threshold, opts.seed
        )
    else:
        found, trials = torch.ones_like(support_count, dtype=torch.bool), torch.zeros_like(support_count)
    scale, shift, degenerate = _weighted_scale_shift(pc, tc, used)
    inliers = torch.zeros((batch, n + 1), dtype=torch.bool, device=p.device)
    inliers = inliers.scatter_(1, idx, used)[:, :-1]
    fallback = degenerate | ~found
    if bool(fallback.any()):
        p_all, t_all, valid_all, _ = _prepare_inputs(pred, target, mask)
        all_scale, all_shift, all_degenerate = _weighted_scale_shift(p_all, t_all, valid_all)
        scale = torch.where(fallback, torch.where(all_degenerate, 1.0, all_scale), scale)
        shift = torch.where(fallback, torch.where(all_degenerate, 0.0, all_shift), shift)
        inliers = torch.where(fallback[:, None], valid_all & ~all_degenerate[:, None], inliers)
    inlier_ratio = torch.where(fallback, 0.0, used.sum(1) / support_count.clamp_min(1))
    return ScaleShiftFit(
        scale=scale.to(out_dtype),
        shift=shift.to(out_dtype),
        inliers=inliers.reshape(pred.shape),
        fallback=fallback,
        support_count=support_count,
        inlier_ratio=inlier_ratio.to(out_dtype),
        trials=trials,
    )
