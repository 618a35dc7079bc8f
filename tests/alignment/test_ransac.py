import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, RANSACRegressor

from depthadapt.alignment import ScaleShiftFit, fit_scale_shift

pytestmark = pytest.mark.unit

RANSAC_BACKENDS = ["torch", "sklearn"]


def _line_with_outliers(
    batch: int, n: int, outlier_frac: float, seed: int, noise: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """pred, target B x n with target = scale * pred + shift + noise, and one-sided gross outliers."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, n, generator=g, dtype=torch.float64) * 10
    scale = 0.5 + 2 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    shift = 4 * torch.rand(batch, 1, generator=g, dtype=torch.float64) - 2
    target = scale * pred + shift + noise * torch.randn(batch, n, generator=g, dtype=torch.float64)
    outlier = torch.rand(batch, n, generator=g) < outlier_frac
    target = torch.where(outlier, target + 1 + 4 * torch.rand(batch, n, generator=g, dtype=torch.float64), target)
    return pred, target, scale[:, 0], shift[:, 0], outlier


@pytest.mark.parametrize("backend", RANSAC_BACKENDS)
def test_ransac_recovers_scale_shift_where_lstsq_fails(backend: str) -> None:
    pred, target, scale, shift, outlier = _line_with_outliers(2, 3000, 0.3, seed=1)
    lstsq = fit_scale_shift(pred, target)
    assert (lstsq.shift - shift).abs().min() > 0.5  # the one-sided outliers drag least squares away
    fit = fit_scale_shift(pred, target, method="ransac", backend=backend, min_samples=4, max_trials=300)
    torch.testing.assert_close(fit.scale, scale, rtol=0, atol=0.005)
    torch.testing.assert_close(fit.shift, shift, rtol=0, atol=0.02)
    assert not fit.inliers[outlier].any()
    assert fit.inliers[~outlier].float().mean() > 0.99
    assert not fit.fallback.any()
    torch.testing.assert_close(fit.inlier_ratio, fit.inliers.double().mean(1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_and_sklearn_backends_agree(seed: int) -> None:
    pred, target, scale, _, _ = _line_with_outliers(4, 4000, 0.2, seed=seed, noise=0.03)
    kwargs = {"method": "ransac", "min_samples": 10, "max_trials": 200}
    fit_t = fit_scale_shift(pred.float(), target.float(), backend="torch", **kwargs)
    fit_s = fit_scale_shift(pred.float(), target.float(), backend="sklearn", **kwargs)
    torch.testing.assert_close(fit_t.scale, fit_s.scale, rtol=0.005, atol=0)
    torch.testing.assert_close(fit_t.shift, fit_s.shift, rtol=0, atol=0.02 * scale.max().item())
    jaccard = (fit_t.inliers & fit_s.inliers).sum(1) / (fit_t.inliers | fit_s.inliers).sum(1)
    assert (jaccard > 0.97).all(), jaccard


def test_sklearn_backend_is_ransacregressor_on_the_support_points() -> None:
    pred, target, _, _, _ = _line_with_outliers(2, 1500, 0.2, seed=3)
    mask = torch.rand(2, 1500, generator=torch.Generator().manual_seed(0)) < 0.8
    kwargs = {"min_samples": 8, "max_trials": 100, "residual_threshold": 0.1}
    fit = fit_scale_shift(
        pred, target, mask, method="ransac", support="extremes", backend="sklearn", seed=5, **kwargs
    )
    for b in range(2):
        t = target[b][mask[b]].numpy()
        support = (t < np.percentile(t, 10)) | (t > np.percentile(t, 90))
        x, y = pred[b][mask[b]].numpy()[support], t[support]
        ransac = RANSACRegressor(estimator=LinearRegression(), random_state=5, **kwargs).fit(x[:, None], y)
        assert fit.scale[b].item() == pytest.approx(ransac.estimator_.coef_[0], rel=1e-9)
        assert fit.shift[b].item() == pytest.approx(ransac.estimator_.intercept_, rel=1e-9, abs=1e-12)
        assert np.array_equal(fit.inliers[b][mask[b]].numpy()[support], ransac.inlier_mask_)
        assert not fit.inliers[b][mask[b]].numpy()[~support].any()


def test_sklearn_backend_takes_strided_inputs() -> None:
    # Its selection runs in the compiled kernels, which read rows in blocks of adjacent points: a strided pred or
    # target is made contiguous first, and fits as its contiguous copy does.
    pred, target, _, _, _ = _line_with_outliers(2, 40_000, 0.2, seed=4)
    strided_pred = torch.stack([pred, pred], dim=-1)[..., 0]
    strided_target = torch.stack([target, target], dim=-1)[..., 1]
    assert strided_pred.stride(-1) == strided_target.stride(-1) == 2
    kwargs = {"method": "ransac", "support": "extremes", "backend": "sklearn", "min_samples": 8, "max_trials": 20}
    strided = fit_scale_shift(strided_pred, strided_target, **kwargs)
    contiguous = fit_scale_shift(pred, target, **kwargs)
    for name in ("scale", "shift", "inliers", "support_count"):
        assert torch.equal(getattr(strided, name), getattr(contiguous, name)), name


def test_torch_ransac_is_reproducible_and_batch_independent() -> None:
    pred, target, _, _, _ = _line_with_outliers(3, 2000, 0.25, seed=4, noise=0.05)
    kwargs = {"method": "ransac", "min_samples": 6, "max_trials": 150}
    first = fit_scale_shift(pred, target, seed=7, **kwargs)
    again = fit_scale_shift(pred, target, seed=7, **kwargs)
    other = fit_scale_shift(pred, target, seed=8, **kwargs)
    for name in ("scale", "shift", "inliers", "inlier_ratio"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.inliers, other.inliers)
    alone = fit_scale_shift(pred[1:2, :1500], target[1:2, :1500], seed=7, **kwargs)
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[1, :1500] = True
    in_batch = fit_scale_shift(pred, target, mask, seed=7, **kwargs)
    assert torch.equal(in_batch.inliers[1, :1500], alone.inliers[0])
    torch.testing.assert_close(in_batch.scale[1:2], alone.scale, rtol=1e-12, atol=0)


@pytest.mark.parametrize("percentiles", [(10, 90), (25, 60)])
@pytest.mark.parametrize("quantised", [False, True])
def test_extremes_support_matches_numpy_percentiles(percentiles: tuple[float, float], quantised: bool) -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 20, 30, generator=g)
    # Quantised targets: many ties, so the strict inequalities at the percentile values matter.
    target = torch.randint(0, 25, (3, 20, 30), generator=g).float() if quantised else torch.randn(3, 20, 30)
    mask = torch.rand(3, 20, 30, generator=g) < torch.tensor([1.0, 0.5, 0.1])[:, None, None]
    fit = fit_scale_shift(pred, target, mask, support="extremes", percentiles=percentiles)
    for b in range(3):
        t, m = target[b].numpy(), mask[b].numpy()
        low, high = np.percentile(t[m], percentiles)
        expected = m & ((t < low) | (t > high))
        assert np.array_equal(fit.inliers[b].numpy(), expected)
        assert fit.support_count[b].item() == expected.sum()


def test_per_image_masks_of_different_sizes() -> None:
    pred, target, scale, shift, outlier = _line_with_outliers(3, 5000, 0.2, seed=6)
    keep = torch.tensor([1.0, 0.3, 0.03])[:, None]
    mask = torch.rand(3, 5000, generator=torch.Generator().manual_seed(1)) < keep
    target = torch.where(mask, target, torch.nan)  # what lies outside the mask must not matter
    fit = fit_scale_shift(pred, target, mask, method="ransac", min_samples=5, max_trials=200)
    torch.testing.assert_close(fit.scale, scale, rtol=0, atol=0.01)
    torch.testing.assert_close(fit.shift, shift, rtol=0, atol=0.05)
    assert torch.equal(fit.support_count, mask.sum(1))
    assert not (fit.inliers & ~mask).any() and not (fit.inliers & outlier).any()
    assert not fit.fallback.any()


@pytest.mark.parametrize(("method", "backend"), [("lstsq", "torch"), ("ransac", "torch"), ("ransac", "sklearn")])
def test_degenerate_images_fall_back_and_leave_the_others_alone(method: str, backend: str) -> None:
    pred, target, _, _, _ = _line_with_outliers(5, 400, 0.0, seed=8)
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[1] = False  # nothing valid
    pred[2] = 3.0  # constant pred
    target[3] = torch.nan  # no finite target
    mask[4, 30:] = False  # 30 valid points: too few extremes (6) for a RANSAC sample, enough for lstsq
    kwargs = {"method": method, "backend": backend, "support": "extremes", "min_samples": 10}
    fit = fit_scale_shift(pred, target, mask, **kwargs)
    alone = fit_scale_shift(pred[:1], target[:1], **kwargs)
    expected = [False, True, True, True, method == "ransac"]
    assert fit.fallback.tolist() == expected
    torch.testing.assert_close(fit.scale[:1], alone.scale)
    torch.testing.assert_close(fit.shift[:1], alone.shift)
    assert torch.equal(fit.inliers[:1], alone.inliers)
    assert fit.scale[1:4].tolist() == [1.0, 1.0, 1.0] and fit.shift[1:4].tolist() == [0.0, 0.0, 0.0]
    assert not fit.inliers[1:4].any()
    assert fit.support_count.tolist()[1:] == [0, 80, 0, 6]  # constant pred: 20 % of 400 extremes
    # the last image: least squares on all of its 30 valid points for RANSAC, on its 6 extremes for lstsq
    full = fit_scale_shift(pred[4:, :30], target[4:, :30], support="all" if method == "ransac" else "extremes")
    torch.testing.assert_close(fit.scale[4:], full.scale)
    assert fit.inliers[4].sum().item() == (30 if method == "ransac" else 6)
    assert torch.isfinite(fit.scale).all() and torch.isfinite(fit.shift).all()
    assert fit.inlier_ratio[torch.tensor(expected)].eq(0).all()


@pytest.mark.parametrize(("method", "backend"), [("lstsq", "torch"), ("ransac", "torch"), ("ransac", "sklearn")])
@pytest.mark.parametrize("shape", [(2, 0), (0, 4), (2, 4)])
def test_batches_without_any_valid_point_give_the_identity(method: str, backend: str, shape: tuple) -> None:
    pred, target, mask = torch.rand(shape), torch.rand(shape), torch.zeros(shape, dtype=torch.bool)
    fit = fit_scale_shift(pred, target, mask, method=method, backend=backend, support="extremes")
    assert fit.scale.shape == (shape[0],) and fit.inliers.shape == shape and not fit.inliers.any()
    assert fit.fallback.all() and fit.scale.eq(1).all() and fit.shift.eq(0).all()


@pytest.mark.parametrize("backend", RANSAC_BACKENDS)
def test_ransac_without_consensus_is_flagged(backend: str) -> None:
    pred, target, _, _, _ = _line_with_outliers(2, 300, 0.0, seed=9, noise=0.5)
    fit = fit_scale_shift(pred, target, method="ransac", backend=backend, residual_threshold=0.0, max_trials=20)
    assert fit.fallback.all()  # no hypothesis passes exactly through any point
    torch.testing.assert_close(fit.scale, fit_scale_shift(pred, target).scale)


def test_result_unpacks_and_keeps_shapes_and_dtypes() -> None:
    pred, target, _, _, _ = _line_with_outliers(2, 6 * 7, 0.0, seed=10)
    fit = fit_scale_shift(pred.view(2, 6, 7), target.view(2, 6, 7), method="ransac", min_samples=5)
    assert isinstance(fit, ScaleShiftFit)
    scale, shift, inliers = fit
    assert scale.shape == shift.shape == fit.fallback.shape == fit.inlier_ratio.shape == (2,)
    assert scale.dtype == shift.dtype == torch.float64
    assert inliers.shape == (2, 6, 7) and inliers.dtype == torch.bool
    assert fit.support_count.dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "median"}, "method"),
        ({"support": "edges"}, "support"),
        ({"backend": "numpy"}, "backend"),
        ({"percentiles": (90, 10)}, "percentiles"),
        ({"percentiles": (10, 101)}, "percentiles"),
        ({"max_trials": 0}, "max_trials"),
        ({"min_samples": 1}, "min_samples"),
        ({"residual_threshold": -0.1}, "residual_threshold"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fit_scale_shift(torch.rand(1, 10), torch.rand(1, 10), **kwargs)


@pytest.mark.parametrize("backend", RANSAC_BACKENDS)
def test_points_exactly_at_the_threshold_are_inliers(backend: str) -> None:
    # 38 points on t = 2p + 1 (p = 1..39 without 20) and two at p = 20, exactly 0.5 above and below the line;
    # threshold 0.5. Means are 20 and 41, so every residual is exact in float32 (centring included) and the
    # inlier test alone decides: with `<=` the true line has all 40 inliers; with `<` no line can hold both
    # points at p = 20 (1.0 apart), so at most 39 would be inliers.
    pred = torch.tensor([[*range(1, 20), *range(21, 40), 20, 20]], dtype=torch.float64)
    target = 2 * pred + 1
    target[0, -2:] += torch.tensor([0.5, -0.5], dtype=torch.float64)
    fit = fit_scale_shift(pred, target, method="ransac", backend=backend, min_samples=2, residual_threshold=0.5)
    assert fit.inliers.all() and fit.inlier_ratio.item() == 1.0
    assert fit.scale.item() == pytest.approx(2.0, abs=1e-12)  # least squares on all 40: the +-0.5 cancel
    assert fit.shift.item() == pytest.approx(1.0, abs=1e-12)


def test_adaptive_stop_is_sklearns_at_99_percent() -> None:
    from sklearn.linear_model._ransac import _dynamic_max_trials

    from depthadapt.alignment.ransac import _stop_counts

    # After trial i, sklearn stops once i >= _dynamic_max_trials(best inliers, n, k, 0.99); _stop_counts gives
    # the least best inlier count that stops after each trial. At 50 % it would stop far earlier.
    for n, k in ((100, 2), (1000, 10), (5000, 50)):
        trials = 60
        stop = _stop_counts(torch.tensor([n]), trials, k)[0]
        inliers = torch.arange(n + 1)
        for i in (1, 2, 3, 7, 20, trials):
            expected = torch.tensor([i >= _dynamic_max_trials(c, n, k, 0.99) for c in inliers.tolist()])
            assert torch.equal(inliers >= stop[i - 1], expected), (n, k, i)


@pytest.mark.parametrize("backend", RANSAC_BACKENDS)
def test_both_backends_stop_at_the_99_percent_budget(backend: str) -> None:
    # Noise-free line, 10 % gross outliers, 4-point samples: once the exact inlier set is found, 99 % confidence
    # needs ceil(log 0.01 / log(1 - 0.9 ** 4)) = 5 trials (at 50 %: 1). An outlier-free sample comes within 5
    # trials for nearly every image, so nearly every image stops at exactly 5, and none earlier.
    pred, target, scale, _, outlier = _line_with_outliers(16, 500, 0.1, seed=11, noise=0.0)
    kwargs = {"method": "ransac", "min_samples": 4, "residual_threshold": 1e-6, "max_trials": 1000}
    fit = fit_scale_shift(pred, target, backend=backend, **kwargs)
    ratio = (~outlier).double().mean(1)
    needed = torch.ceil(math.log(0.01) / torch.log(1 - ratio**4)).long()
    assert (fit.trials >= needed).all(), (fit.trials, needed)
    assert (fit.trials == needed).double().mean() >= 0.75, (fit.trials, needed)
    torch.testing.assert_close(fit.scale, scale, rtol=1e-9, atol=0)
    assert fit_scale_shift(pred, target).trials.eq(0).all()  # least squares: no trials


def _ransac_rows(p: torch.Tensor, t: torch.Tensor, support: torch.Tensor, max_trials: int, k: int, threshold: float,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU kernel ``cpu.ransac.ransac_row`` row by row, as ``cpu.rows.fit_rows`` calls it: ransac_torch's
    inputs and outputs."""
    from depthadapt.alignment import ransac
    from depthadapt.alignment.cpu import ransac as ransac_kernel
    from depthadapt.alignment.solver import REL_SPREAD_TOL

    u, ratios = ransac.uniforms(seed, max_trials, k).numpy(), ransac.stop_ratios(max_trials, k).numpy()
    inliers = np.zeros(tuple(p.shape), dtype=bool)
    rows = [ransac_kernel.ransac_row(p[b].double().numpy(), t[b].double().numpy(), int(support[b].sum()), u, ratios,
                                     threshold, REL_SPREAD_TOL, inliers[b]) for b in range(p.shape[0])]
    found, trials = zip(*rows, strict=True)
    return torch.from_numpy(inliers), torch.tensor(found), torch.tensor(trials)


@pytest.mark.parametrize(("implementation", "chunk"), [("ransac_torch", None), ("ransac_torch", 3),
                                                       ("kernel", None)])
def test_ransac_winner_is_the_brute_force_one(monkeypatch: pytest.MonkeyPatch, implementation: str,
                                              chunk: int | None) -> None:
    # Quantised points: many hypotheses tie on the inlier count with different inlier sets, so the winner is
    # the tie-break's (smaller sum of squared inlier residuals; the earlier trial on an exact tie). Brute force:
    # every hypothesis the backend drew, scored in float64, up to the trial it stopped at.
    from depthadapt.alignment import ransac

    if chunk is not None:  # hypotheses scored 3 at a time: the tie-break across chunks
        monkeypatch.setattr(ransac, "_CPU_CHUNK_ELEMENTS", 3 * 40 * 32)
    g = torch.Generator().manual_seed(5)
    p = torch.randint(0, 5, (32, 40), generator=g).double()
    t = 2 * p + 0.5 * torch.randint(0, 5, (32, 40), generator=g).double()
    support = torch.ones_like(p, dtype=torch.bool)
    max_trials, k, threshold, seed = 40, 3, 0.3, 1
    run = _ransac_rows if implementation == "kernel" else ransac.ransac_torch
    inliers, found, trials = run(p, t, support, max_trials, k, threshold, seed)
    u = torch.rand((max_trials, k), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scale, shift = ransac._hypotheses(p, t, support.sum(1), u)
    residual = (scale[..., None] * p[:, None] + shift[..., None] - t[:, None]).abs()  # B x trials x n
    is_inlier = residual <= threshold
    counts, ssr = is_inlier.sum(-1), (residual.square() * is_inlier).sum(-1)
    exercised = 0
    for b in range(p.shape[0]):
        n = int(trials[b])
        top = counts[b, :n].max()
        tied = (counts[b, :n] == top).nonzero()[:, 0]
        winner = tied[ssr[b, tied].argmin()]
        exercised += int(not torch.equal(is_inlier[b, winner], is_inlier[b, tied[0]]))  # not the first top one's
        assert found[b] and torch.equal(inliers[b], is_inlier[b, winner]), b
    assert exercised >= 3  # images whose winner needed the tie-break


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_cpu_ransac_is_the_batched_torch_one(seed: int) -> None:
    # The CPU kernels follow ransac_torch (the GPU path) trial by trial: the same hypotheses, inlier sets, stop.
    from depthadapt.alignment import ransac

    g = torch.Generator().manual_seed(seed)
    pred, target, _, _, _ = _line_with_outliers(6, 3000, 0.3, seed=seed, noise=0.05)
    count = torch.tensor([3000, 2500, 40, 7, 0, 1200])  # packed prefixes, one shorter than min_samples, one empty
    support = torch.arange(3000) < count[:, None]
    pred, target = torch.where(support, pred, 0.0), torch.where(support, target, 0.0)
    target[2] = 1.5 * pred[2] + 0.25 * torch.randint(0, 3, (3000,), generator=g).double() * support[2]  # ties
    for max_trials, k in ((200, 8), (30, 2)):
        expected = ransac.ransac_torch(pred, target, support, max_trials, k, 0.1, seed)
        compiled = _ransac_rows(pred, target, support, max_trials, k, 0.1, seed)
        for a, b in zip(expected, compiled, strict=True):
            assert torch.equal(a, b), (max_trials, k)
        assert expected[2][4] == 0 and not expected[1][4]  # the empty row ran no trial


def test_masked_moments_kernel_is_the_torch_refit() -> None:
    from depthadapt.alignment.solver import weighted_scale_shift

    g = torch.Generator().manual_seed(6)
    p = torch.randn(4, 5000, generator=g, dtype=torch.float64) * 3 + 100
    t = 0.5 * p + torch.randn(4, 5000, generator=g, dtype=torch.float64)
    w = torch.rand(4, 5000, generator=g) < torch.tensor([0.5, 1.0, 0.0, 1 / 5000])[:, None]
    w[3] = False
    w[3, 17] = True  # one point: degenerate; row 2 empty: the identity
    compiled = weighted_scale_shift(p, t, w)  # CPU, 2-D, bool: the kernel
    reference = weighted_scale_shift(p, t, w.double())  # float weights: the torch reductions
    torch.testing.assert_close(compiled[0], reference[0], rtol=1e-10, atol=0)
    torch.testing.assert_close(compiled[1], reference[1], rtol=1e-10, atol=0)
    assert torch.equal(compiled[2], reference[2]) and compiled[2].tolist() == [False, False, True, True]
    assert compiled[0][2] == 1 and compiled[1][2] == 0 and compiled[1][3] == t[3, 17]


@pytest.mark.parametrize("shape", [(0, 10), (2, 0), (1, 1), (3, 7), (2, 4, 5), (2, 40_000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32])
def test_cpu_fit_is_the_batched_torch_fit_on_odd_inputs(monkeypatch: pytest.MonkeyPatch, shape: tuple,
                                                         dtype: torch.dtype) -> None:
    # The CPU path (compiled selection and RANSAC) against the GPU path run on the CPU: empty batches and rows,
    # one point, 3-D maps, half precision and integers, a mask, a NaN, a strided (non-contiguous) input.
    from depthadapt.alignment import fit as alignment
    from depthadapt.alignment import support

    g = torch.Generator().manual_seed(len(shape) + shape[-1])
    p = (torch.rand((*shape, 2), generator=g) * 10).to(dtype)[..., 0]
    t = (2 * p.double() + 1 + torch.randn(shape, generator=g, dtype=torch.float64)).float()
    if t.numel():
        t.view(-1)[0] = float("nan")
    mask = torch.rand(shape, generator=g) < 0.7
    fits = {}
    for path in ("cpu", "torch"):
        if path == "torch":
            monkeypatch.setattr(support, "support_points_cpu", support.support_points_torch)
            monkeypatch.setattr(alignment, "_fit_compiled", lambda p, t, mask, opts: alignment._fit_batched(
                p, t, support.valid_mask(p, t, mask), opts))
        fits[path] = [fit_scale_shift(p, t, m, method=method, support=s, min_samples=4, max_trials=50)
                      for m in (None, mask) for method, s in (("lstsq", "extremes"), ("ransac", "all"),
                                                              ("ransac", "extremes"))]
    for cpu, reference in zip(fits["cpu"], fits["torch"], strict=True):
        for name in ("inliers", "fallback", "support_count", "trials"):
            assert torch.equal(getattr(cpu, name), getattr(reference, name)), name
        torch.testing.assert_close(cpu.scale, reference.scale, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cpu.shift, reference.shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_fit_is_the_same_on_threads_and_on_one_thread(dtype: torch.dtype) -> None:
    # The compiled CPU fit shares the rows out to its threads at run time: every thread count gives the same results.
    g = torch.Generator().manual_seed(8)
    pred, target, _, _, _ = _line_with_outliers(7, 6000, 0.3, seed=8, noise=0.05)
    pred, target = pred.to(dtype), target.to(dtype)
    mask = torch.rand(pred.shape, generator=g) < 0.8
    threads = torch.get_num_threads()
    fits = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            fits[n] = [fit_scale_shift(pred, target, m, method="ransac", support="extremes", min_samples=8,
                                       max_trials=300) for m in (None, mask)]
    finally:
        torch.set_num_threads(threads)
    for n in (2, 3):
        for fit, reference in zip(fits[n], fits[1], strict=True):
            for name in ("scale", "shift", "inliers", "fallback", "support_count", "trials", "inlier_ratio"):
                assert torch.equal(getattr(fit, name), getattr(reference, name)), (n, name)
    assert fits[1][0].trials.min() > 1 and not torch.equal(fits[1][0].inliers, fits[1][1].inliers)
