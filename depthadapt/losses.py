"""Training losses for depth models."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from depthadapt.alignment import lstsq_scale_shift


def _sort_within_segments(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Permutation sorting float32 `values` (M) by (segment, value), ties by position: M -> M int64."""
    # One int64 sort instead of two stable ones: the float32 bit pattern, remapped to preserve order for
    # negative values, goes into the low 32 bits and the segment into the high ones.
    bits = values.detach().view(torch.int32).long()
    ordered = torch.where(bits < 0, -(2**31) - 1 - bits, bits) + 2**31
    return (ordered + (segment << 32)).argsort(stable=True)


def _segment_median_normalise(
    values: torch.Tensor, segment: torch.Tensor, num_segments: int, eps: float
) -> torch.Tensor:
    """(x - median) / (mean |x - median| + eps) within each segment: M >= 1 values, M segment ids -> M float32.

    The median is the lower one, as `torch.median`. Memory and time grow with M, the total size of the
    segments, not with num_segments x pixels.
    """
    values = values.float()
    count = torch.bincount(segment, minlength=num_segments)
    start = count.cumsum(0) - count
    order = _sort_within_segments(values, segment)
    # Empty segments get some entry's value as median; no entry reads it.
    median = values[order[(start + (count - 1).clamp_min(0) // 2).clamp_max(len(values) - 1)]]
    centred = values - median[segment]
    deviation = values.new_zeros(num_segments).index_add(0, segment, centred.abs()) / count.clamp_min(1)
    return centred / (deviation[segment] + eps)


def _median_normalise(x: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """(x - median) / (mean |x - median| + eps) per image over the mask: B x N -> B x N float32, 0 off the mask."""
    rows, cols = mask.nonzero(as_tuple=True)
    normalised = _segment_median_normalise(x[rows, cols], rows, x.shape[0], eps)
    return x.new_zeros(x.shape, dtype=torch.float32).index_put((rows, cols), normalised)


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


def sa_hdn_loss(
    pred: torch.Tensor,
    pseudo_label: torch.Tensor,
    contexts: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    trim: float = 0.0,
) -> torch.Tensor:
    """Semantics-aware hierarchical depth normalisation loss (WeSTAR): B x H x W disparities -> scalar.

    Every context (B x K x H x W or K x H x W bool, e.g. from `instance_contexts`, `grid_contexts` or
    `depth_range_contexts`) median-normalises prediction and pseudo-label separately over its pixels within
    `mask` (B x H x W, default all). A pixel's loss is the mean |difference| over the contexts covering it;
    the result is the mean over the valid pixels covered by at least one context (0 if there are none). ``trim``
    in [0, 1): each image's largest pixel losses, that share of its covered pixels, are left out (MiDaS's trimmed
    loss: where the pseudo-label disagrees most, it is most likely wrong).
    All contexts of all images are normalised at once as segments of one list of (context, pixel) entries,
    so memory and time grow with the summed context areas, not with K x H x W.
    """
    if pred.dim() != 3 or pseudo_label.shape != pred.shape:
        raise ValueError(
            f"pred and pseudo_label must be B x H x W, got {tuple(pred.shape)}, {tuple(pseudo_label.shape)}"
        )
    batch, height, width = pred.shape
    if contexts.dim() == 3:
        contexts = contexts.unsqueeze(0)
    if contexts.dim() != 4 or contexts.shape[-2:] != pred.shape[-2:] or contexts.shape[0] not in (1, batch):
        raise ValueError(
            f"contexts must be B x K x H x W or K x H x W for pred {tuple(pred.shape)}, got {tuple(contexts.shape)}"
        )
    if not 0 <= trim < 1:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    if mask is not None and mask.shape != pred.shape:
        raise ValueError(f"mask must be {tuple(pred.shape)} like pred, got {tuple(mask.shape)}")
    pixels = height * width
    members = contexts.reshape(contexts.shape[0], -1, pixels).bool()
    if mask is not None:
        members = members & mask.reshape(batch, 1, pixels)
    image, context, pixel = members.expand(batch, -1, -1).nonzero(as_tuple=True)
    num_contexts = members.shape[1]
    segment = image * num_contexts + context
    flat = image * pixels + pixel
    coverage = torch.bincount(flat, minlength=batch * pixels)
    covered = int((coverage > 0).sum())
    if covered == 0:
        return pred.sum() * 0.0
    normalised = [
        _segment_median_normalise(x.reshape(-1)[flat], segment, batch * num_contexts, eps) for x in (pred, pseudo_label)
    ]
    entry_loss = (normalised[0] - normalised[1]).abs() * (1.0 / coverage[flat])  # x * (1 / c): the fits' rounding
    if trim == 0:
        return entry_loss.sum() / covered
    pixel_loss = entry_loss.new_zeros(batch * pixels).index_add(0, flat, entry_loss).reshape(batch, pixels)
    kept = [losses[is_covered].sort().values[: max(1, round(int(is_covered.sum()) * (1 - trim)))]
            for losses, is_covered in zip(pixel_loss, coverage.reshape(batch, pixels) > 0, strict=True)]
    return torch.cat(kept).mean()


EqualPairs = Literal["squared", "hinge"]
"""How the ordinal loss treats a pair answered "equal" (see ``ordinal_loss``)."""


def ordinal_loss(
    pred: torch.Tensor, pairs: torch.Tensor, margin: float = 0.0, equal: EqualPairs = "squared"
) -> torch.Tensor:
    """Ordinal ranking loss on disparity: pred B x H x W, pairs B x P x 5 (y1, x1, y2, x2, label) -> scalar.

    Label +1: point 1 is farther, i.e. has the smaller disparity: max(0, d1 - d2 + margin). Label -1:
    max(0, d2 - d1 + margin). Label 0 (equal): ``equal`` ``squared``, (d1 - d2)^2 (Chen et al.'s "Depth in the
    Wild" loss), or ``hinge``, max(0, |d1 - d2| - margin): "equal" as the answer of someone who cannot tell depths
    within the margin apart, which leaves such pairs free within it. Rows with y1 < 0 are padding (the batch
    convention pads with y1 = -1). Mean over the valid pairs of the batch; 0 (with a graph) if none.
    """
    if pred.dim() != 3 or pairs.dim() != 3 or pairs.shape[-1] != 5 or pairs.shape[0] != pred.shape[0]:
        raise ValueError(f"pred must be B x H x W and pairs B x P x 5, got {tuple(pred.shape)}, {tuple(pairs.shape)}")
    valid = pairs[..., 0] >= 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    rows = pairs[valid]
    image = torch.arange(pairs.shape[0], device=pairs.device)[:, None].expand_as(valid)[valid]
    coords = rows[:, :4].round().long()
    height, width = pred.shape[1:]
    bounds = torch.tensor([height, width, height, width], device=coords.device)
    if not bool(((coords >= 0) & (coords < bounds)).all()):
        raise ValueError(f"ordinal pairs with coordinates outside the {height} x {width} prediction")
    y1, x1, y2, x2 = coords.unbind(1)
    label = rows[:, 4].float()
    if not bool(((label == 0) | (label.abs() == 1)).all()):
        raise ValueError("ordinal labels must be -1, 0 or +1")
    difference = pred[image, y1, x1].float() - pred[image, y2, x2].float()
    ranking = torch.relu(label * difference + margin)
    same = difference.square() if equal == "squared" else torch.relu(difference.abs() - margin)
    return torch.where(label == 0, same, ranking).mean()


def lora_regularizer(model: nn.Module) -> torch.Tensor:
    """WeSTAR weight regulariser: sum over peft LoRA layers and active adapters of ||(alpha / r) B A||_F^2.

    Computed as scaling^2 * sum((B^T B) * (A A^T)) on r x r matrices, never forming the full update.
    Returns a 0-dim tensor, zero when the model has no LoRA layer.
    """
    # peft imports transformers (seconds); only this function needs it.
    from peft.tuners.lora import LoraLayer

    terms = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            a = module.lora_A[adapter].weight.flatten(1)
            b = module.lora_B[adapter].weight.flatten(1)
            terms.append(module.scaling[adapter] ** 2 * ((b.T @ b) * (a @ a.T)).sum())
    if not terms:
        parameter = next(model.parameters(), None)
        return torch.zeros((), device=None if parameter is None else parameter.device)
    return torch.stack(terms).sum()


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
