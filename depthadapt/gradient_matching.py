"""Multi-scale gradient-matching loss (MiDaS; the Depth Anything V2 training recipe's second term)."""

from __future__ import annotations

import torch
from torch import Tensor

from depthadapt.alignment import lstsq_scale_shift


def gradient_matching_loss(pred: Tensor, target: Tensor, mask: Tensor, scales: int = 4) -> Tensor:
    """Gradient matching between the scale-shift-aligned prediction and the target: B x H x W each -> scalar.

    The prediction is first aligned to the target per image by least squares on `mask` (as the
    scale-and-shift-invariant loss does). With residual R = aligned - target, each scale s = 0 .. scales-1
    (every 2**s-th pixel) adds sum |dR/dx| + |dR/dy| over pixel pairs both in the mask, divided by the
    number of mask pixels at that scale over the batch (MiDaS's batch-based reduction; 0 for an empty mask).
    """
    if pred.shape != target.shape or pred.shape != mask.shape or pred.ndim != 3:
        raise ValueError(
            f"pred, target and mask must all be B x H x W, got {tuple(pred.shape)}, {tuple(target.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    mask = mask.bool()
    scale, shift, _ = lstsq_scale_shift(pred, target, mask)
    residual = torch.where(mask, scale[:, None, None] * pred + shift[:, None, None] - target, 0.0)
    total = pred.new_zeros(())
    for level in range(scales):
        step = 2**level
        r, m = residual[:, ::step, ::step], mask[:, ::step, ::step]
        grad_x = (r[:, :, 1:] - r[:, :, :-1]).abs() * (m[:, :, 1:] & m[:, :, :-1])
        grad_y = (r[:, 1:, :] - r[:, :-1, :]).abs() * (m[:, 1:, :] & m[:, :-1, :])
        count = m.sum()
        if count > 0:
            total = total + (grad_x.sum() + grad_y.sum()) / count
    return total
