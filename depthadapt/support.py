"""Which points a scale/shift fit uses: the valid entries, and the "support" at the extremes of the target.

``support_points_numpy`` (CPU: row by row, O(n) order statistics and ``flatnonzero``) and ``support_points_torch``
(any device, batched) select the same points: all valid ones, or those whose target is strictly below its
per-image ``percentiles[0]`` or strictly above ``percentiles[1]`` (numpy's linear interpolation), packed with
their count. Shapes: pred, target, mask B x N.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T")
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


def _sample_brackets(values: np.ndarray, *rank_pairs: tuple[int, int]) -> list[tuple[float, float]]:
    """Bounds that hold the values of each pair of adjacent ranks of a long 1-D array with near certainty, from
    one strided sample; (-inf, inf) for rows too short to sample. Callers count to check the ranks landed inside.
    """
    n = values.size
    if n <= 4 * _SAMPLE_POINTS:
        return [(-np.inf, np.inf)] * len(rank_pairs)
    sample = values[:: n // _SAMPLE_POINTS].copy()
    m = sample.size
    ends = []
    for first_rank, _ in rank_pairs:
        centre = first_rank * (m - 1) / max(n - 1, 1)
        q = centre / max(m - 1, 1)
        half = _BRACKET_SIGMAS * math.sqrt(m * q * (1 - q)) + 4
        ends.append((math.floor(centre - half), math.ceil(centre + 1 + half)))
    sample.partition(sorted({min(max(e, 0), m - 1) for pair in ends for e in pair}))
    return [((sample[first] if first >= 0 else -np.inf), (sample[last] if last < m else np.inf))
            for first, last in ends]


def _ranks_in(inside: np.ndarray, below: int, ranks: tuple[int, int]) -> tuple[float, float] | None:
    """The values of ``ranks`` of the row from the points inside a bracket (``below`` of the row under it), or None
    when a rank fell outside the bracket."""
    local = (ranks[0] - below, ranks[1] - below)
    if not (0 <= local[0] and local[1] < inside.size):
        return None
    part = np.partition(inside, local)
    return part[local[0]].item(), part[local[1]].item()


def order_statistics(values: np.ndarray, ranks: tuple[int, int]) -> tuple[float, float]:
    """The values of two adjacent 0-based ranks of a 1-D array, as ``np.sort(values)[ranks]``, in O(n).

    Long rows: a bracket around the ranks from a strided sample, then a partition of the points inside it
    only; a bracket that misses (checked by counting) falls back to partitioning the whole row.
    """
    (low, high), = _sample_brackets(values, ranks)
    if math.isfinite(low) or math.isfinite(high):
        inside = values.compress((values >= low) & (values <= high))
        found = _ranks_in(inside, int(np.count_nonzero(values < low)), ranks)
        if found is not None:
            return found
    part = np.partition(values, ranks)
    return part[ranks[0]].item(), part[ranks[1]].item()


def percentile_ranks(percentile: float, n: int) -> tuple[int, int, float]:
    """numpy's linear-interpolation percentile of n sorted values: ranks below and above, weight of the upper."""
    position = percentile / 100 * (n - 1)
    below = math.floor(position)
    return below, min(below + 1, n - 1), position - below


def extreme_indices_numpy(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Indices of the values strictly below the low or above the high percentile (numpy's linear interpolation):
    1-D -> ascending int64.

    The percentile lies between the two order statistics it interpolates, and no value lies strictly between
    those, so each strict comparison is one against an order statistic: no rounding of the bound matters.
    One full-length pass keeps the candidates, everything outside the two sampled brackets' inner ends
    (about a fifth of a row at 10/90); the order statistics and the final choice run on those only.
    """
    n = values.size
    k, k1, weight = percentile_ranks(percentiles[0], n)
    j, j1, _ = percentile_ranks(percentiles[1], n)
    low_bracket, high_bracket = _sample_brackets(values, (k, k1), (j, j1))
    wide = np.flatnonzero((values <= low_bracket[1]) | (values >= high_bracket[0]))
    candidates = values.take(wide)
    low_stats = _ranks_in(
        candidates.compress((candidates >= low_bracket[0]) & (candidates <= low_bracket[1])),
        int(np.count_nonzero(candidates < low_bracket[0])), (k, k1),
    )
    high_stats = _ranks_in(
        candidates.compress((candidates >= high_bracket[0]) & (candidates <= high_bracket[1])),
        n - int(np.count_nonzero(candidates >= high_bracket[0])), (j, j1),
    )
    if low_stats is None or high_stats is None:  # a bracket missed: the whole row
        wide, candidates = np.arange(n), values
        low_stats, high_stats = order_statistics(values, (k, k1)), order_statistics(values, (j, j1))
    below, above = low_stats
    low = candidates <= below if weight > 0 and above > below else candidates < below
    below, above = high_stats
    high = candidates >= above if above > below else candidates > above
    return wide.compress(low | high)  # compress: several times faster than boolean indexing (measured)


def as_numpy(x: Tensor) -> np.ndarray:
    """A CPU float tensor as a float32 or float64 numpy array (a view where it can be)."""
    return x.detach().numpy() if x.dtype in (torch.float32, torch.float64) else x.detach().double().numpy()


@cache
def _row_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (starting threads costs more than a small fit)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="depthadapt-rows")


def map_rows(function: Callable[[int], T], batch: int) -> list[T]:
    """``[function(b) for b in range(batch)]`` on torch's intra-op thread count (numpy releases the GIL)."""
    workers = min(batch, torch.get_num_threads())
    if workers <= 1:
        return [function(b) for b in range(batch)]
    return list(_row_pool(workers).map(function, range(batch)))


def support_points_numpy(
    p: Tensor, t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CPU support selection and packing, image by image in numpy: p, t, valid B x N -> idx, pc, tc, count.

    ``idx`` B x W (padding N) and the float64 values ``pc``, ``tc`` B x W (padding 0) of each image's support
    points packed to the front, ``count`` (B,). numpy's comparisons, ``flatnonzero`` and takes run several
    times faster than torch's on the CPU (measured), and these full-resolution passes are most of a fit's time.
    """
    batch, n = t.shape
    values, preds = as_numpy(t), as_numpy(p)
    keep_rows = None if valid is None else valid.numpy()

    def select(b: int) -> np.ndarray:
        base = None if keep_rows is None else np.flatnonzero(keep_rows[b])
        row = values[b] if base is None else values[b, base]
        if support == "all" or row.size == 0:
            return np.arange(n) if base is None else base
        chosen = extreme_indices_numpy(row, percentiles)
        return chosen if base is None else base[chosen]

    rows = map_rows(select, batch)
    count = torch.tensor([r.size for r in rows], dtype=torch.long)
    width = int(count.max()) if batch else 0
    idx = np.full((batch, width), n, dtype=np.int64)
    pc, tc = np.zeros((batch, width)), np.zeros((batch, width))

    def pack(b: int) -> None:
        chosen = rows[b]
        idx[b, : chosen.size] = chosen
        pc[b, : chosen.size] = preds[b].take(chosen)
        tc[b, : chosen.size] = values[b].take(chosen)

    map_rows(pack, batch)
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

    The same rule as ``extreme_indices_numpy``, with the order statistics read off one sort of every row.
    """
    idx, count = compact(support_mask_torch(t, valid, support, percentiles))
    used = torch.arange(idx.shape[1], device=idx.device) < count[:, None]
    gather = idx.clamp_max(max(t.shape[1] - 1, 0))
    pc = torch.where(used, p.gather(1, gather).double(), 0.0)
    tc = torch.where(used, t.gather(1, gather).double(), 0.0)
    return idx, pc, tc, count


def support_mask_torch(t: Tensor, valid: Tensor | None, support: str, percentiles: tuple[float, float]) -> Tensor:
    """The support points of ``extreme_indices_numpy``'s rule, batched: t, valid B x N -> bool B x N."""
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
