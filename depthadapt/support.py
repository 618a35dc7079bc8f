"""Which points a scale/shift fit uses: the valid entries, and the "support" at the extremes of the target.

``support_points_numpy`` (CPU: row by row, O(n) order statistics and ``flatnonzero``) and ``support_points_torch``
(any device, batched) select the same points: all valid ones, or those whose target is strictly below its
per-image ``percentiles[0]`` or strictly above ``percentiles[1]`` (numpy's linear interpolation), packed with
their count. Shapes: pred, target, mask B x N.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

# Order statistics on the CPU: rows longer than this many sample points are bracketed from a strided sample
# first (then only the points inside the bracket are partitioned), shorter ones are partitioned directly.
_SAMPLE_POINTS = 16384
# Half-width of the bracket in standard deviations of a sample rank (binomial), plus a few points.
_BRACKET_SIGMAS = 5.0


def valid_mask(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor | None:
    """Entries that count: pred, target, mask B x N -> bool B x N, or None when every entry counts."""
    # Two sums are finite exactly when no NaN or inf is present (or, rarely, when huge values overflow: then
    # the elementwise test below decides): a read-only pass instead of the much slower elementwise isfinite.
    if bool(torch.isfinite(pred.sum() + target.sum())):
        valid = None
    else:
        valid = torch.isfinite(pred) & torch.isfinite(target)
    if mask is not None:
        mask = mask.flatten(1).to(device=pred.device, dtype=torch.bool)
        valid = mask if valid is None else valid & mask
    return None if valid is None or bool(valid.all()) else valid


def order_statistics(values: np.ndarray, ranks: tuple[int, int]) -> tuple[float, float]:
    """The values of two adjacent 0-based ranks of a 1-D array, as ``np.sort(values)[ranks]``, in O(n).

    Long rows: a bracket around the ranks from a strided sample, then a partition of the points inside it
    only; a bracket that misses (checked by counting) falls back to partitioning the whole row.
    """
    n = values.size
    if n > 4 * _SAMPLE_POINTS:
        sample = values[:: n // _SAMPLE_POINTS]
        m = sample.size
        centre = ranks[0] * (m - 1) / max(n - 1, 1)
        q = centre / max(m - 1, 1)
        half = _BRACKET_SIGMAS * math.sqrt(m * q * (1 - q)) + 4
        first, last = math.floor(centre - half), math.ceil(centre + 1 + half)
        ends = np.partition(sample, [max(first, 0), min(last, m - 1)])
        low = ends[first] if first >= 0 else -np.inf
        high = ends[last] if last < m else np.inf
        below = int(np.count_nonzero(values < low))
        inside = values[np.flatnonzero((values >= low) & (values <= high))]
        local = (ranks[0] - below, ranks[1] - below)
        if 0 <= local[0] and local[1] < inside.size:
            part = np.partition(inside, local)
            return part[local[0]].item(), part[local[1]].item()
    part = np.partition(values, ranks)
    return part[ranks[0]].item(), part[ranks[1]].item()


def percentile_ranks(percentile: float, n: int) -> tuple[int, int, float]:
    """numpy's linear-interpolation percentile of n sorted values: ranks below and above, weight of the upper."""
    position = percentile / 100 * (n - 1)
    below = math.floor(position)
    return below, min(below + 1, n - 1), position - below


def extremes_numpy(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Values strictly below the low or above the high percentile (numpy's linear interpolation): 1-D -> bool.

    The percentile lies between the two order statistics it interpolates, and no value lies strictly between
    those, so each strict comparison is one against an order statistic: no rounding of the bound matters.
    """
    k, k1, weight = percentile_ranks(percentiles[0], values.size)
    below, above = order_statistics(values, (k, k1))
    low = values <= below if weight > 0 and above > below else values < below
    j, j1, _ = percentile_ranks(percentiles[1], values.size)
    below, above = order_statistics(values, (j, j1))
    high = values >= above if above > below else values > above
    return low | high


def as_numpy(x: Tensor) -> np.ndarray:
    """A CPU float tensor as a float32 or float64 numpy array (a view where it can be)."""
    return x.detach().numpy() if x.dtype in (torch.float32, torch.float64) else x.detach().double().numpy()


def support_points_numpy(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CPU support selection and packing, image by image in numpy: p, t, valid B x N -> idx, pc, tc, count.

    ``idx`` B x W (padding N) and the float64 values ``pc``, ``tc`` B x W (padding 0) of each image's support
    points packed to the front, ``count`` (B,). numpy's comparisons, ``flatnonzero`` and takes run several
    times faster than torch's on the CPU (measured), and these full-resolution passes are most of a fit's time.
    """
    batch, n = t.shape
    values = as_numpy(t)
    keep_rows = None if valid is None else valid.numpy()

    def select(b: int) -> np.ndarray:
        base = None if keep_rows is None else np.flatnonzero(keep_rows[b])
        row = values[b] if base is None else values[b, base]
        if support == "all" or row.size == 0:
            return np.arange(n) if base is None else base
        chosen = np.flatnonzero(extremes_numpy(row, percentiles))
        return chosen if base is None else base[chosen]

    # numpy releases the GIL in these loops: the images run on torch's intra-op thread count.
    workers = min(batch, torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(select, range(batch)))
    else:
        rows = [select(b) for b in range(batch)]
    count = torch.tensor([r.size for r in rows], dtype=torch.long)
    width = int(count.max()) if batch else 0
    idx = np.full((batch, width), n, dtype=np.int64)
    pc, tc = np.zeros((batch, width)), np.zeros((batch, width))
    for b, (chosen, row_p) in enumerate(zip(rows, as_numpy(p), strict=True)):
        idx[b, : chosen.size] = chosen
        pc[b, : chosen.size] = row_p[chosen]
        tc[b, : chosen.size] = values[b, chosen]
    return torch.from_numpy(idx), torch.from_numpy(pc), torch.from_numpy(tc), count


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
    """Batched support selection and packing in torch (GPUs): the outputs of ``support_points_numpy``.

    The same rule as ``extremes_numpy``, with the order statistics read off one sort of every row.
    """
    idx, count = compact(support_mask_torch(t, valid, support, percentiles))
    used = torch.arange(idx.shape[1], device=idx.device) < count[:, None]
    gather = idx.clamp_max(max(t.shape[1] - 1, 0))
    pc = torch.where(used, p.gather(1, gather).double(), 0.0)
    tc = torch.where(used, t.gather(1, gather).double(), 0.0)
    return idx, pc, tc, count


def support_mask_torch(t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]) -> Tensor:
    """The support points of ``extremes_numpy``'s rule, batched: t, valid B x N -> bool B x N."""
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
