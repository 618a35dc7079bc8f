"""One image's support points in a compiled kernel (numba): ``support_row`` and the order statistics it needs.

The rule of ``depthadapt.alignment.support.support_mask_torch`` (the values strictly below the low or above the high
percentile, numpy's linear interpolation), with one read of a row instead of a sort: the two order statistics of
each percentile are bracketed from a strided sample, the points at or outside the brackets' inner ends are packed to
the front of the buffers in that read (about a fifth of a row at 10/90), and the ranks are selected among the few
inside the brackets. Everything after the read works on the packed points, which stay in the core's cache.

The passes go through a row ``BLOCK`` points at a time: a block's chosen points are counted without a branch (a strict
comparison, summed in float32 with reassociation: plain loops that LLVM vectorises on any CPU), then the block is
skipped (nothing chosen: a depth map's extremes come in regions), copied whole (everything chosen), or compacted
point by point (a store per point, the position advanced by the test). The comparisons are ``fastmath=False``
functions: numba passes a caller's ``fastmath`` on to callees that do not set their own.

No kernel here calls a numba function of another file, so numba's cache, keyed on this file, is never stale.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
_STRICT = {**_JIT, "fastmath": False}  # comparisons: never reassociated, whoever calls them
_COUNT = {**_JIT, "fastmath": {"reassoc", "nsz"}}  # sums of 0/1 in float32: exact, and vectorised
# Points per block of a pass (a block's count is exact in float32 and vectorises in full registers).
BLOCK = 64
# Rows longer than 4 x this are bracketed from a strided sample of about this many points (then only the points
# inside the bracket are selected exactly); shorter rows are selected directly.
SAMPLE_POINTS = 4096
# Half-width of a bracket in standard deviations of a sample rank (binomial), plus a few points.
BRACKET_SIGMAS = 5.0
# The selection among the points inside a bracket narrows it again from a sample of about this many of them.
NARROW_POINTS = 512


@numba.njit(**_JIT)
def _open_bounds(values: np.ndarray, low: float, low_strict: bool, high: float, high_strict: bool) -> tuple:
    """``low``, ``high`` in the values' dtype (exact for bounds read off the values, or infinite), each moved to the
    next value inward where it is not strict: a value is then below ``low`` or above ``high`` (``<`` or ``<=`` by the
    flags) exactly when ``v < low or v > high``."""
    low, high = values.dtype.type(low), values.dtype.type(high)
    if not low_strict:
        low = np.nextafter(low, values.dtype.type(np.inf))
    if not high_strict:
        high = np.nextafter(high, values.dtype.type(-np.inf))
    return low, high


@numba.njit(**_STRICT)
def _not_finite(v: float, p: float) -> bool:
    """Whether v or p is NaN or infinite (x - x is 0 for a finite x and NaN otherwise)."""
    return (v - v != 0) | (p - p != 0)


@numba.njit(**_COUNT)  # comparisons are exact under reassociation; only the sums are reordered
def _count_outside(values: np.ndarray, start: int, low: float, high: float) -> int:
    """How many of ``values[start:start + BLOCK]`` are < low or > high."""
    count = np.float32(0)
    block = values[start : start + BLOCK]
    for j in range(BLOCK):
        count += np.float32(1) if (block[j] < low) | (block[j] > high) else np.float32(0)
    return int(count)


@numba.njit(**_COUNT)
def _any_not_finite(values: np.ndarray, preds: np.ndarray, start: int) -> bool:
    """Whether a value or pred of the block at ``start`` is NaN or infinite."""
    count = np.float32(0)
    block, block_preds = values[start : start + BLOCK], preds[start : start + BLOCK]
    for j in range(BLOCK):
        count += np.float32(1) if _not_finite(block[j], block_preds[j]) else np.float32(0)
    return count > 0


@numba.njit(**_COUNT)
def _count_ends(values: np.ndarray, start: int, low: float, high: float) -> tuple[int, int]:
    """How many of ``values[start:start + BLOCK]`` are < low, and how many <= high."""
    below = upto = np.float32(0)
    block = values[start : start + BLOCK]
    for j in range(BLOCK):
        below += np.float32(1) if block[j] < low else np.float32(0)
        upto += np.float32(1) if block[j] <= high else np.float32(0)
    return int(below), int(upto)


@numba.njit(**_JIT)
def _count_range(values: np.ndarray, start: int, stop: int, low: float, high: float) -> tuple[int, int]:
    """``_count_ends`` over ``values[start:stop]``."""
    below = upto = 0
    end = stop - (stop - start) % BLOCK
    for i in range(start, end, BLOCK):
        b, u = _count_ends(values, i, low, high)
        below, upto = below + b, upto + u
    for i in range(end, stop):
        below, upto = below + (values[i] < low), upto + (values[i] <= high)
    return below, upto


@numba.njit(**_JIT)
def _move_front(a: np.ndarray, lo: int, hi: int, pivot: float, strictly_below: bool) -> int:
    """Move the entries of ``a[lo:hi]`` that are < pivot (``strictly_below``) or == pivot to its front, branch-free
    (unpredictable comparisons cost a misprediction each in a branching partition); returns where they end."""
    store = lo
    for i in range(lo, hi):
        x = a[i]
        a[i] = a[store]
        a[store] = x
        store += (x < pivot) if strictly_below else (x == pivot)
    return store


@numba.njit(**_JIT)
def _select(a: np.ndarray, lo: int, hi: int, k: int) -> None:
    """Rearrange ``a[lo:hi]`` in place so that ``a[k]`` is its (k - lo)-th smallest, smaller ones before it and
    the others after it: three-way partitions around median-of-three pivots (runs of equal values take one
    step), a sort once the segment stops shrinking."""
    budget = 2 * (int(math.log2(max(hi - lo, 2))) + 4)
    while hi - lo > 1:
        if budget == 0:  # adversarial input: finish with a sort, O(n log n) whatever the data
            a[lo:hi] = np.sort(a[lo:hi])
            return
        budget -= 1
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        below = _move_front(a, lo, hi, pivot, True)
        if k < below:
            hi = below
            continue
        equal = _move_front(a, below, hi, pivot, False)
        if k < equal:
            return
        lo = equal


@numba.njit(**_JIT)
def _percentile_ranks(percentile: float, n: int) -> tuple[int, int, float]:
    """numpy's linear-interpolation percentile of n sorted values: ranks below and above, weight of the upper."""
    position = percentile / 100 * (n - 1)
    below = math.floor(position)
    return below, min(below + 1, n - 1), position - below


@numba.njit(**_JIT)
def _brackets(values: np.ndarray, ranks: np.ndarray, sample_points: int) -> np.ndarray:
    """Bounds that hold each pair of ``ranks`` (ascending pairs: the low pair, the high pair...) of a long row with
    near certainty, read off one strided sample of about ``sample_points``: pairs x (lower, upper bound);
    (-inf, inf) for rows of at most 4 x ``sample_points``."""
    pairs = ranks.size // 2
    bounds = np.empty((pairs, 2))
    bounds[:, 0], bounds[:, 1] = -np.inf, np.inf
    n = values.size
    if n <= 4 * sample_points:
        return bounds
    sample = values[:: n // sample_points].astype(np.float64)
    m = sample.size
    ends = np.empty(2 * pairs, np.int64)
    for b in range(pairs):
        centre = ranks[2 * b] * (m - 1) / max(n - 1, 1)
        q = centre / max(m - 1, 1)
        half = BRACKET_SIGMAS * math.sqrt(m * q * (1 - q)) + 4
        ends[2 * b], ends[2 * b + 1] = math.floor(centre - half), math.ceil(centre + 1 + half)
    start = 0
    for e in np.argsort(ends):  # ascending: each selection works on what lies above the previous one
        position = ends[e]
        if 0 <= position < m:
            if position >= start:
                _select(sample, start, m, position)
                start = position + 1
            bounds[e // 2, e % 2] = sample[position]
    return bounds


@numba.njit(**_JIT)
def _narrow(inside: np.ndarray, count: int, first: int, second: int) -> tuple[int, int]:
    """Move the values of a bracket around the ranks ``first`` <= ``second`` of ``inside[:count]`` (read off a
    sample) to its front; returns how many, and how many lay under it (the ranks' offset); (count, 0) and nothing
    moved when the bracket misses (counted) or the row is short."""
    bounds = _brackets(inside[:count], np.array([first, second]), NARROW_POINTS)
    low, high = inside.dtype.type(bounds[0, 0]), inside.dtype.type(bounds[0, 1])  # values of the row: exact
    if low == -np.inf and high == np.inf:
        return count, 0
    under, upto = _count_range(inside, 0, count, low, high)
    if not (under <= first and second < upto):
        return count, 0
    kept = np.uint64(0)
    for i in range(count):  # in place: the stores end at or before i
        v = inside[i]
        inside[kept] = v
        kept += np.uint64(1) if (v >= low) & (v <= high) else np.uint64(0)
    return np.int64(kept), under


@numba.njit(**_JIT)
def _two_ranks(inside: np.ndarray, count: int, first: int, second: int) -> tuple[float, float]:
    """Values of the ranks ``first`` and ``second`` (``first`` or ``first + 1``, both < count) among
    ``inside[:count]`` (rearranged, values dropped: call once per buffer): a bracket from a sample, then an exact
    selection inside it."""
    count, under = _narrow(inside, count, first, second)
    first, second = first - under, second - under
    _select(inside, 0, count, first)
    following = inside[first]
    if second > first:  # everything after ``first`` is >= it: the next rank is the smallest of the rest
        following = inside[first + 1 : count].min()
    return inside[first], following


@numba.njit(**_JIT)
def _compact(values: np.ndarray, preds: np.ndarray, start: int, stop: int, low: float, high: float, idx: np.ndarray,
             pc: np.ndarray, tc: np.ndarray, packed: int) -> int:
    """Every point of ``[start, stop)`` stored at ``packed``, which moves past the ones < low or > high: no branch.
    Returns the new ``packed``."""
    position = np.uint64(packed)  # unsigned: no code for negative indices around the stores
    for i in range(start, stop):
        v = values[i]
        idx[position], pc[position], tc[position] = i, preds[i], v
        position += np.uint64(1) if (v < low) | (v > high) else np.uint64(0)
    return np.int64(position)


@numba.njit(**_JIT)
def _pack(values: np.ndarray, preds: np.ndarray, low: float, low_strict: bool, high: float, high_strict: bool,
          idx: np.ndarray, pc: np.ndarray, tc: np.ndarray) -> int:
    """Pack every point whose value is below ``low`` or above ``high`` (``<`` or ``<=`` by the flags) to the front
    of idx, pc, tc (its index, pred, value); returns how many, or -1 (stopping there) when a value or pred is NaN or
    infinite. One pass, a block at a time (see the module's doc)."""
    low, high = _open_bounds(values, low, low_strict, high, high_strict)
    n = values.size
    end = n - n % BLOCK
    packed = 0
    for start in range(0, end, BLOCK):
        if _any_not_finite(values, preds, start):
            return -1
        chosen = _count_outside(values, start, low, high)
        if chosen == BLOCK:  # a run of extremes: copied
            for j in range(BLOCK):
                idx[packed + j], pc[packed + j], tc[packed + j] = start + j, preds[start + j], values[start + j]
            packed += BLOCK
        elif chosen != 0:
            packed = _compact(values, preds, start, start + BLOCK, low, high, idx, pc, tc, packed)
    for i in range(end, n):
        if _not_finite(values[i], preds[i]):
            return -1
    return _compact(values, preds, end, n, low, high, idx, pc, tc, packed)


@numba.njit(**_JIT)
def _keep(idx: np.ndarray, pc: np.ndarray, tc: np.ndarray, count: int, low: float, low_strict: bool, high: float,
          high_strict: bool) -> int:
    """``_pack``'s test again on the first ``count`` packed points, in place: returns how many stay."""
    low, high = _open_bounds(tc, low, low_strict, high, high_strict)
    kept = np.uint64(0)
    for i in range(count):  # the stores end at or before i
        v = tc[i]
        idx[kept], pc[kept], tc[kept] = idx[i], pc[i], v
        kept += np.uint64(1) if (v < low) | (v > high) else np.uint64(0)
    return np.int64(kept)


@numba.njit(**_JIT)
def _bracket_values(tc: np.ndarray, count: int, bounds: np.ndarray, scratch: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The first ``count`` values of tc inside the low and the high bracket (``bounds`` 2 x 2, disjoint; every value
    at or below the low bracket's upper end or at or above the high one's lower end) to the front of ``scratch`` and
    of ``scratch[count:]``; how many of each, and the counts of the values under the low bracket, up to its upper
    end, from the high bracket's lower end, and over it (4,)."""
    low_lo, low_hi = tc.dtype.type(bounds[0, 0]), tc.dtype.type(bounds[0, 1])
    high_lo, high_hi = tc.dtype.type(bounds[1, 0]), tc.dtype.type(bounds[1, 1])
    under_low, upto_low = _count_range(tc, 0, count, low_lo, low_hi)
    over_high = count - _count_range(tc, 0, count, high_lo, high_hi)[1]
    high_values = scratch[count:]
    n_low = n_high = np.uint64(0)
    for i in range(count):
        v = tc[i]
        scratch[n_low] = v
        n_low += np.uint64(1) if (v >= low_lo) & (v <= low_hi) else np.uint64(0)
        high_values[n_high] = v
        n_high += np.uint64(1) if (v >= high_lo) & (v <= high_hi) else np.uint64(0)
    return np.int64(n_low), np.int64(n_high), np.array([under_low, upto_low, count - upto_low, over_high])


@numba.njit(**_JIT)
def support_row(values: np.ndarray, preds: np.ndarray, extremes: bool, low_percentile: float,
                high_percentile: float, idx: np.ndarray, pc: np.ndarray, tc: np.ndarray, scratch: np.ndarray) -> int:
    """One image's support points packed to the front of idx (ints), pc, tc (floats that hold values and preds
    exactly), each >= values.size long; returns their count, or -1 (the buffers then undefined) when a value or pred
    is NaN or infinite. values (the target), preds: 1-D, C-contiguous; scratch: >= 2 * values.size long, of values'
    dtype or wider.

    ``extremes``: the values strictly below the low or above the high percentile (numpy's linear interpolation),
    else all. The percentile lies between the two order statistics it interpolates, and no value lies strictly
    between those, so each strict comparison is one against an order statistic: no rounding of the bound matters.
    A long row is read once (``_pack``): the points at or outside two brackets read off a strided sample are packed,
    the order statistics are selected among those inside the brackets, and the packed points are filtered in place
    (``_keep``). A bracket that misses (counted) or a short row: the order statistics from the whole row, then one
    ``_pack`` with them.
    """
    n = values.size
    if not extremes or n == 0:
        return _pack(values, preds, np.inf, True, -np.inf, True, idx, pc, tc)  # every point is outside (inf, -inf)
    k, k1, weight = _percentile_ranks(low_percentile, n)
    j, j1, _ = _percentile_ranks(high_percentile, n)
    bounds = _brackets(values, np.array([k, k1, j, j1]), SAMPLE_POINTS)
    low_hi, high_lo = bounds[0, 1], bounds[1, 0]  # the brackets' inner ends
    found, packed = False, 0
    n_low = n_high = under_low = below_high = 0
    if n > 4 * SAMPLE_POINTS and low_hi < high_lo:
        packed = _pack(values, preds, low_hi, False, high_lo, False, idx, pc, tc)
        if packed < 0:
            return -1
        n_low, n_high, counts = _bracket_values(tc, packed, bounds, scratch)
        under_low, upto_low, from_high, over_high = counts[0], counts[1], counts[2], counts[3]
        below_high = n - from_high
        found = under_low <= k and k1 < upto_low and below_high <= j and j1 < n - over_high
    if found:
        below_k, above_k = _two_ranks(scratch, n_low, k - under_low, k1 - under_low)
        below_j, above_j = _two_ranks(scratch[packed:], n_high, j - below_high, j1 - below_high)
    else:  # a short row, or a bracket missed (e.g. a periodic row the sample sees in one phase): the whole row
        not_finite = False
        for i in range(n):  # a copy for each selection
            v = values[i]
            scratch[i] = scratch[n + i] = v
            not_finite |= _not_finite(v, preds[i])
        if not_finite:
            return -1
        below_k, above_k = _two_ranks(scratch, n, k, k1)
        below_j, above_j = _two_ranks(scratch[n:], n, j, j1)
    # strictly below the low percentile, strictly above the high one, as comparisons with order statistics
    low_strict, high_strict = not (weight > 0 and above_k > below_k), not above_j > below_j
    if found:
        return _keep(idx, pc, tc, packed, below_k, low_strict, above_j, high_strict)
    return _pack(values, preds, below_k, low_strict, above_j, high_strict, idx, pc, tc)
