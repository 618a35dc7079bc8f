"""Compiled CPU kernels of the scale/shift fit (numba): support selection, RANSAC and the moments, row by row."""
