"""The sparse-alignment benchmark's paired comparison (benchmarks/sparse_alignment.py: tukey vs least squares)."""

from __future__ import annotations

import pytest

from benchmarks.sparse_alignment import paired_difference

pytestmark = pytest.mark.unit


def test_paired_difference_is_first_minus_second_over_the_frames_both_score() -> None:
    first = [0.10, 0.20, None, 0.50, 0.30]
    second = [0.12, 0.20, 0.40, None, 0.10]
    paired = paired_difference(first, second)
    assert paired["frames"] == 3  # a frame that either method leaves non-metric is out of both
    assert paired["mean"] == pytest.approx((-0.02 + 0.0 + 0.20) / 3)
    assert paired["median"] == pytest.approx(0.0)
    assert paired["share_first_not_worse"] == pytest.approx(2 / 3)
    swapped = paired_difference(second, first)
    assert swapped["mean"] == pytest.approx(-paired["mean"])
    assert swapped["share_first_not_worse"] == pytest.approx(2 / 3)  # the tie counts for both


def test_paired_difference_interval_brackets_the_mean_and_excludes_zero_for_a_clear_gap() -> None:
    first = [0.2 + 0.01 * (i % 5) for i in range(40)]
    clear = paired_difference(first, [v - 0.05 for v in first])
    assert clear["low"] == pytest.approx(0.05) and clear["high"] == pytest.approx(0.05)
    noisy = paired_difference(first, [v + (0.03 if i % 2 else -0.03) for i, v in enumerate(first)])
    assert noisy["low"] < 0 < noisy["high"]
    assert noisy["low"] <= noisy["mean"] <= noisy["high"]
    assert paired_difference(first, first[::-1]) == paired_difference(first, first[::-1])  # seeded resampling


def test_paired_difference_refuses_when_no_frame_is_metric_for_both() -> None:
    with pytest.raises(ValueError, match="no frame"):
        paired_difference([None, 0.1], [0.2, None])
