"""Least-squares scale and shift: the closed-form weighted solver every fit builds on (leaf of the package).

``weighted_scale_shift`` reduces over the last dim and broadcasts over any leading dims (e.g. B x trials x N);
``lstsq_scale_shift`` is the per-image fit on B x H x W maps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from depthadapt.alignment.cpu import moments, rows

__all__ = ["REL_SPREAD_TOL", "check_choice", "check_shapes", "lstsq_scale_shift", "prepare_inputs", "solve_moments",
           "weighted_moments", "weighted_scale_shift"]

# Spread of pred below this fraction of its magnitude counts as "constant": below float32 resolution
# (~6e-8) even after averaging over millions of pixels, so any real variation in the input stays above it.
REL_SPREAD_TOL = 1e-12



def check_shapes(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
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



def prepare_inputs(
    pred: Tensor, target: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Validate and flatten B x H x W (or B x N) inputs -> float64 pred, target (B x N), bool valid, dtype.

    Invalid entries (masked out, NaN or inf in pred or target) are zeroed in the returned values so that
    masked sums never see a NaN; ``valid`` tells which entries count.
    """
    check_shapes(pred, target, mask)
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



def weighted_moments(p: Tensor, t: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted moments over the last dim: ... x N -> points with weight, weight sum, means, centred var_p, cov."""
    differentiable = torch.is_grad_enabled() and (p.requires_grad or t.requires_grad)  # e.g. a scale-free loss
    if (w.dtype == torch.bool and p.device.type == "cpu" and p.ndim == 2 and p.shape == t.shape == w.shape
            and not differentiable):
        # The refit over every packed support point: one compiled two-pass kernel per row on the CPU.
        p_rows, t_rows, w_rows = p.detach().double().numpy(), t.detach().double().numpy(), w.numpy()
        fits = rows.map_rows(lambda b: moments.masked_moments(p_rows[b], t_rows[b], w_rows[b]), p.shape[0])
        count, mean_p, mean_t, var_p, cov = torch.tensor(fits, dtype=torch.float64).reshape(-1, 5).unbind(1)
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



def weighted_scale_shift(p: Tensor, t: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least squares t ~ scale * p + shift over the last dim: ... x N -> scale, shift, degenerate.

    ``p`` and ``t`` must be finite where ``w > 0`` (float64 recommended); ``w`` is a 0/1 mask or
    non-negative weights, broadcastable against ``p``. Degenerate rows (fewer than 2 points with
    positive weight, or constant p) get scale 0 and shift = weighted mean of t; rows with no weight at
    all get scale 1, shift 0.
    """
    return solve_moments(*weighted_moments(p, t, w))



def solve_moments(count: Tensor, wsum: Tensor, mean_p: Tensor, mean_t: Tensor, var_p: Tensor,
           cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``weighted_scale_shift`` from the moments of ``weighted_moments`` (any shape ...) -> scale, shift, degenerate."""
    safe_wsum = wsum.clamp_min(torch.finfo(var_p.dtype).tiny)
    # pred's weighted RMS magnitude: "constant" is a spread below REL_SPREAD_TOL of it
    magnitude_sq = mean_p.square() + var_p / safe_wsum
    degenerate = (count < 2) | (var_p <= wsum * REL_SPREAD_TOL**2 * magnitude_sq)
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
    p, t, valid, out_dtype = prepare_inputs(pred, target, mask)
    scale, shift, degenerate = weighted_scale_shift(p, t, valid)
    return scale.to(out_dtype), shift.to(out_dtype), degenerate



def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")

