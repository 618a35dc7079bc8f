"""Training losses for depth models."""

from __future__ import annotations

import torch


def _median_normalise(x: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """(x - median) / (mean |x - median| + eps) per image over the mask: B x N -> B x N."""
    masked = torch.where(mask, x, torch.nan)
    median = masked.nanmedian(dim=1, keepdim=True).values
    deviation = torch.where(mask, (x - median).abs(), 0).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
    return (x - median) / (deviation + eps)


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale-and-shift-invariant L1 (MiDaS / Depth Anything): median-normalise both per image, compare.

    `pred`, `target`, `mask`: B x H x W (target and pred in the same space, e.g. disparity). Images with no
    valid pixel contribute nothing; returns a scalar.
    """
    pred, target, mask = pred.flatten(1), target.flatten(1), mask.flatten(1)
    count = mask.sum(1)
    if not bool((count > 0).any()):
        return pred.sum() * 0.0
    diff = (_median_normalise(pred, mask, eps) - _median_normalise(target, mask, eps)).abs()
    per_image = torch.where(mask, diff, 0).sum(1) / count.clamp_min(1)
    return per_image[count > 0].mean()


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lambd: float = 0.5) -> torch.Tensor:
    """Scale-invariant log loss of Depth Anything V2 metric training, over all valid pixels of the batch.

    sqrt(mean(g^2) - lambd * mean(g)^2) with g = log(target) - log(pred); B x H x W metres -> scalar.
    """
    if not bool(mask.any()):
        return pred.sum() * 0.0
    diff_log = torch.log(target[mask]) - torch.log(pred[mask].clamp_min(1e-6))
    return torch.sqrt((diff_log.pow(2).mean() - lambd * diff_log.mean().pow(2)).clamp_min(1e-12))
