"""Scale/shift alignment of a prediction to a target (batched, torch).

``lstsq_scale_shift`` is the closed-form weighted least-squares fit. ``fit_scale_shift`` is the general
entry point of the pseudo-labeller: least squares or RANSAC (``depthadapt.ransac``: sklearn's
``RANSACRegressor`` as the reference, a batched torch RANSAC that follows its semantics), on all valid points
or on the "support" points at the extremes of the target's distribution, with its options in one
``ScaleShiftFitOptions``. ``_weighted_scale_shift`` (a solver that reduces over the last dim and broadcasts
over any leading dims, e.g. B x trials x N) is the building block of every fit.

Speed: a fit's full-resolution work is the validity test, the support selection and its packing
(``depthadapt.support``). On the CPU (least squares, or our RANSAC) each image's whole fit but the solve is one
call of a compiled kernel (``depthadapt.fit_kernels.fit_row``, numba) on torch's intra-op threads: no full-size
tensor operation between the steps (each one costs a pass, and torch's idle threads spin after it, taking the
second core from the kernels). On a GPU (and for sklearn's RANSAC) the steps run batched in torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from depthadapt import support

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


def _moments(p: Tensor, t: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted moments over the last dim: ... x N -> points with weight, weight sum, means, centred var_p, cov."""
    differentiable = torch.is_grad_enabled() and (p.requires_grad or t.requires_grad)  # e.g. a scale-free loss
    if (w.dtype == torch.bool and p.device.type == "cpu" and p.ndim == 2 and p.shape == t.shape == w.shape
            and not differentiable):
        # The refit over every packed support point: one compiled two-pass kernel per row on the CPU.
        from depthadapt import fit_kernels, support

        p_rows, t_rows, w_rows = p.detach().double().numpy(), t.detach().double().numpy(), w.numpy()
        rows = support.map_rows(lambda b: fit_kernels.masked_moments(p_rows[b], t_rows[b], w_rows[b]), p.shape[0])
        count, mean_p, mean_t, var_p, cov = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5).unbind(1)
        return count, count, mean_p.to(p.dtype), mean_t.to(p.dtype), var_p.to(p.dtype), cov.to(p.dtype)
    is_mask = w.dtype == torch.bool
    w = w.to(p.dtype)
    p, t, w = torch.broadcast_tensors(p, t, w)
    # Reductions by vecdot (no product temporaries) and few full-size passes.
    wsum = w.sum(-1)
    count = wsum if is_mask else (w > 0).sum(-1)
    safe_wsum = wsum.clamp_min(torch.finfo(p.dtype).tiny)
    mean_p = torch.linalg.vecdot(w, p) / safe_wsum
    mean_t = torch.linalg.vecdot(w, t) / safe_wsum
    # Centred moments: far better conditioned than the raw normal equations when |mean| >> spread.
    root_w = w if is_mask else w.sqrt()  # a float64 sqrt costs more than the rest of a pass (measured)
    dp = (p - mean_p.unsqueeze(-1)).mul_(root_w)
    dt = (t - mean_t.unsqueeze(-1)).mul_(root_w)
    return count, wsum, mean_p, mean_t, torch.linalg.vecdot(dp, dp), torch.linalg.vecdot(dp, dt)


def _weighted_scale_shift(p: Tensor, t: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least squares t ~ scale * p + shift over the last dim: ... x N -> scale, shift, degenerate.

    ``p`` and ``t`` must be finite where ``w > 0`` (float64 recommended); ``w`` is a 0/1 mask or
    non-negative weights, broadcastable against ``p``. Degenerate rows (fewer than 2 points with
    positive weight, or constant p) get scale 0 and shift = weighted mean of t; rows with no weight at
    all get scale 1, shift 0.
    """
    return _solve(*_moments(p, t, w))


def _solve(count: Tensor, wsum: Tensor, mean_p: Tensor, mean_t: Tensor, var_p: Tensor,
           cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``_weighted_scale_shift`` from the moments of ``_moments`` (any shape ...) -> scale, shift, degenerate."""
    safe_wsum = wsum.clamp_min(torch.finfo(var_p.dtype).tiny)
    # pred's weighted RMS magnitude: "constant" is a spread below _REL_SPREAD_TOL of it
    magnitude_sq = mean_p.square() + var_p / safe_wsum
    degenerate = (count < 2) | (var_p <= wsum * _REL_SPREAD_TOL**2 * magnitude_sq)
    scale = cov / torch.where(degenerate, torch.ones_like(var_p), var_p)
    shift = mean_t - scale * mean_p
    empty = count == 0
    scale = torch.where(degenerate, empty.to(var_p.dtype), scale)
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
    - ``backend``: ``"torch"`` (ours: batched torch on a GPU, the same rules in compiled kernels on the CPU) or
      ``"sklearn"`` (``RANSACRegressor``, the reference).
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
    by image, trial by trial in compiled kernels on the CPU (``fit_kernels.ransac_row``: the same hypotheses,
    scoring, tie-break and stop), reproducibly for a ``seed`` (an image's hypotheses and stopping trial do not depend on
    the rest of the batch). Its inlier counts are float32 sums, exact up to 2**24 support points per image.

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
    if p.device.type == "cpu" and (opts.method == "lstsq" or opts.backend == "torch"):
        inliers, support_count, found, trials, moments = _fit_compiled(p, t, mask, opts)
    else:
        inliers, support_count, found, trials, moments = _fit_batched(p, t, support.valid_mask(p, t, mask), opts)
    scale, shift, degenerate = _solve(*moments)
    fallback = degenerate | ~found
    if bool(fallback.any()):
        p_all, t_all, valid_all, _ = _prepare_inputs(pred, target, mask)
        all_scale, all_shift, all_degenerate = _weighted_scale_shift(p_all, t_all, valid_all)
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
    )


_Moments = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _fit_batched(
    p: Tensor, t: Tensor, valid: Tensor | None, opts: ScaleShiftFitOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, _Moments]:
    """The fit but the solve, batched (GPU; sklearn's RANSAC): p, t, valid B x N -> the points used B x N, support
    count, found, trials (B,), and the ``_moments`` of the points used."""
    batch, n = p.shape
    # Everything after the selection runs on the support points packed to the front of each row (B x W).
    selection = support.support_points_cpu if p.device.type == "cpu" else support.support_points_torch
    idx, pc, tc, support_count = selection(p, t, valid, opts.support, opts.percentiles)
    used = torch.arange(idx.shape[1], device=p.device) < support_count[:, None]
    if opts.method == "ransac":
        from depthadapt import ransac  # ransac builds on this module's solver

        run = ransac.ransac_sklearn if opts.backend == "sklearn" else ransac.ransac_torch
        used, found, trials = run(
            pc, tc, used, opts.max_trials, opts.min_samples, opts.residual_threshold, opts.seed
        )
    else:
        found, trials = torch.ones_like(support_count, dtype=torch.bool), torch.zeros_like(support_count)
    moments = _moments(pc, tc, used)
    inliers = torch.zeros((batch, n + 1), dtype=torch.bool, device=p.device)
    return inliers.scatter_(1, idx, used)[:, :-1], support_count, found, trials, moments


def _fit_compiled(
    p: Tensor, t: Tensor, mask: Tensor | None, opts: ScaleShiftFitOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, _Moments]:
    """``_fit_batched`` on the CPU in one compiled call (``fit_kernels.fit_rows``: per image the finiteness test,
    the selection, RANSAC by ``ransac_torch``'s rules, the moments and the scatter, no full-size tensor in between),
    on torch's OpenMP threads (``depthadapt.omp_team``) or, where those cannot be reached, on ``support.map_rows``'
    threads. A batch with a NaN or inf is fitted again on the valid points of the full test."""
    import numpy as np

    from depthadapt import fit_kernels, omp_team, ransac

    batch, n = p.shape
    values, preds = support.as_numpy(t), support.as_numpy(p)
    dtype = np.float32 if values.dtype == preds.dtype == np.float32 else np.float64
    values, preds = np.ascontiguousarray(values, dtype=dtype), np.ascontiguousarray(preds, dtype=dtype)
    inliers, results = np.empty((batch, n), dtype=bool), np.full((batch, 8), np.nan)  # NaN: not written
    threads = min(batch, torch.get_num_threads())

    def fit(valid: Tensor | None) -> None:
        arguments = (
            values, preds, np.zeros((0, 0), dtype=bool) if valid is None else np.ascontiguousarray(valid.numpy()),
            opts.support == "extremes", *map(float, opts.percentiles), opts.method == "ransac",
            ransac._uniforms(opts.seed, opts.max_trials, opts.min_samples).numpy(),
            ransac._stop_ratios(opts.max_trials, opts.min_samples).numpy(), float(opts.residual_threshold),
            _REL_SPREAD_TOL, inliers, results, np.zeros(1, dtype=np.int64),  # the threads' shared row counter
        )
        if threads > 1 and omp_team.available():
            block, _options = fit_kernels.fit_rows_arguments(*arguments)
            omp_team.run(fit_kernels.fit_rows_entry(dtype).address, block.ctypes.data, threads)
        else:  # each thread runs the same loop, taking the rows off the shared counter
            support.map_rows(lambda _: fit_kernels.fit_rows(*arguments), max(threads, 1))

    fit(support.valid_mask(p, t, mask, finite=True))
    if results[:, 0].min(initial=0) < 0:  # a NaN or inf: again, on the valid points of the full test
        fit(support.valid_mask(p, t, mask))
    if np.isnan(results[:, 0]).any():  # a C callback cannot raise: an image it could not fit is never written
        raise RuntimeError(f"the compiled fit left {int(np.isnan(results[:, 0]).sum())} of {batch} images unfitted "
                           "(out of memory?)")
    result = torch.from_numpy(results)
    support_count, found, trials = result[:, 0].long(), result[:, 1].bool(), result[:, 2].long()
    count, mean_p, mean_t, var_p, cov = result[:, 3:].unbind(1)
    return torch.from_numpy(inliers), support_count, found, trials, (count, count, mean_p, mean_t, var_p, cov)
