"""Compiled CPU kernels of the scale/shift fit (numba): support selection and packing, RANSAC, masked moments.

Each kernel works on one image (a row) and releases the GIL. They implement the rules of their torch counterparts
(``depthadapt.alignment.support``'s ``support_mask_torch``, ``depthadapt.alignment.ransac.ransac_torch``,
``solver.weighted_scale_shift``) with one read of a row instead of one pass per tensor operation:
on the CPU these full-resolution passes are most of a fit's time. The row is read 16 points at a time, the support
compressed out of it with AVX-512 where the CPU has it (``lanes``); the rest works on the packed
~fifth of the row, in the inputs' dtype, which stays in the core's cache. ``fit_row`` chains the kernels for one
image; ``fit_rows`` takes a batch's rows off a shared atomic counter, so that any number of threads can run it at
once: torch's OpenMP team through the C callback ``fit_rows_entry`` (``omp_team``), or the threads of
``support.map_rows``. Compiled on first use and cached beside this file.
"""

from __future__ import annotations

import math
from functools import cache

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from depthadapt.alignment.cpu import lanes

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# Rows longer than 4 x this are bracketed from a strided sample of about this many points (then only the points
# inside the bracket are selected exactly); shorter rows are selected directly.
SAMPLE_POINTS = 4096
# Half-width of a bracket in standard deviations of a sample rank (binomial), plus a few points.
BRACKET_SIGMAS = 5.0
# The selection among the points inside a bracket narrows it again from a sample of about this many of them.
NARROW_POINTS = 512


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
    low, high = bounds[0, 0], bounds[0, 1]
    if low == -np.inf and high == np.inf:
        return count, 0
    under = within = 0
    end = count - count % lanes.LANES
    for i in range(0, end, lanes.LANES):
        under += lanes.popcount(lanes.lanes_lt(inside, i, low))
        within += lanes.popcount(lanes.lanes_ge(inside, i, low) & lanes.lanes_le(inside, i, high))
    for i in range(end, count):
        under += inside[i] < low
        within += (inside[i] >= low) & (inside[i] <= high)
    if not (under <= first and second < under + within):
        return count, 0
    kept = 0
    for i in range(0, end, lanes.LANES):
        chosen = lanes.lanes_ge(inside, i, low) & lanes.lanes_le(inside, i, high)
        lanes.compress(inside, i, chosen, inside, kept)  # stores end at or before i + LANES: this chunk is read
        kept += lanes.popcount(chosen)
    for i in range(end, count):
        v = inside[i]
        inside[kept] = v
        kept += (v >= low) & (v <= high)
    return kept, under


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
def _outside_lanes(a: np.ndarray, i: int, low: float, low_strict: bool, high: float, high_strict: bool) -> int:
    """Bits of the lanes of ``a[i:i + LANES]`` below ``low`` or above ``high`` (``<`` or ``<=`` by the flags)."""
    below = lanes.lanes_lt(a, i, low) if low_strict else lanes.lanes_le(a, i, low)
    above = lanes.lanes_gt(a, i, high) if high_strict else lanes.lanes_ge(a, i, high)
    return below | above


@numba.njit(**_JIT)
def _outside(v: float, low: float, low_strict: bool, high: float, high_strict: bool) -> bool:
    """``_outside_lanes``' test on one value."""
    return ((v < low) if low_strict else (v <= low)) | ((v > high) if high_strict else (v >= high))


@numba.njit(**_JIT)
def _pack(values: np.ndarray, preds: np.ndarray, low: float, low_strict: bool, high: float, high_strict: bool,
          idx: np.ndarray, pc: np.ndarray, tc: np.ndarray) -> tuple[int, bool]:
    """Pack every point whose value is below ``low`` or above ``high`` (``<`` or ``<=`` by the flags) to the front
    of idx, pc, tc (its index, pred, value); returns how many, and whether a value or pred is NaN or infinite. One
    pass, 16 points at a time (``lanes``); the bounds are compared in the values' dtype, exactly for bounds read off
    the values or infinite."""
    n = values.size
    packed = not_finite = 0
    end = n - n % lanes.LANES
    for i in range(0, end, lanes.LANES):
        not_finite |= lanes.lanes_not_finite(values, preds, i)
        chosen = _outside_lanes(values, i, low, low_strict, high, high_strict)
        if chosen:  # a depth map's extremes come in regions: most chunks choose nothing
            lanes.compress(values, i, chosen, tc, packed)
            lanes.compress(preds, i, chosen, pc, packed)
            lanes.compress_indices(i, chosen, idx, packed)
            packed += lanes.popcount(chosen)
    for i in range(end, n):
        v, p = values[i], preds[i]
        not_finite |= (v - v != 0) | (p - p != 0)
        idx[packed], pc[packed], tc[packed] = i, p, v
        packed += _outside(v, low, low_strict, high, high_strict)
    return packed, not_finite != 0


@numba.njit(**_JIT)
def _keep(idx: np.ndarray, pc: np.ndarray, tc: np.ndarray, count: int, low: float, low_strict: bool, high: float,
          high_strict: bool) -> int:
    """``_pack``'s test again on the first ``count`` packed points, in place: returns how many stay."""
    kept = 0
    end = count - count % lanes.LANES
    for i in range(0, end, lanes.LANES):
        chosen = _outside_lanes(tc, i, low, low_strict, high, high_strict)
        lanes.compress(tc, i, chosen, tc, kept)  # stores end at or before i + LANES: this chunk is read already
        lanes.compress(pc, i, chosen, pc, kept)
        lanes.compress(idx, i, chosen, idx, kept)
        kept += lanes.popcount(chosen)
    for i in range(end, count):
        v = tc[i]
        idx[kept], pc[kept], tc[kept] = idx[i], pc[i], v
        kept += _outside(v, low, low_strict, high, high_strict)
    return kept


@numba.njit(**_JIT)
def _bracket_values(tc: np.ndarray, count: int, bounds: np.ndarray, scratch: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The first ``count`` values of tc inside the low and the high bracket (``bounds`` 2 x 2, disjoint) to the
    front of ``scratch`` and of ``scratch[count:]``; how many of each, and the counts of the values under the low
    bracket, up to its upper end, from the high bracket's lower end, and over it (4,)."""
    low_lo, low_hi, high_lo, high_hi = bounds[0, 0], bounds[0, 1], bounds[1, 0], bounds[1, 1]
    n_low = n_high = under_low = upto_low = from_high = over_high = 0
    high_values = scratch[count:]
    end = count - count % lanes.LANES
    for i in range(0, end, lanes.LANES):
        upto = lanes.lanes_le(tc, i, low_hi)
        under = lanes.lanes_lt(tc, i, low_lo)
        start = lanes.lanes_ge(tc, i, high_lo)
        over = lanes.lanes_gt(tc, i, high_hi)
        lanes.compress(tc, i, upto & ~under, scratch, n_low)
        lanes.compress(tc, i, start & ~over, high_values, n_high)
        n_low += lanes.popcount(upto & ~under)
        n_high += lanes.popcount(start & ~over)
        under_low += lanes.popcount(under)
        upto_low += lanes.popcount(upto)
        from_high += lanes.popcount(start)
        over_high += lanes.popcount(over)
    for i in range(end, count):
        v = tc[i]
        scratch[n_low] = v
        n_low += (v >= low_lo) & (v <= low_hi)
        high_values[n_high] = v
        n_high += (v >= high_lo) & (v <= high_hi)
        under_low += v < low_lo
        upto_low += v <= low_hi
        from_high += v >= high_lo
        over_high += v > high_hi
    return n_low, n_high, np.array([under_low, upto_low, from_high, over_high])


@numba.njit(**_JIT)
def support_row(values: np.ndarray, preds: np.ndarray, extremes: bool, low_percentile: float,
                high_percentile: float, idx: np.ndarray, pc: np.ndarray, tc: np.ndarray, scratch: np.ndarray) -> int:
    """One image's support points packed to the front of idx (ints), pc, tc (floats that hold values and preds
    exactly), each >= values.size long; returns their count, or -1 (the buffers then undefined) when a value or pred
    is NaN or infinite. values (the target), preds: 1-D; scratch: >= 2 * values.size long, of values' dtype or wider.

    ``extremes``: the values strictly below the low or above the high percentile (numpy's linear interpolation),
    else all. The percentile lies between the two order statistics it interpolates, and no value lies strictly
    between those, so each strict comparison is one against an order statistic: no rounding of the bound matters.
    A long row is read once (``_pack``): the points at or outside two brackets read off a strided sample (about a
    fifth of a row at 10/90) are packed, the order statistics are selected among those inside the brackets, and
    the packed points are filtered in place (``_keep``). A bracket that misses (counted) or a short row: the order
    statistics from the whole row, then one ``_pack`` with them.
    """
    n = values.size
    if not extremes or n == 0:
        not_finite = 0
        for i in range(n):
            v, p = values[i], preds[i]
            idx[i], pc[i], tc[i] = i, p, v
            not_finite += (v - v != 0) | (p - p != 0)
        return -1 if not_finite else n
    k, k1, weight = _percentile_ranks(low_percentile, n)
    j, j1, _ = _percentile_ranks(high_percentile, n)
    bounds = _brackets(values, np.array([k, k1, j, j1]), SAMPLE_POINTS)
    low_hi, high_lo = bounds[0, 1], bounds[1, 0]  # the brackets' inner ends
    found, packed = False, 0
    n_low = n_high = under_low = below_high = 0
    if n > 4 * SAMPLE_POINTS and low_hi < high_lo:
        packed, not_finite = _pack(values, preds, low_hi, False, high_lo, False, idx, pc, tc)
        if not_finite:
            return -1
        n_low, n_high, counts = _bracket_values(tc, packed, bounds, scratch)
        under_low, upto_low, from_high, over_high = counts[0], counts[1], counts[2], counts[3]
        below_high = n - from_high
        found = under_low <= k and k1 < upto_low and below_high <= j and j1 < n - over_high
    if found:
        below_k, above_k = _two_ranks(scratch, n_low, k - under_low, k1 - under_low)
        below_j, above_j = _two_ranks(scratch[packed:], n_high, j - below_high, j1 - below_high)
    else:  # a short row, or a bracket missed (e.g. a periodic row the sample sees in one phase): the whole row
        not_finite = 0
        for i in range(n):  # a copy for each selection
            v, p = values[i], preds[i]
            scratch[i] = scratch[n + i] = v
            not_finite += (v - v != 0) | (p - p != 0)
        if not_finite:
            return -1
        below_k, above_k = _two_ranks(scratch, n, k, k1)
        below_j, above_j = _two_ranks(scratch[n:], n, j, j1)
    # strictly below the low percentile, strictly above the high one, as comparisons with order statistics
    low_strict, high_strict = not (weight > 0 and above_k > below_k), not above_j > below_j
    if found:
        return _keep(idx, pc, tc, packed, below_k, low_strict, above_j, high_strict)
    return _pack(values, preds, below_k, low_strict, above_j, high_strict, idx, pc, tc)[0]


@numba.njit(**_JIT)
def _line_through(p: np.ndarray, t: np.ndarray, subset: np.ndarray, tolerance: float) -> tuple[float, float]:
    """Least-squares line through the points ``subset`` (``solver.weighted_scale_shift`` with unit weights)."""
    k = subset.size
    mean_p = mean_t = 0.0
    for i in subset:
        mean_p += p[i]
        mean_t += t[i]
    mean_p /= k
    mean_t /= k
    var_p = cov = 0.0
    for i in subset:
        dp = p[i] - mean_p
        var_p += dp * dp
        cov += dp * (t[i] - mean_t)
    if var_p <= k * tolerance**2 * (mean_p * mean_p + var_p / k):  # constant pred: sklearn's answer
        return 0.0, mean_t
    scale = cov / var_p
    return scale, mean_t - scale * mean_p


@numba.njit(**_JIT)
def _inlier_count(neg_t: np.ndarray, p: np.ndarray, scale: np.float32, shift: np.float32, threshold: np.float32) -> int:
    """How many |scale * p + shift - t| <= threshold, in float32 (``ransac._abs_residuals``' arithmetic)."""
    count = 0
    end = p.size - p.size % lanes.LANES
    for i in range(0, end, lanes.LANES):
        count += lanes.popcount(lanes.lanes_residual_within(neg_t, p, i, scale, shift, threshold))
    for i in range(end, p.size):
        count += abs(neg_t[i] + shift + scale * p[i]) <= threshold
    return count


@numba.njit(**_JIT)  # no reassociation: the residuals must be _inlier_count's to the bit (only ties need this)
def _inlier_ssr(neg_t: np.ndarray, p: np.ndarray, scale: np.float32, shift: np.float32, threshold: np.float32) -> float:
    """Sum of the squared residuals <= threshold (``_inlier_count``'s, in float32), in float64."""
    ssr = 0.0
    for i in range(p.size):
        r = abs(neg_t[i] + shift + scale * p[i])
        ssr += float(r) * float(r) if r <= threshold else 0.0
    return ssr


@numba.njit(**_JIT, fastmath={"reassoc"})  # reassociated sums: vectorised reductions
def _centred_float32(p: np.ndarray, t: np.ndarray, count: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Means of the first ``count`` p and t, and p - mean_p, mean_t - t as float32 (ransac_torch's scoring data)."""
    sum_p = sum_t = 0.0
    for i in range(count):
        sum_p += p[i]
        sum_t += t[i]
    mean_p, mean_t = sum_p / count, sum_t / count
    p_row = np.empty(count, np.float32)
    neg_t = np.empty(count, np.float32)
    for i in range(count):
        p_row[i] = p[i] - mean_p
        neg_t[i] = mean_t - t[i]
    return mean_p, mean_t, p_row, neg_t


@numba.njit(**_JIT)
def ransac_row(p: np.ndarray, t: np.ndarray, count: int, u: np.ndarray, stop_ratios: np.ndarray,
               threshold: float, tolerance: float, inliers: np.ndarray) -> tuple[bool, int]:
    """``ransac.ransac_torch`` on one image, trial by trial: packed p, t (count points), u trials x k, the stop
    ratios of ``ransac._stop_ratios`` (trials,) -> consensus set in ``inliers`` (bool, the row's width), found,
    trials run.
    """
    trials, k = u.shape
    inliers[:] = False
    if count < k:
        return False, 0
    mean_p, mean_t, p_row, neg_t = _centred_float32(p, t, count)
    limit = np.float32(threshold)
    best, best_ssr, running = 0, -1.0, 0  # the best's squared residuals: computed when a tie needs them (-1)
    best_scale = best_shift = np.float32(0.0)
    subset = np.empty(k, np.int64)
    ran = trials
    for trial in range(trials):
        for i in range(k):  # Floyd's algorithm, as ransac._sample_subsets
            last = count - k + i
            candidate = min(int(u[trial, i] * (last + 1)), last)
            for q in range(i):
                if subset[q] == candidate:
                    candidate = last
                    break
            subset[i] = candidate
        scale, shift = _line_through(p, t, subset, tolerance)
        scale32, shift32 = np.float32(scale), np.float32(shift + scale * mean_p - mean_t)
        n_inliers = _inlier_count(neg_t, p_row, scale32, shift32, limit)
        running = max(running, n_inliers)
        if n_inliers >= 1 and n_inliers > best:
            best, best_ssr, best_scale, best_shift = n_inliers, -1.0, scale32, shift32
        elif n_inliers >= 1 and n_inliers == best:  # a tie: the smaller squared residuals win
            if best_ssr < 0:
                best_ssr = _inlier_ssr(neg_t, p_row, best_scale, best_shift, limit)
            ssr = _inlier_ssr(neg_t, p_row, scale32, shift32, limit)
            if ssr < best_ssr:
                best_ssr, best_scale, best_shift = ssr, scale32, shift32
        if running >= math.ceil(count * stop_ratios[trial]):  # sklearn's adaptive budget, after every trial
            ran = trial + 1
            break
    if best == 0:
        return False, ran
    for i in range(count):
        inliers[i] = abs(neg_t[i] + best_shift + best_scale * p_row[i]) <= limit
    return True, ran


@numba.njit(**_JIT, fastmath={"reassoc"})  # reassociated sums: vectorised reductions
def masked_moments(p: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float, float]:
    """Count, means and centred moments of the points ``w`` (bool) of one row: count, mean_p, mean_t, var_p, cov."""
    count = sum_p = sum_t = 0.0
    for i in range(p.size):
        weight = 1.0 if w[i] else 0.0
        count += weight
        sum_p += weight * p[i]
        sum_t += weight * t[i]
    if count == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    mean_p, mean_t = sum_p / count, sum_t / count
    var_p = cov = 0.0
    for i in range(p.size):
        dp = (p[i] - mean_p) if w[i] else 0.0
        var_p += dp * dp
        cov += dp * (t[i] - mean_t)
    return count, mean_p, mean_t, var_p, cov


@numba.njit(**_JIT)
def fit_row(values: np.ndarray, preds: np.ndarray, base: np.ndarray, extremes: bool, low_percentile: float,
            high_percentile: float, ransac: bool, u: np.ndarray, stop_ratios: np.ndarray, threshold: float,
            tolerance: float, idx: np.ndarray, pc: np.ndarray, tc: np.ndarray, scratch: np.ndarray,
            used: np.ndarray, inliers: np.ndarray) -> tuple[int, bool, int, float, float, float, float, float]:
    """One image's whole fit but the solve: ``support_row``, then ``ransac_row`` (``ransac``) or every support point,
    then the ``masked_moments`` of the points used, which are marked in ``inliers`` (bool, the image's N points).

    values (the target), preds: 1-D, the valid points; ``base``: their indices among the N (empty: all N are
    valid, in order). idx, pc, tc, scratch: ``support_row``'s buffers; used: bool, at least values.size long. Returns
    the support count, found, trials, and the moments: points used, mean_p, mean_t, var_p, cov; a support count of
    -1 (and nothing written) when a value or pred is NaN or infinite.
    """
    count = support_row(values, preds, extremes, low_percentile, high_percentile, idx, pc, tc, scratch)
    if count < 0:
        return -1, False, 0, 0.0, 0.0, 0.0, 0.0, 0.0
    if ransac:
        found, trials = ransac_row(pc, tc, count, u, stop_ratios, threshold, tolerance, used)
    else:
        used[:count] = True
        found, trials = True, 0
    n_used, mean_p, mean_t, var_p, cov = masked_moments(pc[:count], tc[:count], used[:count])
    inliers[:] = False
    remap = base.size > 0
    for i in range(count):  # the indices are distinct: a store per point, no branch
        inliers[base[idx[i]] if remap else idx[i]] = used[i]
    return count, found, trials, n_used, mean_p, mean_t, var_p, cov


@intrinsic
def _pointer(typingctx, address, dtype):  # noqa: ANN001, ANN202 (numba's intrinsic protocol)
    """An integer address as a pointer to ``dtype`` (for ``numba.carray``)."""
    pointer = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, dtype), codegen


@intrinsic
def _next_row(typingctx, address):  # noqa: ANN001, ANN202
    """Atomically increment the int64 at ``address``; its value before (the threads' shared row counter)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        counter = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int64)))
        return builder.atomic_rmw("add", counter, context.get_constant(types.int64, 1), "monotonic")

    return types.int64(address), codegen


@numba.njit(**_JIT)
def fit_rows(values: np.ndarray, preds: np.ndarray, valid: np.ndarray, extremes: bool, low_percentile: float,
             high_percentile: float, ransac: bool, u: np.ndarray, stop_ratios: np.ndarray, threshold: float,
             tolerance: float, inliers: np.ndarray, results: np.ndarray, counter: np.ndarray) -> None:
    """``fit_row`` on every image of values, preds B x N (valid B x N bool, or 0 x 0: all valid), the rows taken
    one by one from the shared ``counter`` (an int64 array of one 0), so that any number of threads can call it at
    once; inliers B x N, results B x 8 (``fit_row``'s values) are written."""
    batch, n = values.shape
    # Packed in the inputs' dtype, indices in int32: a row's packed support stays in the core's cache.
    idx, used = np.empty(n, np.int32), np.empty(n, np.bool_)
    pc, tc, scratch = np.empty(n, values.dtype), np.empty(n, values.dtype), np.empty(2 * n, values.dtype)
    everything = np.empty(0, np.int64)
    masked = valid.shape[0] > 0
    while True:
        b = _next_row(counter.ctypes.data)
        if b >= batch:
            return
        if masked:
            base = np.flatnonzero(valid[b])
            row = fit_row(values[b][base], preds[b][base], base, extremes, low_percentile, high_percentile, ransac,
                          u, stop_ratios, threshold, tolerance, idx, pc, tc, scratch, used, inliers[b])
        else:
            row = fit_row(values[b], preds[b], everything, extremes, low_percentile, high_percentile, ransac, u,
                          stop_ratios, threshold, tolerance, idx, pc, tc, scratch, used, inliers[b])
        results[b, 0], results[b, 1], results[b, 2], results[b, 3] = row[0], row[1], row[2], row[3]
        results[b, 4], results[b, 5], results[b, 6], results[b, 7] = row[4], row[5], row[6], row[7]


# The argument block of ``fit_rows_entry``: int64 slots, addresses and sizes (see ``fit_rows_arguments``).
_VALUES, _PREDS, _VALID, _U, _RATIOS, _INLIERS, _RESULTS, _COUNTER, _OPTIONS = range(9)
_BATCH, _N, _MASKED_ROWS, _TRIALS, _K, _FLAGS, _SLOTS = range(9, 16)


def _fit_rows_entry(dtype):  # noqa: ANN001, ANN202 (a numba type)
    """``fit_rows`` as a C callback ``void(void *arguments)`` for values and preds of ``dtype`` (an OpenMP team's
    threads call it with one argument block, ``fit_rows_arguments``)."""

    @numba.cfunc(types.void(types.voidptr), cache=True)
    def entry(arguments):  # noqa: ANN001, ANN202
        a = numba.carray(arguments, (_SLOTS,), np.int64)
        batch, n, masked_rows = a[_BATCH], a[_N], a[_MASKED_ROWS]
        options = numba.carray(_pointer(a[_OPTIONS], numba.float64), (4,))
        fit_rows(
            numba.carray(_pointer(a[_VALUES], dtype), (batch, n)),
            numba.carray(_pointer(a[_PREDS], dtype), (batch, n)),
            numba.carray(_pointer(a[_VALID], numba.boolean), (masked_rows, n if masked_rows else 0)),
            a[_FLAGS] & 1 != 0, options[0], options[1], a[_FLAGS] & 2 != 0,
            numba.carray(_pointer(a[_U], numba.float64), (a[_TRIALS], a[_K])),
            numba.carray(_pointer(a[_RATIOS], numba.float64), (a[_TRIALS],)),
            options[2], options[3],
            numba.carray(_pointer(a[_INLIERS], numba.boolean), (batch, n)),
            numba.carray(_pointer(a[_RESULTS], numba.float64), (batch, 8)),
            numba.carray(_pointer(a[_COUNTER], numba.int64), (1,)),
        )

    return entry


@cache
def fit_rows_entry(dtype: np.dtype) -> numba.core.ccallback.CFunc:
    """The compiled ``fit_rows`` callback for values and preds of ``dtype`` (float32 or float64), built once."""
    return _fit_rows_entry(numba.from_dtype(np.dtype(dtype)))


def fit_rows_arguments(values: np.ndarray, preds: np.ndarray, valid: np.ndarray, extremes: bool,
                       low_percentile: float, high_percentile: float, ransac: bool, u: np.ndarray,
                       stop_ratios: np.ndarray, threshold: float, tolerance: float, inliers: np.ndarray,
                       results: np.ndarray, counter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fit_rows``' arguments as the argument block of ``fit_rows_entry`` (C-contiguous arrays, values and preds
    of one dtype): the block and the options array it points to (keep both alive while the callback runs)."""
    arrays = (values, preds, valid, u, stop_ratios, inliers, results, counter)
    if not all(a.flags.c_contiguous for a in arrays) or values.dtype != preds.dtype:
        raise ValueError("fit_rows_arguments needs C-contiguous arrays and values, preds of one dtype")
    options = np.array([low_percentile, high_percentile, threshold, tolerance], dtype=np.float64)
    block = np.zeros(_SLOTS, dtype=np.int64)
    for slot, a in zip((_VALUES, _PREDS, _VALID, _U, _RATIOS, _INLIERS, _RESULTS, _COUNTER), arrays, strict=True):
        block[slot] = a.ctypes.data
    block[_OPTIONS] = options.ctypes.data
    block[_BATCH], block[_N] = values.shape
    block[_MASKED_ROWS], (block[_TRIALS], block[_K]) = valid.shape[0], u.shape
    block[_FLAGS] = int(extremes) | 2 * int(ransac)
    return block, options
