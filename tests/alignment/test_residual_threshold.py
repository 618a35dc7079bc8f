"""RANSAC's residual threshold options: the paper's absolute number, sklearn's MAD, a fraction of the support range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthadapt.alignment import ScaleShiftFitOptions, fit_scale_shift, residual_thresholds
from depthadapt.pseudo_labels import metric_pseudo_labels

pytestmark = pytest.mark.unit


def street_like(batch: int = 1, n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pred, target B x N in street disparity units (0.01..0.21 1/m, target = 0.2 pred + 0.01) with 20 % of the
    points 0.04 1/m off (below the paper's 0.1): pred, target, outlier mask."""
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, n, generator=gen, dtype=torch.float64)
    outliers = torch.rand(batch, n, generator=gen) < 0.2
    target = 0.2 * pred + 0.01 + 0.04 * outliers
    return pred, target, outliers


def test_mad_is_sklearns_default_threshold() -> None:
    from sklearn.linear_model import LinearRegression, RANSACRegressor

    pred, target, _ = street_like(seed=1)
    target = target + 0.003 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fit = fit_scale_shift(pred, target, method="ransac", backend="sklearn", residual_threshold="mad", min_samples=10,
                          seed=3)
    reference = RANSACRegressor(estimator=LinearRegression(), min_samples=10, random_state=3, max_trials=1000)
    reference.fit(pred[0, :, None].numpy(), target[0].numpy())  # residual_threshold None: the MAD of the targets
    assert np.array_equal(fit.inliers[0].numpy(), reference.inlier_mask_)
    values = target[0].numpy()
    assert fit.residual_threshold.item() == pytest.approx(float(np.median(np.abs(values - np.median(values)))))
    torch_fit = fit_scale_shift(pred, target, method="ransac", residual_threshold="mad", min_samples=10, seed=3)
    assert torch_fit.residual_threshold.item() == pytest.approx(fit.residual_threshold.item())


def test_support_range_is_a_fraction_of_each_images_support_target_range() -> None:
    pred, target, _ = street_like(batch=2, seed=4)
    target[1] *= 3  # the second image's targets span three times the range
    options = ScaleShiftFitOptions(method="ransac", support="extremes", residual_threshold=0.05,
                                   threshold_unit="support_range")
    expected = []
    for t in target.numpy():
        low, high = np.percentile(t, [10, 90])
        extremes = t[(t < low) | (t > high)]
        expected.append(0.05 * (extremes.max() - extremes.min()))
    torch.testing.assert_close(residual_thresholds(pred * 7, target, None, options), torch.tensor(expected,
                               dtype=torch.float64))
    fit = fit_scale_shift(pred, target, options=options, min_samples=10)
    torch.testing.assert_close(fit.residual_threshold, torch.tensor(expected, dtype=torch.float64))
    for b, threshold in enumerate(expected):  # each image fitted with its own threshold, not its neighbour's
        alone = fit_scale_shift(pred[b : b + 1], target[b : b + 1], options=options, min_samples=10,
                                residual_threshold=threshold, threshold_unit="target")
        assert torch.equal(fit.inliers[b], alone.inliers[0])
        assert fit.scale[b].item() == alone.scale.item() and fit.inlier_ratio[b].item() == alone.inlier_ratio.item()


def test_a_relative_threshold_rejects_small_outliers_in_any_unit_where_the_absolute_one_does_not() -> None:
    pred, target, outliers = street_like(seed=5)
    absolute = fit_scale_shift(pred, target, method="ransac", min_samples=10)  # the paper's 0.1 1/m
    relative = fit_scale_shift(pred, target, method="ransac", min_samples=10, residual_threshold=0.05,
                               threshold_unit="support_range")
    assert absolute.inlier_ratio.item() == 1.0 and absolute.shift.item() > 0.015  # pulled up by the outliers
    assert torch.equal(relative.inliers[0], ~outliers[0])
    assert relative.scale.item() == pytest.approx(0.2) and relative.shift.item() == pytest.approx(0.01)
    in_decimetres = fit_scale_shift(pred, target * 10, method="ransac", min_samples=10, residual_threshold=0.05,
                                    threshold_unit="support_range")
    assert torch.equal(in_decimetres.inliers, relative.inliers)
    assert in_decimetres.scale.item() == pytest.approx(2.0)
    assert not torch.equal(fit_scale_shift(pred, target * 10, method="ransac", min_samples=10).inliers,
                           absolute.inliers)  # the absolute number means something else in other units


def test_labels_carry_each_images_threshold_and_their_confidence_uses_it() -> None:
    gen = torch.Generator().manual_seed(6)
    metric = 5 + 60 * torch.rand(2, 12, 20, generator=gen)
    metric[1] = metric[1] / 4  # the second image is nearer: a wider disparity range
    relative = 1 / metric + 0.002 * torch.randn(metric.shape, generator=gen)
    labels = metric_pseudo_labels(relative, metric, method="masked_ransac", min_samples=10, residual_threshold=0.1,
                                  threshold_unit="support_range")
    thresholds = labels.fit.residual_threshold
    assert thresholds[1] > 3 * thresholds[0]
    assert [r["residual_threshold"] for r in labels.records()] == thresholds.tolist()
    calibrated = labels.fit.scale[:, None, None] * relative + labels.fit.shift[:, None, None]
    expected = torch.exp(-0.5 * ((calibrated - 1 / metric) / thresholds[:, None, None].float()).square())
    torch.testing.assert_close(labels.confidence, expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(residual_threshold="mad", threshold_unit="support_range"), "use threshold_unit 'target'"),
    (dict(residual_threshold="median"), "a finite number >= 0 or 'mad'"),
    (dict(residual_threshold=-0.1), "a finite number >= 0 or 'mad'"),
    (dict(residual_threshold=True), "a finite number >= 0 or 'mad'"),
    (dict(threshold_unit="range"), "threshold_unit"),
])
def test_bad_threshold_options_are_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScaleShiftFitOptions(**kwargs)
