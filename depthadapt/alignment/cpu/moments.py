"""The moments of a least-squares refit of one image in a compiled kernel (numba): ``masked_moments``.

No kernel here calls a numba function of another file, so numba's cache, keyed on this file, is never stale.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})  # reassociated: vectorised sums
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
