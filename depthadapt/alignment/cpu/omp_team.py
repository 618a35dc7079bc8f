"""Compiled row kernels on torch's own OpenMP threads (``GOMP_parallel`` of the libgomp bundled with torch).

On the CPU torch runs its operations on a GNU OpenMP team, whose idle threads spin for milliseconds after each
operation (measured ~8 ms of CPU after a ``sum``). Row kernels on threads of our own then share the cores with
the spinning ones (a fit right after a torch operation ran 1.5x slower). Launched with ``GOMP_parallel`` from
the same library, a kernel runs on that very team: the spinning threads take the work at once.

``run`` launches a numba ``cfunc`` (``void(void *)``) on ``threads`` threads, each calling it with the same
argument block; the kernel shares the work out itself (``depthadapt.alignment.cpu.kernels.fit_rows``: an atomic row
counter). Where torch does not bundle libgomp (other platforms, other builds), ``available()`` is False and the
caller runs the kernel on ``depthadapt.alignment.support.map_rows``' threads instead.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

import torch

_FORKED = []  # set in a forked child: its team is the parent's, whose threads it lacks (GOMP_parallel would hang)
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _FORKED.append(True))


@cache
def _gomp_parallel() -> ctypes._CFuncPtr | None:
    """torch's ``GOMP_parallel``, or None where torch has no bundled libgomp."""
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    if not os.path.exists(path) or "OpenMP" not in torch.__config__.parallel_info():
        return None
    launch = ctypes.CDLL(path).GOMP_parallel
    launch.argtypes, launch.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint], None
    return launch


def available() -> bool:
    """Whether ``run`` can launch on torch's OpenMP team in this process (not in a forked child)."""
    return not _FORKED and _gomp_parallel() is not None


def run(kernel_address: int, arguments_address: int, threads: int) -> None:
    """Call the cfunc at ``kernel_address`` with ``arguments_address`` on ``threads`` threads of torch's team."""
    _gomp_parallel()(kernel_address, arguments_address, threads, 0)
