"""Which points a scale/shift fit uses: the valid entries, and the "support" at the extremes of the target.

``support_points_cpu`` (CPU: row by row in the compiled kernels of ``depthadapt.alignment.cpu.selection``) and
``support_points_torch`` (any device, batched) select the same points: all valid ones, or those whose target is
strictly below its per-image ``percentiles[0]`` or strictly above ``percentiles[1]`` (numpy's linear
interpolation), packed with their count. Shapes: pred, target, mask B x N.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from depthadapt.alignment.cpu import rows, selection


def valid_mask(pred: Tensor, target: Tensor, mask: Tensor | None, finite: bool = False) -> Tensor | None:
    """Entries that count: pred, target, mask B x N -> bool B x N, or None when every entry counts. ``finite``:
    pred and target are known to be finite (checked elsewhere), only the mask counts."""
    # Two sums are finite exactly when no NaN or inf is present (or, rarely, when huge values overflow: then
    # the elementwise test below decides): a read-only pass instead of the much slower elementwise isfinite.
    if finite or bool(torch.isfinite(pred.sum() + target.sum())):
        valid = None
    else:
        valid = torch.isfinite(pred) & torch.isfinite(target)
    if mask is not None:
        mask = mask.flatten(1).to(device=pred.device, dtype=torch.bool)
        valid = mask if valid is None else valid & mask
    return None if valid is None or bool(valid.all()) else valid


def as_numpy(x: Tensor) -> np.ndarray:
    """A CPU float tensor as a float32 or float64 numpy array (a view where it can be)."""
    return x.detach().numpy() if x.dtype in (torch.float32, torch.float64) else x.detach().double().numpy()


def kernel_arrays(p: Tensor, t: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """pred, target B x N on the CPU -> values (the target), preds: C-contiguous numpy arrays of one dtype, float32
    when both are float32, else float64 (views where they can be): the kernels are compiled for these two only."""
    values, preds = as_numpy(t), as_numpy(p)
    dtype = np.float32 if values.dtype == preds.dtype == np.float32 else np.float64
    return np.ascontiguousarray(values, dtype=dtype), np.ascontiguousarray(preds, dtype=dtype)


def support_points_cpu(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CPU support selection and packing, image by image in compiled kernels: p, t, valid B x N -> idx, pc, tc, count.

    ``idx`` B x W (padding N) and the float64 values ``pc``, ``tc`` B x W (padding 0) of each image's support
    points packed to the front, ``count`` (B,); the rule of ``depthadapt.selection.support_row``. The kernels
    pack into N-wide buffers of the types ``cpu.rows.fit_rows`` uses (int32, the inputs' dtype: one compiled
    specialisation for both callers), widened once for the W columns returned.
    """
    batch, n = t.shape
    values, preds = kernel_arrays(p, t)
    keep_rows = None if valid is None else valid.numpy()
    idx = np.empty((batch, n), dtype=np.int32)
    pc, tc, scratch = (np.empty((batch, size), dtype=values.dtype) for size in (n, n, 2 * n))
    low, high = float(percentiles[0]), float(percentiles[1])

    def select(b: int) -> int:
        if keep_rows is None:
            return selection.support_row(values[b], preds[b], support == "extremes", low, high, idx[b], pc[b], tc[b],
                                           scratch[b])
        base = np.flatnonzero(keep_rows[b])
        count = selection.support_row(
            values[b].take(base), preds[b].take(base), support == "extremes", low, high, idx[b], pc[b], tc[b],
            scratch[b],
        )
        idx[b, :count] = base.take(idx[b, :count])
        return count

    counts = rows.map_rows(select, batch)
    width = max(counts, default=0)
    for b, count in enumerate(counts):
        idx[b, count:width], pc[b, count:width], tc[b, count:width] = n, 0.0, 0.0
    return (torch.from_numpy(idx[:, :width]).long(), torch.from_numpy(pc[:, :width]).double(),
            torch.from_numpy(tc[:, :width]).double(), torch.tensor(counts, dtype=torch.long))


def compact(chosen: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of each row's chosen points, packed to the front: bool B x N -> idx B x W (padding N), count (B,)."""
    batch, n = chosen.shape
    rows, cols = chosen.nonzero(as_tuple=True)
    count = chosen.sum(1)
    slot = torch.arange(rows.numel(), device=chosen.device) - (count.cumsum(0) - count)[rows]
    idx = torch.full((batch, int(count.max()) if batch else 0), n, dtype=torch.long, device=chosen.device)
    idx[rows, slot] = cols
    return idx, count


def support_points_torch(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched support selection and packing in torch (GPUs): the outputs of ``support_points_cpu``.

    The same rule as ``selection.support_row``, with the order statistics read off one sort of every row.
    """
    idx, count = compact(support_mask_torch(t, valid, support, percentiles))
    used = torch.arange(idx.shape[1], device=idx.device) < count[:, None]
    gather = idx.clamp_max(max(t.shape[1] - 1, 0))
    pc = torch.where(used, p.gather(1, gather).double(), 0.0)
    tc = torch.where(used, t.gather(1, gather).double(), 0.0)
    return idx, pc, tc, count


def support_mask_torch(t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]) -> Tensor:
    """The support points of ``selection.support_row``'s rule, batched: t, valid B x N -> bool B x N."""
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
