"""Normalisation contexts of the self-training loss: the whole image plus each instance (SA-HDN), and the grid
and depth-range hierarchies of HDN, as B x K x H x W bool masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["depth_range_contexts", "grid_contexts", "instance_contexts"]


def instance_contexts(instances: torch.Tensor, min_area: int, include_image: bool = True) -> torch.Tensor:
    """Normalisation contexts from instance-id maps: B x H x W int (0 = background) -> B x K x H x W bool.

    Context 0 is the whole image (if `include_image`), then one context per instance of area >= `min_area`
    pixels, in increasing id order; images with fewer instances are padded with all-False contexts up to
    the batch's largest K.
    """
    if instances.dim() != 3 or instances.is_floating_point() or instances.dtype == torch.bool:
        raise ValueError(
            f"instances must be a B x H x W integer tensor, got {instances.dtype} {tuple(instances.shape)}"
        )
    batch, height, width = instances.shape
    flat = instances.flatten(1).long()
    if flat.numel() and int(flat.min()) < 0:
        raise ValueError("instances must hold ids >= 0 (0 = background)")
    span = int(flat.max()) + 1 if flat.numel() else 1
    image_index = torch.arange(batch, device=flat.device)
    # One unique over (image, id) keys counts the area of every instance of every image at once.
    keys, areas = torch.unique(flat + span * image_index[:, None], return_counts=True)
    keep = (keys % span != 0) & (areas >= min_area)
    owner, ids = keys[keep] // span, keys[keep] % span
    per_image = torch.bincount(owner, minlength=batch)
    slot = torch.arange(len(ids), device=flat.device) - (per_image.cumsum(0) - per_image)[owner]
    table = torch.full((batch, int(per_image.max()) if batch else 0), -1, dtype=torch.long, device=flat.device)
    table[owner, slot] = ids
    contexts = instances[:, None].long() == table[:, :, None, None]
    if include_image:
        image = torch.ones(batch, 1, height, width, dtype=torch.bool, device=instances.device)
        contexts = torch.cat([image, contexts], dim=1)
    return contexts



def grid_contexts(
    height: int, width: int, levels: Sequence[int] = (1, 2, 4), device: torch.device | str | None = None
) -> torch.Tensor:
    """HDN spatial hierarchy: at each level n the image split into n x n cells -> K x H x W bool, K = sum n^2.

    `levels` are cells per side, HDN's 2^l for l = 0, 1, 2 by default (1 is the whole image). Broadcast
    over the batch by `sa_hdn_loss`.
    """
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"levels must be cells per side >= 1, got {tuple(levels)}")
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    contexts = []
    for n in levels:
        cell = (rows * n // height)[:, None] * n + (cols * n // width)[None, :]
        contexts.append(cell == torch.arange(n * n, device=device)[:, None, None])
    return torch.cat(contexts)



def depth_range_contexts(
    depth_like: torch.Tensor, mask: torch.Tensor | None = None, levels: Sequence[int] = (1, 2, 4)
) -> torch.Tensor:
    """HDN depth-range hierarchy: at each level n, n equal-count quantile groups of the valid pixels' values.

    `depth_like` (e.g. the pseudo-label), `mask`: B x H x W -> B x K x H x W bool, K = sum(levels). Pixels
    with equal values may fall into neighbouring groups (ties are split by position); masked-out pixels are
    in no context.
    """
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"levels must be group counts >= 1, got {tuple(levels)}")
    if depth_like.dim() != 3:
        raise ValueError(f"depth_like must be B x H x W, got {tuple(depth_like.shape)}")
    batch, height, width = depth_like.shape
    flat = depth_like.detach().flatten(1)
    valid = torch.ones_like(flat, dtype=torch.bool) if mask is None else mask.flatten(1)
    order = torch.where(valid, flat, torch.inf).argsort(dim=1, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    count = valid.sum(1, keepdim=True).clamp_min(1)
    contexts = []
    for n in levels:
        group = rank * n // count
        contexts.append((group[:, None] == torch.arange(n, device=flat.device)[:, None]) & valid[:, None])
    return torch.cat(contexts, dim=1).view(batch, -1, height, width)
