"""Scale/shift alignment of a prediction to a target (batched, torch).

Closed-form weighted least squares lives here. The private helpers ``_prepare_inputs`` (validation,
flattening, validity mask) and ``_weighted_scale_shift`` (a solver that reduces over the last dim and
broadcasts over any leading dims, e.g. B x trials x N) are the building blocks meant to be reused by the
RANSAC fitter and ``fit_scale_shift``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lstsq_scale_shift"]

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
    batch = pred.shape[0]
    p = pred.reshape(batch, -1).to(torch.float64)
    t = target.reshape(batch, -1).to(device=p.device, dtype=torch.float64)
    valid = torch.isfinite(p) & torch.isfinite(t)
    if mask is not None:
        valid &= mask.reshape(batch, -1).to(device=p.device, dtype=torch.bool)
    p = torch.where(valid, p, torch.zeros((), dtype=p.dtype, device=p.device))
    t = torch.where(valid, t, torch.zeros((), dtype=t.dtype, device=t.device))
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
