"""Compiled CPU kernels of the scale/shift fit (numba), one image (a row) at a time: ``selection`` (the support
points), ``ransac`` (RANSAC by the batched torch path's rules), ``moments`` (the refit), and ``rows`` (the fit of a
batch, the kernels chained for each image on a pool of threads). Plain loops that LLVM vectorises on any CPU; each
kernel module self-contained, so that numba's per-file cache is never stale."""
