"""The 16-lane primitives of ``depthadapt.alignment.cpu.lanes`` against numpy, on both paths (AVX-512, portable)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from depthadapt.alignment.cpu import lanes

pytestmark = pytest.mark.unit


def _compress_kernel():  # noqa: ANN202
    """A fresh kernel (compiled on first call, with the path ``lanes.avx512()`` says then): every chunk of ``values``
    compressed by ``values <= low | values > high`` into the three targets, plus the counts numpy can check."""

    def pack(values, preds, low, high, kept_values, kept_preds, kept_indices):  # noqa: ANN001, ANN202
        packed = counted = 0
        not_finite = 0
        for i in range(0, values.size - values.size % lanes.LANES, lanes.LANES):
            chosen = lanes.lanes_le(values, i, low) | lanes.lanes_gt(values, i, high)
            counted += lanes.popcount(lanes.lanes_lt(values, i, low)) + lanes.popcount(lanes.lanes_ge(values, i, high))
            not_finite |= lanes.lanes_not_finite(values, preds, i)
            lanes.compress(values, i, chosen, kept_values, packed)
            lanes.compress(preds, i, chosen, kept_preds, packed)
            lanes.compress_indices(i, chosen, kept_indices, packed)
            packed += lanes.popcount(chosen)
        return packed, counted, not_finite

    return numba.njit(pack)


def _expected(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, int]:
    body = values[: values.size - values.size % lanes.LANES]
    low, high = body.dtype.type(low), body.dtype.type(high)
    return np.flatnonzero((body <= low) | (body > high)), int((body < low).sum() + (body >= high).sum())


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize(("value_dtype", "target_dtype", "index_dtype"),
                         [(np.float32, np.float32, np.int32), (np.float32, np.float64, np.int64),
                          (np.float64, np.float64, np.int64)])
def test_compress_keeps_the_chosen_lanes_in_order_and_writes_nothing_past_them(
    portable: bool, value_dtype: type, target_dtype: type, index_dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    if portable:
        monkeypatch.setattr(lanes, "FORCE_PORTABLE", True)
    rng = np.random.default_rng(0)
    # runs of all-chosen and none-chosen chunks, single lanes, ties with the bounds, and a tail of 7 points
    values = np.concatenate([rng.random(1000), np.zeros(64), np.ones(64), np.full(32, 0.25), rng.random(7)])
    values = values.astype(value_dtype)
    preds = (rng.standard_normal(values.size) * 100).astype(value_dtype)
    kept = [np.full(values.size + 40, -7, dtype=d) for d in (target_dtype, target_dtype, index_dtype)]
    packed, counted, not_finite = _compress_kernel()(values, preds, 0.25, 0.75, *kept)
    chosen, expected_count = _expected(values, 0.25, 0.75)
    assert packed == chosen.size and counted == expected_count and not_finite == 0
    assert np.array_equal(kept[0][:packed], values[chosen].astype(target_dtype))
    assert np.array_equal(kept[1][:packed], preds[chosen].astype(target_dtype))
    assert np.array_equal(kept[2][:packed], chosen)
    assert all((k[packed:] == -7).all() for k in kept)  # masked stores: nothing written past the packed points


@pytest.mark.parametrize("portable", [False, True])
def test_not_finite_flags_the_lane_of_either_array(portable: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if portable:
        monkeypatch.setattr(lanes, "FORCE_PORTABLE", True)
    kernel = _compress_kernel()
    buffers = [np.empty(64), np.empty(64), np.empty(64, np.int64)]
    for where, lane, bad in (("values", 5, np.nan), ("preds", 18, np.inf), ("preds", 33, -np.inf)):
        row = {"values": np.linspace(0, 1, 48), "preds": np.linspace(1, 2, 48)}
        row[where][lane] = bad
        _, _, not_finite = kernel(row["values"], row["preds"], 0.1, 0.9, *buffers)
        assert not_finite == 1 << (lane % lanes.LANES), (where, lane)


def test_the_portable_path_is_compiled_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = (np.zeros(32, np.float32), np.zeros(32, np.float32), 0.5, 0.6, np.empty(32, np.float32),
                 np.empty(32, np.float32), np.empty(32, np.int32))
    monkeypatch.setattr(lanes, "FORCE_PORTABLE", True)
    portable = _compress_kernel()
    portable(*arguments)
    ir = next(iter(portable.inspect_llvm().values()))
    assert "llvm.masked.compressstore" in ir and "llvm.x86.avx512" not in ir
    monkeypatch.setattr(lanes, "FORCE_PORTABLE", False)
    if not lanes.avx512():
        pytest.skip("this CPU has no AVX-512: only the portable path exists")
    native = _compress_kernel()
    native(*arguments)
    assert "llvm.x86.avx512.mask.compress" in next(iter(native.inspect_llvm().values()))


def test_a_strided_array_is_refused_when_the_kernel_compiles() -> None:
    # A chunk is 16 adjacent elements: a strided view would be read wrong, so it does not compile.
    values = np.zeros(64)
    with pytest.raises(numba.core.errors.TypingError, match="C-contiguous"):
        _compress_kernel()(values[::2], values[::2], 0.1, 0.9, np.empty(32), np.empty(32), np.empty(32, np.int64))
