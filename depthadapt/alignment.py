"""Scale/shift alignment of a prediction to a target (batched, torch).

``lstsq_scale_shift`` is the closed-form weighted least-squares fit. ``fit_scale_shift`` is the general
entry point of the pseudo-labeller: least squares or RANSAC, on all valid points or on the "support"
points at the extremes of the target's distribution, with ``sklearn.linear_model.RANSACRegressor`` as the
reference RANSAC and a batched torch RANSAC (all images and hypotheses at once, any device) that follows
its semantics. The private helpers ``_prepare_inputs`` (validation, flattening, validity mask) and
``_weighted_scale_shift`` (a solver that reduces over the last dim and broadcasts over any leading dims,
e.g. B x trials x N) are the building blocks of both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ScaleShiftFit", "fit_scale_shift", "lstsq_scale_shift"]

# Spread of pred below this fraction of its magnitude counts as "constant": below float32 resolution
# (~6e-8) even after averaging over millions of pixels, so any real variation in the input stays above it.
_REL_SPREAD_TOL = 1e-12


def _prepare_inputs(
    pred: Tensor, target: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Validate and flatten B x H x W (or B x N) inputs -> float64 pred, target (B x N), bool valid, dtype.

    Invalid entries (masked out, NaN or inf in pred or target) are zeroed in the returned values so that
    masked sums never see a NaN; ``valid`` tells which entries count.
    """
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
# sklearn's RANSACRegressor default: stop once an outlier-free sample was drawn with this probability.
_STOP_PROBABILITY = 0.99
# Elements of one B x trials x N scoring chunk: on the CPU small enough to stay in the last-level cache
# (measured fastest), on a GPU large enough to saturate it while staying <= 256 MB of float32.
_CPU_CHUNK_ELEMENTS = 2**21
_GPU_CHUNK_ELEMENTS = 2**26
# Hypotheses are drawn in blocks of doubling size starting here, so an early stop skips most of the drawing.
_FIRST_BLOCK = 64
# Target of the padding slots of the batched RANSAC: residuals beyond any meaningful threshold, yet finite in float32.
_PAD_TARGET = 1e30


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
    """

    scale: Tensor
    shift: Tensor
    inliers: Tensor
    fallback: Tensor
    support_count: Tensor
    inlier_ratio: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.scale, self.shift, self.inliers))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_fit_args(
    method: str,
    support: str,
    percentiles: tuple[float, float],
    backend: str,
    max_trials: int,
    min_samples: int,
    residual_threshold: float,
) -> None:
    """Validate the options of ``fit_scale_shift``; every error names the offending argument."""
    check_choice("method", method, _METHODS)
    check_choice("support", support, _SUPPORTS)
    check_choice("backend", backend, _BACKENDS)
    if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be an int >= 1, got {max_trials!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
        raise ValueError(f"min_samples must be an int >= 2 (a line needs two points), got {min_samples!r}")
    if not (math.isfinite(residual_threshold) and residual_threshold >= 0):
        raise ValueError(f"residual_threshold must be finite and >= 0, got {residual_threshold!r}")


def _support_mask(t: Tensor, valid: Tensor, support: str, percentiles: tuple[float, float]) -> Tensor:
    """Points taking part in the fit: t, valid B x N -> bool B x N.

    ``"extremes"``: valid points whose target is strictly below its per-image low percentile or strictly
    above its high one (linear interpolation, numpy's default), the support points of the paper's eq. (2).
    """
    if support == "all" or valid.numel() == 0:
        return valid
    q = torch.tensor(percentiles, dtype=t.dtype, device=t.device) / 100
    bounds = torch.nanquantile(torch.where(valid, t, torch.nan), q, dim=1)  # 2 x B, NaN for empty images
    return valid & ((t < bounds[0, :, None]) | (t > bounds[1, :, None]))


def _ransac_sklearn(
    p: Tensor, t: Tensor, support: Tensor, max_trials: int, min_samples: int, threshold: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Reference RANSAC, one image at a time: p, t, support B x W -> consensus set bool B x W, found (B,).

    ``support`` must mark a prefix of each row (the compact layout of ``_compact``).
    """
    from sklearn.linear_model import LinearRegression, RANSACRegressor

    inliers = torch.zeros_like(support)
    found = torch.zeros(support.shape[0], dtype=torch.bool, device=support.device)
    for b, n in enumerate(support.sum(1).tolist()):
        ransac = RANSACRegressor(
            estimator=LinearRegression(),
            min_samples=min_samples,
            residual_threshold=threshold,
            max_trials=max_trials,
            stop_probability=_STOP_PROBABILITY,
            random_state=seed,
        )
        try:
            ransac.fit(p[b, :n, None].cpu().numpy(), t[b, :n].cpu().numpy())
        except ValueError:  # fewer points than min_samples, or no hypothesis with an inlier
            continue
        inliers[b, :n] = torch.from_numpy(ransac.inlier_mask_).to(support.device)
        found[b] = True
    return inliers, found


def _compact(support: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Gather indices of each image's support points to the front: B x N -> idx, slot_valid B x width.

    Padding slots hold index N (one past the end) so that scattering through ``idx`` into B x (N + 1) never
    touches a real point.
    """
    batch, n = support.shape
    rows, cols = support.nonzero(as_tuple=True)
    count = support.sum(1)
    slot = torch.arange(rows.numel(), device=support.device) - (count.cumsum(0) - count)[rows]
    idx = torch.full((batch, width), n, dtype=torch.long, device=support.device)
    idx[rows, slot] = cols
    return idx, idx < n


def _sample_subsets(count: Tensor, u: Tensor) -> Tensor:
    """Uniform random k-subsets of range(count[b]) (without replacement): count (B,), u T x k -> B x T x k.

    Floyd's algorithm, vectorised over images and trials, driven by the uniforms ``u`` in [0, 1). Images with
    count < k get subsets of range(k) (callers skip them).
    """
    k = u.shape[1]
    # Step i draws from [0, j_i], j_i = n - k + i; a value taken already is replaced by j_i itself (never
    # drawn before step i).
    j = (count.clamp_min(k)[:, None] - k + torch.arange(k, device=count.device))[:, None, :]  # B x 1 x k
    cand = torch.minimum((u * (j + 1)).long(), j)  # B x T x k
    subsets = torch.empty_like(cand)
    for i in range(k):
        taken = (subsets[:, :, :i] == cand[:, :, i : i + 1]).any(-1)
        subsets[:, :, i] = torch.where(taken, j[:, :, i], cand[:, :, i])
    return subsets


def _hypotheses(p: Tensor, t: Tensor, count: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares lines through random subsets: p, t B x W (compact), count (B,), u T x k -> scale, shift B x T.

    Constant-pred samples get sklearn's LinearRegression answer: scale 0, shift = mean target.
    """
    batch, trials, k = p.shape[0], u.shape[0], u.shape[1]
    subsets = _sample_subsets(count, u).view(batch, -1)
    sample_p = p.gather(1, subsets).view(batch, trials, k)
    sample_t = t.gather(1, subsets).view(batch, trials, k)
    scale, shift, _ = _weighted_scale_shift(sample_p, sample_t, p.new_ones(()))
    return scale, shift


def _stop_counts(count: Tensor, trials: int, k: int) -> Tensor:
    """sklearn's adaptive stop, inverted: count (B,) -> B x trials, the best inlier count that ends trial i + 1.

    sklearn stops after trial i once i >= ceil(log(1 - P) / log(1 - (inliers / count) ** k)), P = 0.99,
    which is: inliers >= count * (1 - (1 - P) ** (1 / i)) ** (1 / k).
    """
    i = torch.arange(1, trials + 1, dtype=torch.float64, device=count.device)
    return torch.ceil(count[:, None].double() * (1 - (1 - _STOP_PROBABILITY) ** (1 / i)) ** (1 / k))


def _abs_residuals(neg_t: Tensor, p: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """|scale * p + shift - t|: neg_t, p B x 1 x W, scale, shift B x T x 1 -> B x T x W (into ``out``)."""
    # Elementwise rather than a K=3 matmul: faster on the CPU, and exact float32 even where TF32 or
    # reduced-precision matmuls are enabled.
    return torch.add(neg_t, shift, out=out).addcmul_(scale, p).abs_()


def _ransac_torch(
    p: Tensor, t: Tensor, support: Tensor, max_trials: int, min_samples: int, threshold: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Batched RANSAC, all images and hypotheses at once: p, t, support B x W -> consensus set, found (B,).

    ``support`` must mark a prefix of each row (the compact layout of ``_compact``). sklearn's semantics:
    hypotheses are least-squares lines through ``min_samples`` points drawn without replacement, a point is
    an inlier when ``|residual| <= threshold``, the best hypothesis has the most inliers (ties: the smaller
    sum of squared inlier residuals, i.e. sklearn's higher R^2 on the inliers whenever the tied hypotheses
    share their inlier set), and an image stops at sklearn's adaptive trial budget. Scoring runs in float32
    on per-image centred values, in chunks of hypotheses.
    """
    batch, width = p.shape
    device = p.device
    count = support.sum(1)
    if width < min_samples:  # not a single image has enough points for a hypothesis
        return torch.zeros_like(support), torch.zeros(batch, dtype=torch.bool, device=device)
    # The uniforms driving the samples come from a seeded CPU generator and are shared by all images: an
    # image's hypotheses depend on the seed and its own points only, not on the device or the rest of the batch.
    u = torch.rand((max_trials, min_samples), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = u.to(device)
    # Centred per image, float32 keeps the residuals accurate whatever the data's offset. Padding slots get
    # t = _PAD_TARGET: never an inlier, and finite, so that masking their residual with 0 gives 0.
    denom = count.clamp_min(1)
    mean_p = (torch.where(support, p, 0.0).sum(1) / denom)[:, None]
    mean_t = (torch.where(support, t, 0.0).sum(1) / denom)[:, None]
    p_row = torch.where(support, p - mean_p, 0.0).float()[:, None]
    neg_t = torch.where(support, mean_t - t, -_PAD_TARGET).float()[:, None]

    best_count = torch.zeros(batch, device=device)
    best_ssr = torch.full((batch,), torch.inf, device=device)
    best_line = torch.zeros((batch, 1, 2), device=device)  # centred scale, shift
    done = count < min_samples
    stop_counts = _stop_counts(count, max_trials, min_samples)
    chunk_elements = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    start = block_start = block_stop = 0
    residual = None
    while start < max_trials:
        if start == block_stop:  # hypotheses in doubling blocks: the work follows the trials actually run
            block_start, block_stop = start, min(max(2 * start, _FIRST_BLOCK), max_trials)
            h_scale, h_shift = _hypotheses(p, t, count, u[block_start:block_stop])
            lines = torch.stack([h_scale, h_shift + h_scale * mean_p - mean_t], -1).float()
            residual = None
        if residual is None:  # (re)slice the images still running
            active = (~done).nonzero().squeeze(1)
            a_p, a_neg_t, a_lines, a_stop = p_row[active], neg_t[active], lines[active], stop_counts[active]
            size = max(1, chunk_elements // (active.numel() * width))
            residual = torch.empty((active.numel(), size, width), device=device)
            spare = torch.empty_like(residual)
        stop = min(start + residual.shape[1], block_stop)
        h = a_lines[:, start - block_start : stop - block_start]
        is_inlier = _abs_residuals(a_neg_t, a_p, h[..., :1], h[..., 1:], out=residual[:, : stop - start])
        n_inl = is_inlier.le_(threshold).sum(-1)
        # sklearn checks its adaptive budget after every trial: a trial is the last one once the best inlier
        # count so far reaches its stop count; the chunk's later hypotheses never happened.
        prev_count = best_count[active]
        last = torch.maximum(n_inl.cummax(1).values, prev_count[:, None]) >= a_stop[:, start:stop]
        n_inl = torch.where((last.cumsum(1) - last.long()) == 0, n_inl, -1.0)
        top = n_inl.amax(1, keepdim=True)
        contender = (top[:, 0] >= 1) & (top[:, 0] >= prev_count)
        if bool(contender.any()):  # the squared residuals only matter for a new best or a tie with it
            res = _abs_residuals(a_neg_t, a_p, h[..., :1], h[..., 1:], out=spare[:, : stop - start])
            ssr = torch.linalg.vector_norm(res.mul_(is_inlier), dim=-1).square()
            j = torch.where(n_inl == top, ssr, torch.inf).argmin(1, keepdim=True)
            top, top_ssr, prev_ssr = top[:, 0], ssr.gather(1, j)[:, 0], best_ssr[active]
            better = contender & ((top > prev_count) | (top_ssr < prev_ssr))
            best_count[active] = torch.where(better, top, prev_count)
            best_ssr[active] = torch.where(better, top_ssr, prev_ssr)
            top_line = h.gather(1, j[:, :, None].expand(-1, 1, 2))
            best_line[active] = torch.where(better[:, None, None], top_line, best_line[active])
        stopped = last.any(1)
        if bool(stopped.any()):
            done[active[stopped]] = True
            if bool(done.all()):
                break
            residual = None
        start = stop

    found = best_count >= 1
    best_res = _abs_residuals(neg_t, p_row, best_line[..., :1], best_line[..., 1:])[:, 0]
    return (best_res <= threshold) & found[:, None], found


def fit_scale_shift(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    method: str = "lstsq",
    support: str = "all",
    percentiles: tuple[float, float] = (10, 90),
    backend: str = "torch",
    max_trials: int = 1000,
    min_samples: int = 50,
    residual_threshold: float = 0.1,
    seed: int = 0,
) -> ScaleShiftFit:
    """Per-image fit of ``target ~ scale * pred + shift``: pred, target, mask B x H x W or B x N -> ScaleShiftFit.

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
    _check_fit_args(method, support, percentiles, backend, max_trials, min_samples, residual_threshold)
    p, t, valid, out_dtype = _prepare_inputs(pred, target, mask)
    chosen = _support_mask(t, valid, support, percentiles)
    support_count = chosen.sum(1)
    # Everything below runs on the support points packed to the front of each row (B x W, W = max count).
    idx, used = _compact(chosen, int(support_count.max()) if chosen.numel() else 0)
    gather = idx.clamp_max(max(p.shape[1] - 1, 0))
    pc, tc = p.gather(1, gather), t.gather(1, gather)
    if method == "ransac":
        ransac = _ransac_sklearn if backend == "sklearn" else _ransac_torch
        used, found = ransac(pc, tc, used, max_trials, min_samples, residual_threshold, seed)
    else:
        found = torch.ones_like(support_count, dtype=torch.bool)
    scale, shift, degenerate = _weighted_scale_shift(pc, tc, used)
    inliers = torch.zeros((p.shape[0], p.shape[1] + 1), dtype=torch.bool, device=p.device)
    inliers = inliers.scatter_(1, idx, used)[:, :-1]
    fallback = degenerate | ~found
    if bool(fallback.any()):
        all_scale, all_shift, all_degenerate = _weighted_scale_shift(p, t, valid)
        scale = torch.where(fallback, torch.where(all_degenerate, 1.0, all_scale), scale)
        shift = torch.where(fallback, torch.where(all_degenerate, 0.0, all_shift), shift)
        inliers = torch.where(fallback[:, None], valid & ~all_degenerate[:, None], inliers)
    inlier_ratio = torch.where(fallback, 0.0, used.sum(1) / support_count.clamp_min(1))
    return ScaleShiftFit(
        scale=scale.to(out_dtype),
        shift=shift.to(out_dtype),
        inliers=inliers.reshape(pred.shape),
        fallback=fallback,
        support_count=support_count,
        inlier_ratio=inlier_ratio.to(out_dtype),
    )
