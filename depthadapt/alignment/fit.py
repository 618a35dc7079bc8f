"""``fit_scale_shift``: the per-image scale/shift fit of a prediction to a target (batched, torch).

The general entry point of the pseudo-labeller: least squares (``solver``) or RANSAC (``ransac``: sklearn's
``RANSACRegressor`` as the reference, a batched torch RANSAC that follows its semantics), on all valid points
or on the "support" points at the extremes of the target's distribution, with its options in one
``ScaleShiftFitOptions``. ``solver.weighted_scale_shift`` is the building block of every fit.

Speed: a fit's full-resolution work is the validity test, the support selection and its packing
(``support``). On the CPU (least squares, or our RANSAC) each image's whole fit but the solve runs in compiled
kernels (``cpu.rows.fit_rows``, numba) on a pool of threads: no full-size tensor operation between the steps (each
one costs a pass). On a GPU (and for sklearn's RANSAC) the steps run batched in torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from depthadapt.alignment import ransac, support
from depthadapt.alignment.cpu import rows
from depthadapt.alignment.solver import (
    REL_SPREAD_TOL,
    check_choice,
    check_shapes,
    prepare_inputs,
    solve_moments,
    weighted_moments,
    weighted_scale_shift,
)

__all__ = [
    "FitBackend", "FitMethod", "FitSupport", "ScaleShiftFit", "ScaleShiftFitOptions", "ThresholdUnit",
    "fit_scale_shift", "residual_thresholds",
]


FitMethod = Literal["lstsq", "ransac"]
FitSupport = Literal["all", "extremes"]
FitBackend = Literal["torch", "sklearn"]
ThresholdUnit = Literal["target", "support_range"]


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
    - ``residual_threshold``: (B,) the inlier threshold of each image in the target's units
      (``residual_thresholds``; the options' number when that is absolute).
    """

    scale: Tensor
    shift: Tensor
    inliers: Tensor
    fallback: Tensor
    support_count: Tensor
    inlier_ratio: Tensor
    trials: Tensor
    residual_threshold: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.scale, self.shift, self.inliers))


@dataclass(frozen=True)
class ScaleShiftFitOptions:
    """The options of ``fit_scale_shift`` in one value that a config can hold; validated when built.

    ``fit_scale_shift(pred, target, mask, options)`` or ``fit_scale_shift(pred, target, mask, **asdict(options))``.

    - ``method``: ``"lstsq"`` (closed form) or ``"ransac"`` (then a least-squares refit on the inliers).
    - ``support``: ``"all"`` valid points or the ``"extremes"``: target strictly below its per-image
      ``percentiles[0]`` or strictly above its ``percentiles[1]`` (numpy's linear interpolation).
    - ``backend``: ``"torch"`` (ours: batched torch on a GPU, the same rules in compiled kernels on the CPU) or
      ``"sklearn"`` (``RANSACRegressor``, the reference).
    - ``max_trials``, ``min_samples``, ``residual_threshold`` (inlier if ``|residual| <=`` it), ``seed``: RANSAC.
    - ``residual_threshold``: a number (the paper's absolute 0.1) or ``"mad"``: per image the median absolute
      deviation of the support points' targets from their median (sklearn's ``RANSACRegressor`` default).
    - ``threshold_unit``: ``"target"`` (the number is in the target's units) or ``"support_range"`` (the number
      is a fraction of each image's support target range, max - min: a threshold that scales with the image).
    """

    method: FitMethod = "lstsq"
    support: FitSupport = "all"
    percentiles: tuple[float, float] = (10, 90)
    backend: FitBackend = "torch"
    max_trials: int = 1000
    min_samples: int = 50
    residual_threshold: float | Literal["mad"] = 0.1
    threshold_unit: ThresholdUnit = "target"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "percentiles", tuple(self.percentiles))  # a config may give a list
        check_choice("method", self.method, get_args(FitMethod))
        check_choice("support", self.support, get_args(FitSupport))
        check_choice("backend", self.backend, get_args(FitBackend))
        low_high = self.percentiles
        if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {low_high!r}")
        for name, least in (("max_trials", 1), ("min_samples", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                why = " (a line needs two points)" if name == "min_samples" else ""
                raise ValueError(f"{name} must be an int >= {least}{why}, got {value!r}")
        check_choice("threshold_unit", self.threshold_unit, get_args(ThresholdUnit))
        threshold = self.residual_threshold
        if threshold == "mad":
            if self.threshold_unit != "target":
                raise ValueError("residual_threshold 'mad' is in the target's units already: use threshold_unit "
                                 f"'target', got {self.threshold_unit!r}")
        elif (isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold)
              or threshold < 0):
            raise ValueError(f"residual_threshold must be a finite number >= 0 or 'mad', got {threshold!r}")

    @property
    def per_image_threshold(self) -> bool:
        """Whether each image gets its own inlier threshold (``residual_thresholds``)."""
        return self.residual_threshold == "mad" or self.threshold_unit != "target"


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
    reference); ``backend="torch"`` fits all images and hypotheses at once on a GPU (``ransac_torch``) and image
    by image, trial by trial in compiled kernels on the CPU (``cpu.ransac.ransac_row``: the same hypotheses,
    scoring, tie-break and stop), reproducibly for a ``seed`` (an image's hypotheses and stopping trial do not depend on
    the rest of the batch). Its inlier counts are float32 sums, exact up to 2**24 support points per image.

    The fit happens in whatever space pred and target are given in (disparity or depth): the caller
    converts, and ``residual_threshold`` is in the target's units (1/m for metric disparity, m for depth).

    Never raises on bad data: an image with too few valid or support points (< 2 for least squares,
    < ``min_samples`` for RANSAC), constant pred, or no RANSAC consensus gets ``fallback=True`` and least
    squares on all its valid points, or the identity (scale 1, shift 0) when that is degenerate too.
    """
    opts = replace(options or ScaleShiftFitOptions(), **overrides)  # validated again with the overrides
    check_shapes(pred, target, mask)
    if opts.per_image_threshold:  # one fit per image with its own absolute threshold (the fits are per image)
        thresholds = residual_thresholds(pred, target, mask, opts).tolist()
        per_image = [fit_scale_shift(pred[b : b + 1], target[b : b + 1], None if mask is None else mask[b : b + 1],
                                     opts, residual_threshold=threshold, threshold_unit="target")
                     for b, threshold in enumerate(thresholds)]
        return ScaleShiftFit(**{f.name: torch.cat([getattr(fit, f.name) for fit in per_image])
                                for f in fields(ScaleShiftFit)})
    out_dtype = pred.dtype if pred.is_floating_point() else torch.get_default_dtype()
    p, t = pred.flatten(1), target.flatten(1).to(pred.device)
    if p.device.type == "cpu" and (opts.method == "lstsq" or opts.backend == "torch"):
        inliers, support_count, found, trials, moments = _fit_compiled(p, t, mask, opts)
    else:
        inliers, support_count, found, trials, moments = _fit_batched(p, t, support.valid_mask(p, t, mask), opts)
    scale, shift, degenerate = solve_moments(*moments)
    fallback = degenerate | ~found
    if bool(fallback.any()):
        p_all, t_all, valid_all, _ = prepare_inputs(pred, target, mask)
        all_scale, all_shift, all_degenerate = weighted_scale_shift(p_all, t_all, valid_all)
        scale = torch.where(fallback, torch.where(all_degenerate, 1.0, all_scale), scale)
        shift = torch.where(fallback, torch.where(all_degenerate, 0.0, all_shift), shift)
        inliers = torch.where(fallback[:, None], valid_all & ~all_degenerate[:, None], inliers)
    inlier_ratio = torch.where(fallback, 0.0, moments[0] / support_count.clamp_min(1))
    return ScaleShiftFit(
        scale=scale.to(out_dtype),
        shift=shift.to(out_dtype),
        inliers=inliers.reshape(pred.shape),
        fallback=fallback,
        support_count=support_count,
        inlier_ratio=inlier_ratio.to(out_dtype),
        trials=trials,
        residual_threshold=torch.full_like(scale, float(opts.residual_threshold), dtype=out_dtype),
    )


def residual_thresholds(pred: Tensor, target: Tensor, mask: Tensor | None, options: ScaleShiftFitOptions) -> Tensor:
    """Each image's RANSAC inlier threshold in the target's units: pred, target, mask B x H x W or B x N -> (B,)
    float64. The options' number (``threshold_unit="target"``), that fraction of the support targets' range
    (``"support_range"``), or their median absolute deviation (``"mad"``); 0 for an image without support points."""
    p, t = pred.flatten(1), target.flatten(1).to(pred.device)
    if not options.per_image_threshold:
        return torch.full((p.shape[0],), float(options.residual_threshold), dtype=torch.float64)
    selection = support.support_points_cpu if p.device.type == "cpu" else support.support_points_torch
    _, _, tc, count = selection(p, t, support.valid_mask(p, t, mask), options.support, options.percentiles)
    out = []
    for values in (row[:n].cpu().numpy() for row, n in zip(tc, count.tolist(), strict=True)):
        if values.size == 0:
            out.append(0.0)
        elif options.residual_threshold == "mad":
            out.append(float(np.median(np.abs(values - np.median(values)))))
        else:
            out.append(float(options.residual_threshold) * float(values.max() - values.min()))
    return torch.tensor(out, dtype=torch.float64)


_Moments = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _fit_batched(
    p: Tensor, t: Tensor, valid: Tensor | None, opts: ScaleShiftFitOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, _Moments]:
    """The fit but the solve, batched (GPU; sklearn's RANSAC): p, t, valid B x N -> the points used B x N, support
    count, found, trials (B,), and the ``weighted_moments`` of the points used."""
    batch, n = p.shape
    # Everything after the selection runs on the support points packed to the front of each row (B x W).
    selection = support.support_points_cpu if p.device.type == "cpu" else support.support_points_torch
    idx, pc, tc, support_count = selection(p, t, valid, opts.support, opts.percentiles)
    used = torch.arange(idx.shape[1], device=p.device) < support_count[:, None]
    if opts.method == "ransac":
        run = ransac.ransac_sklearn if opts.backend == "sklearn" else ransac.ransac_torch
        used, found, trials = run(
            pc, tc, used, opts.max_trials, opts.min_samples, opts.residual_threshold, opts.seed
        )
    else:
        found, trials = torch.ones_like(support_count, dtype=torch.bool), torch.zeros_like(support_count)
    moments = weighted_moments(pc, tc, used)
    inliers = torch.zeros((batch, n + 1), dtype=torch.bool, device=p.device)
    return inliers.scatter_(1, idx, used)[:, :-1], support_count, found, trials, moments


def _fit_compiled(
    p: Tensor, t: Tensor, mask: Tensor | None, opts: ScaleShiftFitOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, _Moments]:
    """``_fit_batched`` on the CPU, image by image in compiled kernels (``cpu.rows.fit_rows``: per image the finiteness
    test, the selection, RANSAC by ``ransac_torch``'s rules, the moments and the scatter, no full-size tensor in
    between) on torch's intra-op thread count. A batch with a NaN or inf is fitted again on the valid points of the
    full test."""
    values, preds = support.kernel_arrays(p, t)
    u = ransac.uniforms(opts.seed, opts.max_trials, opts.min_samples).numpy() if opts.method == "ransac" else None

    def fit(valid: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        return rows.fit_rows(
            values, preds, None if valid is None else np.ascontiguousarray(valid.numpy()), opts.support == "extremes",
            opts.percentiles, u, ransac.stop_ratios(opts.max_trials, opts.min_samples).numpy(),
            float(opts.residual_threshold), REL_SPREAD_TOL,
        )

    inliers, results = fit(support.valid_mask(p, t, mask, finite=True))
    if results[:, 0].min(initial=0) < 0:  # a NaN or inf: again, on the valid points of the full test
        inliers, results = fit(support.valid_mask(p, t, mask))
    result = torch.from_numpy(results)
    support_count, found, trials = result[:, 0].long(), result[:, 1].bool(), result[:, 2].long()
    count, mean_p, mean_t, var_p, cov = result[:, 3:].unbind(1)
    return torch.from_numpy(inliers), support_count, found, trials, (count, count, mean_p, mean_t, var_p, cov)
