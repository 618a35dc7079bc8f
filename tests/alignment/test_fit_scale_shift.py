from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from depthadapt.alignment import ScaleShiftFitOptions, fit_scale_shift, lstsq_scale_shift, support
from depthadapt.alignment.cpu import rows, selection

pytestmark = pytest.mark.unit


def test_hand_worked_three_points():
    # pred [0, 1, 2], target [1, 2, 4]: mean p = 1, mean t = 7/3
    # dp = [-1, 0, 1], dt = [-4/3, -1/3, 5/3]; cov = 4/3 + 0 + 5/3 = 3; var = 2
    # scale = 3 / 2 = 1.5; shift = 7/3 - 1.5 * 1 = 5/6
    pred = torch.tensor([[0.0, 1.0, 2.0]])
    target = torch.tensor([[1.0, 2.0, 4.0]])
    scale, shift, degenerate = lstsq_scale_shift(pred, target)
    assert scale.item() == pytest.approx(1.5, abs=1e-6)
    assert shift.item() == pytest.approx(5.0 / 6.0, abs=1e-6)
    assert not degenerate.item()


def test_batch_recovers_known_scale_shift_with_per_image_masks():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 4, 5, generator=g) * 10
    true_scale = torch.tensor([2.0, -0.5, 0.25])
    true_shift = torch.tensor([1.0, 3.0, -7.0])
    target = true_scale[:, None, None] * pred + true_shift[:, None, None]
    mask = torch.ones(3, 4, 5, dtype=torch.bool)
    mask[1, :2] = False  # image 1: top half masked out
    mask[2, :, 1:] = False  # image 2: only the first column (4 points)
    # Garbage outside the masks must not influence the fit.
    target[1, :2] = 1e6
    target[2, :, 1:] = -1e6
    scale, shift, degenerate = lstsq_scale_shift(pred, target, mask)
    torch.testing.assert_close(scale, true_scale, rtol=0, atol=1e-5)
    torch.testing.assert_close(shift, true_shift, rtol=0, atol=1e-4)
    assert not degenerate.any()
    assert scale.dtype == torch.float32 and shift.dtype == torch.float32 and degenerate.dtype == torch.bool


def test_degenerate_images_are_flagged_with_fallbacks():
    pred = torch.tensor(
        [
            [0.0, 1.0, 2.0, 3.0],  # regular: target = 3 * pred - 1
            [5.0, 5.0, 5.0, 5.0],  # constant pred
            [1.0, 2.0, 3.0, 4.0],  # one valid point
            [1.0, 2.0, 3.0, 4.0],  # no valid point
        ]
    )
    target = torch.tensor(
        [
            [-1.0, 2.0, 5.0, 8.0],
            [1.0, 2.0, 3.0, 6.0],
            [9.0, 1.0, 1.0, 1.0],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2, 1:] = False
    mask[3] = False
    scale, shift, degenerate = lstsq_scale_shift(pred, target, mask)
    assert degenerate.tolist() == [False, True, True, True]
    assert torch.isfinite(scale).all() and torch.isfinite(shift).all()
    # regular image
    assert scale[0].item() == pytest.approx(3.0, abs=1e-6)
    assert shift[0].item() == pytest.approx(-1.0, abs=1e-6)
    # constant pred: scale 0, shift = mean target = (1 + 2 + 3 + 6) / 4 = 3
    assert scale[1].item() == 0.0
    assert shift[1].item() == pytest.approx(3.0)
    # one valid point: scale 0, shift = that target value
    assert scale[2].item() == 0.0
    assert shift[2].item() == pytest.approx(9.0)
    # nothing valid: identity
    assert scale[3].item() == 1.0
    assert shift[3].item() == 0.0


def test_non_finite_values_are_excluded():
    # Valid points after dropping NaN / inf: pred [0, 1, 2], target [1, 2, 4] -> scale 1.5, shift 5/6
    pred = torch.tensor([[0.0, float("nan"), 1.0, 2.0, 3.0]])
    target = torch.tensor([[1.0, 100.0, 2.0, 4.0, float("inf")]])
    scale, shift, degenerate = lstsq_scale_shift(pred, target)
    assert scale.item() == pytest.approx(1.5, abs=1e-6)
    assert shift.item() == pytest.approx(5.0 / 6.0, abs=1e-6)
    assert not degenerate.item()


def test_float64_internal_precision_with_large_offset():
    # pred around 1e4 with unit spread: raw normal equations in float32 would lose most digits.
    pred = torch.tensor([[10000.0, 10001.0, 10002.0, 10003.0]])
    target = 0.5 * pred.double() - 4999.0  # [1, 1.5, 2, 2.5]
    scale, shift, _ = lstsq_scale_shift(pred, target.float())
    assert scale.item() == pytest.approx(0.5, abs=1e-7)
    assert shift.item() == pytest.approx(-4999.0, abs=1e-3)


def test_returns_input_dtype_and_accepts_b_n():
    pred = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    scale, shift, _ = lstsq_scale_shift(pred, target)
    assert scale.dtype == torch.float64 and shift.dtype == torch.float64
    assert scale.shape == (1,) and shift.shape == (1,)
    assert scale.item() == pytest.approx(1.5, abs=1e-12)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"same shape.*\(1, 3\).*\(1, 4\)"):
        lstsq_scale_shift(torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="mask must have the shape"):
        lstsq_scale_shift(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="B x H x W or B x N"):
        lstsq_scale_shift(torch.zeros(3), torch.zeros(3))


def _support_inputs(quantised: bool, n: int = 70_000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pred, target, mask 3 x n; rows long enough for the sampled bracket of the CPU order statistics."""
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 30, (3, n), generator=g).float() if quantised else torch.randn(3, n, generator=g)
    mask = torch.rand(3, n, generator=g) < torch.tensor([1.0, 0.6, 0.9])[:, None]
    return torch.rand(3, n, generator=g), target, mask


@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.parametrize("percentiles", [(10, 90), (0, 100), (33.3, 50)])
def test_cpu_and_batched_torch_support_selection_agree_with_numpy(quantised: bool, percentiles: tuple) -> None:
    pred, target, mask = _support_inputs(quantised)
    target[2] = torch.arange(target.shape[1]).remainder(4).float() + torch.linspace(0, 1e-3, target.shape[1])
    valid = support.valid_mask(pred, target, mask)
    threads = torch.get_num_threads()
    try:  # with 2 threads the images are selected concurrently: the same result
        torch.set_num_threads(2)
        concurrent = support.support_points_cpu(pred, target, valid, "extremes", percentiles)
    finally:
        torch.set_num_threads(threads)
    idx, pc, tc, count = support.support_points_cpu(pred, target, valid, "extremes", percentiles)
    assert all(torch.equal(a, b) for a, b in zip(concurrent, (idx, pc, tc, count), strict=True))
    idx_t, pc_t, tc_t, count_t = support.support_points_torch(pred, target, valid, "extremes", percentiles)
    assert torch.equal(idx, idx_t) and torch.equal(count, count_t)
    assert torch.equal(pc, pc_t) and torch.equal(tc, tc_t)
    for b in range(3):
        t, m = target[b].numpy(), mask[b].numpy()
        low, high = np.percentile(t[m], percentiles)
        expected = np.flatnonzero(m & ((t < low) | (t > high)))
        assert np.array_equal(idx[b, : count[b]].numpy(), expected)
        assert torch.equal(tc[b, : count[b]], target[b, expected].double())
        assert (idx[b, count[b] :] == target.shape[1]).all() and (tc[b, count[b] :] == 0).all()


def _periodic_row(n: int, sample_points: int = selection.SAMPLE_POINTS) -> np.ndarray:
    """A row whose strided sample of ``sample_points`` sees one phase only (its period is the sample's stride): the
    sampled brackets miss (the whole-row path)."""
    period = n // sample_points
    return (torch.arange(n).remainder(period).float() + torch.linspace(0, 1e-3, n)).numpy()


def test_the_periodic_row_defeats_the_sampled_brackets() -> None:
    values = _periodic_row(70_000)
    n = values.size
    for percentiles in ((10, 90), (25, 50)):
        ranks = [int(p / 100 * (n - 1)) for p in percentiles]
        bounds = selection._brackets(values, np.array([ranks[0], ranks[0] + 1, ranks[1], ranks[1] + 1]),
                                     selection.SAMPLE_POINTS)
        below = [(values < bounds[b, 0]).sum() for b in range(2)]
        inside = [((values >= bounds[b, 0]) & (values <= bounds[b, 1])).sum() for b in range(2)]
        assert any(not below[b] <= ranks[b] < below[b] + inside[b] - 1 for b in range(2)), percentiles


@pytest.mark.parametrize("percentiles", [(10, 90), (0, 100), (33.3, 50), (25, 50), (50, 50.5)])
def test_support_row_is_numpys_rule_on_every_kind_of_row(percentiles: tuple) -> None:
    g = torch.Generator().manual_seed(3)
    rows = [torch.randn(100_000, generator=g).numpy(), torch.randint(0, 5, (100_000,), generator=g).double().numpy(),
            _periodic_row(70_000), torch.rand(100, generator=g).numpy(), np.ones(50_000, np.float32),
            np.array([2.0]), np.array([3.0, 1.0]), torch.rand(70_001, generator=g).numpy()]
    for values in rows:
        n = values.size
        preds = np.arange(n, dtype=values.dtype) * 0.5  # buffers as the fit passes them (one compiled kernel)
        idx, pc, tc = np.full(n, -1, np.int32), np.full(n, np.nan, values.dtype), np.full(n, np.nan, values.dtype)
        scratch = np.empty(2 * n, values.dtype)
        count = selection.support_row(values, preds, True, *map(float, percentiles), idx, pc, tc, scratch)
        low, high = np.percentile(values, percentiles)
        expected = np.flatnonzero((values < low) | (values > high))
        assert np.array_equal(idx[:count], expected), (n, values.dtype)
        assert np.array_equal(tc[:count], values[expected]) and np.array_equal(pc[:count], preds[expected])
        count = selection.support_row(values, preds, False, *map(float, percentiles), idx, pc, tc, scratch)
        assert count == n and np.array_equal(idx, np.arange(n)) and np.array_equal(tc, values)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_support_row_refuses_a_row_with_a_nan_or_inf(bad: float) -> None:
    # The compiled fit tests finiteness in the selection's first pass (the caller then fits on the valid points).
    values, preds = np.linspace(0, 1, 200_000), np.linspace(1, 3, 200_000)
    idx, pc, tc, scratch = np.empty(200_000, np.int32), np.empty(200_000), np.empty(200_000), np.empty(400_000)
    for where, position in (("values", 123_457), ("preds", 199_999), ("preds", 0)):
        row = {"values": values.copy(), "preds": preds.copy()}
        row[where][position] = bad
        for extremes in (True, False):
            count = selection.support_row(row["values"], row["preds"], extremes, 10.0, 90.0, idx, pc, tc, scratch)
            assert count == -1
    assert selection.support_row(values, preds, True, 10.0, 90.0, idx, pc, tc, scratch) == 40_000


def test_fit_options_flow_in_as_a_value_or_keywords() -> None:
    pred, target, mask = _support_inputs(False, n=3000)
    target = 2 * pred + 0.1 * target
    options = ScaleShiftFitOptions(method="ransac", support="extremes", percentiles=[20, 80], min_samples=5,
                                   max_trials=50, residual_threshold=0.2, seed=3)
    assert options.percentiles == (20, 80)  # a config's list becomes the tuple
    by_value = fit_scale_shift(pred, target, mask, options)
    by_keywords = fit_scale_shift(pred, target, mask, **asdict(options))
    for a, b in zip(asdict(by_value).values(), asdict(by_keywords).values(), strict=True):
        assert torch.equal(a, b)
    overridden = fit_scale_shift(pred, target, mask, options, seed=4)
    assert torch.equal(overridden.inliers, fit_scale_shift(pred, target, mask, replace(options, seed=4)).inliers)
    assert not torch.equal(overridden.inliers, by_value.inliers)
    default = fit_scale_shift(pred, target, mask)
    assert default.trials.eq(0).all() and torch.equal(default.support_count, mask.sum(1))  # lstsq on all points


def test_fit_options_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="min_samples must be an int >= 2"):
        ScaleShiftFitOptions(min_samples=1)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        ScaleShiftFitOptions(seed=-1)
    with pytest.raises(TypeError, match="trials"):
        fit_scale_shift(torch.rand(1, 10), torch.rand(1, 10), trials=3)


def _rows_in_child(queue, pred: torch.Tensor, target: torch.Tensor) -> None:
    fit = fit_scale_shift(pred, target, method="ransac", support="extremes", min_samples=4)
    queue.put((rows.map_rows(lambda b: b * 3, 4), fit.scale.tolist()))


def test_row_workers_run_in_a_forked_child() -> None:
    # A process forked after a fit (a DataLoader worker) inherits the parent's row pool without its threads: it must
    # not wait for them (a pool of its own).
    import multiprocessing

    threads = torch.get_num_threads()
    pred = torch.rand(4, 2000, generator=torch.Generator().manual_seed(3))  # small: torch's own ops stay serial
    target = 2 * pred + 1
    try:
        torch.set_num_threads(2)
        assert rows.map_rows(lambda b: b * 2, 4) == [0, 2, 4, 6]  # the parent's pool exists now
        fit_scale_shift(pred, target, method="ransac", support="extremes", min_samples=4)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_rows_in_child, args=(queue, pred, target))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
        rows_in_child, scale = queue.get(timeout=5)
        assert child.exitcode == 0 and rows_in_child == [0, 3, 6, 9]
        assert scale == pytest.approx([2.0] * 4)
    finally:
        torch.set_num_threads(threads)


def test_two_ranks_narrows_from_a_sample_and_falls_back_when_the_sample_misses() -> None:
    # The selection inside a bracket narrows it again from a strided sample (``_narrow``); a row whose sample sees one
    # phase only (period = the sample's stride) misses there, counted, and is selected whole.
    g = torch.Generator().manual_seed(4)
    n = 9000
    rows = {"random": torch.randn(n, generator=g).numpy(),
            "quantised": torch.randint(0, 7, (n,), generator=g).float().numpy(),
            "periodic": _periodic_row(n, selection.NARROW_POINTS)}
    for name, values in rows.items():
        ordered = np.sort(values)
        for first, second in ((0, 1), (900, 901), (4500, 4500), (8998, 8999)):
            got = selection._two_ranks(values.copy(), n, first, second)
            assert got == (ordered[first], ordered[second]), (name, first)
            if name == "random":
                assert _count_after_narrow(values, first, second) < n // 4, first  # a few hundred of the 9000
    assert _count_after_narrow(rows["periodic"], 4500, 4501) == n  # its sample sees one phase: missed, whole row


def _count_after_narrow(values: np.ndarray, first: int, second: int) -> int:
    return selection._narrow(values.copy(), values.size, first, second)[0]
