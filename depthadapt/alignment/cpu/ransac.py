"""RANSAC on one image's packed support points in a compiled kernel (numba): ``ransac_row``.

The rules of ``depthadapt.alignment.ransac.ransac_torch`` trial by trial (its hypotheses, float32 scoring, tie-break
and adaptive stop), so that the CPU and the batched torch path find the same consensus sets. The inlier count of a
hypothesis, the hot loop, is a plain loop that LLVM vectorises on any CPU: the residual test in float32 without
reassociation or fused multiply-adds (``ransac._abs_residuals``' arithmetic, bit for bit), summed ``BLOCK`` points at a
time in float32 with reassociation (exact: the sums are integers < 2**24).

No kernel here calls a numba function of another file, so numba's cache, keyed on this file, is never stale.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# Points per block of the inlier count.
BLOCK = 256


@numba.njit(**_JIT, fastmath=False)  # numba passes a caller's fastmath on to callees that do not set their own
def _within(neg_t: np.float32, p: np.float32, scale: np.float32, shift: np.float32, threshold: np.float32) -> bool:
    """``|scale * p + shift - t| <= threshold`` in float32, evaluated as ``ransac._abs_residuals`` does."""
    return abs(neg_t + shift + scale * p) <= threshold


@numba.njit(**_JIT, fastmath={"reassoc", "nsz"})  # only the count's sums: _within keeps its own arithmetic
def _count_block(neg_t: np.ndarray, p: np.ndarray, start: int, scale: np.float32, shift: np.float32,
                 threshold: np.float32) -> int:
    """``_within`` points of the block at ``start``."""
    count = np.float32(0)
    block_t, block_p = neg_t[start : start + BLOCK], p[start : start + BLOCK]
    for j in range(BLOCK):
        count += np.float32(1) if _within(block_t[j], block_p[j], scale, shift, threshold) else np.float32(0)
    return int(count)


@numba.njit(**_JIT)
def _inlier_count(neg_t: np.ndarray, p: np.ndarray, scale: np.float32, shift: np.float32, threshold: np.float32) -> int:
    """How many |scale * p + shift - t| <= threshold (``_within``)."""
    n = p.size
    end = n - n % BLOCK
    count = 0
    for start in range(0, end, BLOCK):
        count += _count_block(neg_t, p, start, scale, shift, threshold)
    for i in range(end, n):
        count += _within(neg_t[i], p[i], scale, shift, threshold)
    return count


@numba.njit(**_JIT)
def _inlier_ssr(neg_t: np.ndarray, p: np.ndarray, scale: np.float32, shift: np.float32, threshold: np.float32) -> float:
    """Sum of the squared residuals <= threshold (``_within``'s, in float32), in float64."""
    ssr = 0.0
    for i in range(p.size):
        r = abs(neg_t[i] + shift + scale * p[i])
        ssr += float(r) * float(r) if r <= threshold else 0.0
    return ssr


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
    ratios of ``ransac.stop_ratios`` (trials,) -> consensus set in ``inliers`` (bool, >= count long), found, trials
    run.
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
        inliers[i] = _within(neg_t[i], p_row[i], best_scale, best_shift, limit)
    return True, ran
