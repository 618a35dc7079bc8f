"""The CPU fit of a batch, image by image, on a pool of threads: ``fit_rows`` and ``map_rows``.

``fit_rows`` chains the compiled kernels for each image (a row of B x N maps): the support selection
(``selection.support_row``), RANSAC (``ransac.ransac_row``) or every support point, the refit's moments
(``moments.masked_moments``) and the scatter of the points used into the full-size mask. No full-size tensor
operation runs between the steps. The kernels release the GIL, so the rows run in parallel on the calling thread and
the threads of a pool kept for the process (``concurrent.futures``, as portable as Python), taking the rows one by
one off a shared counter. Each kernel module is compiled and cached by numba on its own (none calls another's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import numba
import numpy as np
import torch

from depthadapt.alignment.cpu import moments, ransac, selection

__all__ = ["RESULT_FIELDS", "fit_rows", "map_rows"]

T = TypeVar("T")
# The columns of ``fit_rows``' results.
RESULT_FIELDS = ("support_count", "found", "trials", "count", "mean_p", "mean_t", "var_p", "cov")


@cache
def _pool(workers: int, process: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (starting threads costs more than a small fit). Keyed by the process id:
    a forked child (e.g. a DataLoader worker) inherits the parent's pool without its threads, and would hang."""
    return ThreadPoolExecutor(workers, thread_name_prefix="depthadapt-rows")


def _on_threads(work: Callable[[Callable[[], int | None]], None], batch: int) -> None:
    """``work(next_row)`` on the calling thread and up to ``torch.get_num_threads() - 1`` pool threads (no more than
    ``batch`` in all); ``next_row()`` hands out 0 .. batch - 1, each once, then None. Raises what a thread raised."""
    rows, lock = iter(range(batch)), threading.Lock()

    def next_row() -> int | None:
        with lock:
            return next(rows, None)

    helpers = min(batch, torch.get_num_threads()) - 1
    if helpers <= 0:
        work(next_row)
        return
    pool = _pool(helpers, os.getpid())
    futures = [pool.submit(work, next_row) for _ in range(helpers)]
    try:
        work(next_row)
    finally:
        for future in futures:
            future.result()


def map_rows(function: Callable[[int], T], batch: int) -> list[T]:
    """``[function(b) for b in range(batch)]`` on torch's intra-op thread count (numpy and the kernels release the
    GIL)."""
    results: list = [None] * batch

    def work(next_row: Callable[[], int | None]) -> None:
        while (b := next_row()) is not None:
            results[b] = function(b)

    _on_threads(work, batch)
    return results


@numba.njit(nogil=True, cache=True)
def _scatter(used: np.ndarray, idx: np.ndarray, count: int, base: np.ndarray, out: np.ndarray) -> None:
    """``out`` (bool, an image's N points) True at the packed points ``idx[:count]`` that are ``used``, False elsewhere;
    ``base``: the indices among the N of the points idx counts (empty: all N, in order)."""
    out[:] = False
    remap = base.size > 0
    for i in range(count):  # the indices are distinct: a store per point, no branch
        out[base[idx[i]] if remap else idx[i]] = used[i]


def fit_rows(values: np.ndarray, preds: np.ndarray, valid: np.ndarray | None, extremes: bool,
             percentiles: tuple[float, float], u: np.ndarray | None, stop_ratios: np.ndarray, threshold: float,
             tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Each image's fit but the solve: values (the target), preds B x N C-contiguous, of one float dtype; valid B x N
    bool or None (all valid) -> the points used B x N (bool), results B x 8 (``RESULT_FIELDS``: float64).

    Per image: the support points (``extremes``: outside ``percentiles``, else all valid), RANSAC on them with the
    uniforms ``u`` (trials x k) and ``stop_ratios`` of ``depthadapt.alignment.ransac`` (None: least squares, every
    support point used, trials 0), and the moments of the points used. An image with a NaN or infinite value or pred
    among its valid points gets a support count of -1 and nothing else.
    """
    batch, n = values.shape
    inliers, results = np.zeros((batch, n), dtype=bool), np.zeros((batch, len(RESULT_FIELDS)))
    low, high = float(percentiles[0]), float(percentiles[1])
    everything = np.empty(0, np.int64)

    def work(next_row: Callable[[], int | None]) -> None:
        # Packed in the inputs' dtype, indices in int32: a row's packed support stays in the core's cache.
        idx, used = np.empty(n, np.int32), np.empty(n, bool)
        pc, tc, scratch = np.empty(n, values.dtype), np.empty(n, values.dtype), np.empty(2 * n, values.dtype)
        while (b := next_row()) is not None:
            base, row_values, row_preds = everything, values[b], preds[b]
            if valid is not None:
                base = np.flatnonzero(valid[b])
                row_values, row_preds = row_values.take(base), row_preds.take(base)
            count = selection.support_row(row_values, row_preds, extremes, low, high, idx, pc, tc, scratch)
            if count < 0:
                results[b, 0] = -1
                continue
            if u is None:
                used[:count] = True
                found, trials = True, 0
            else:
                found, trials = ransac.ransac_row(pc, tc, count, u, stop_ratios, threshold, tolerance, used)
            results[b] = (count, found, trials, *moments.masked_moments(pc[:count], tc[:count], used[:count]))
            _scatter(used, idx, count, base, inliers[b])

    _on_threads(work, batch)
    return inliers, results
