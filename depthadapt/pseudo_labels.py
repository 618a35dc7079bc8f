"""Dual-teacher metric pseudo-labels (dual-teacher paper): a relative teacher's map calibrated to a metric teacher's.

Per image, ``scale`` and ``shift`` are fitted so that ``scale * relative + shift`` matches the metric teacher
(``depthadapt.alignment.fit_scale_shift``), and the calibrated relative map is the label. The paper's five
methods: ``baseline`` (the metric teacher as is, no fit), ``lstsq`` and ``ransac`` on all valid pixels, and
``masked_lstsq`` / ``masked_ransac`` on the support pixels of its eq. (2), where the metric teacher's depth
is below its 10th or above its 90th percentile.

Fit space. The relative teacher outputs disparity, the metric teacher metres.

- ``disparity`` (default, the usual practice): fit the relative output to ``1 / metric``; the label is
  ``1 / (scale * relative + shift)``, clamped to ``max_depth``, and 0 (invalid) where the calibrated
  disparity is not positive. The support pixels are the same set in both spaces: the percentiles of
  ``1 / metric`` are the reciprocals of the mirrored percentiles of ``metric`` (10 / 90 are symmetric),
  and the strict inequalities select the same pixels.
- ``depth`` (the paper's eq. (1) read literally): fit the relative output directly to the metric depth;
  the label is ``scale * relative + shift``, clamped to ``(0, max_depth]``, 0 where not positive. An
  affine map of disparity cannot follow depth's ``1 / x`` shape, so this space is there to be compared.

Residual threshold. ``residual_threshold`` (the paper's 0.1) is in the fit space's units: 1/m in disparity
space, m in depth space. In disparity space 0.1 1/m is wide: every disparity beyond 10 m lies within
0.1 of every other, so nearly all support points are inliers (99.9 % on the synthetic street domain with
the tiny teachers) and RANSAC there acts like least squares except for gross near-range outliers; in depth
space 0.1 m is narrow (2 % inliers). We keep the paper's absolute threshold in both spaces and do not
offer a relative one: per-image thresholds of 0.02 to 0.2 times the median target, measured on that
domain, gave worse labels than the absolute 0.1 (masked RANSAC AbsRel 0.28 against 0.25).

Confidence. ``exp(-(r / residual_threshold) ** 2 / 2)`` of the fit residual ``r`` (fit space, per pixel):
1 where the calibrated relative map agrees with the metric teacher, 0.61 at the RANSAC inlier threshold;
the baseline (no fit) gets 1 on its valid pixels. 0 where the label is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from depthadapt.alignment import ScaleShiftFit, ScaleShiftFitOptions, check_choice, fit_scale_shift

__all__ = ["FIT_SPACES", "METHODS", "FitSpace", "LabelMethod", "TABLE_COLUMNS", "PseudoLabels", "metric_pseudo_labels"]

LabelMethod = Literal["baseline", "lstsq", "masked_lstsq", "ransac", "masked_ransac"]
METHODS: tuple[str, ...] = get_args(LabelMethod)
"""The labelling methods, in the row order of the paper's Table 2."""
FitSpace = Literal["disparity", "depth"]
FIT_SPACES: tuple[str, ...] = get_args(FitSpace)
TABLE_COLUMNS: tuple[str, ...] = ("d1", "d2", "d3", "abs_rel", "rmse", "rmse_log")
"""The metrics of the paper's Tables 2 and 3, in their order."""

# method -> (fit_scale_shift method, support)
_FITS: dict[str, tuple[str, str]] = {
    "lstsq": ("lstsq", "all"),
    "masked_lstsq": ("lstsq", "extremes"),
    "ransac": ("ransac", "all"),
    "masked_ransac": ("ransac", "extremes"),
}


@dataclass(frozen=True)
class PseudoLabels:
    """Labels of a batch: ``depth`` and ``confidence`` B x H x W, the ``fit`` (None for the baseline)."""

    depth: Tensor
    confidence: Tensor
    fit: ScaleShiftFit | None
    method: str
    fit_space: str

    def records(self) -> list[dict[str, Any]]:
        """Per image: method, fit_space, scale, shift, inlier_ratio, support_count, fallback (None: no fit)."""
        batch = self.depth.shape[0]
        if self.fit is None:
            fields = dict.fromkeys(("scale", "shift", "inlier_ratio", "support_count", "fallback"), [None] * batch)
        else:
            fields = {
                "scale": self.fit.scale.tolist(),
                "shift": self.fit.shift.tolist(),
                "inlier_ratio": self.fit.inlier_ratio.tolist(),
                "support_count": self.fit.support_count.tolist(),
                "fallback": self.fit.fallback.tolist(),
            }
        return [
            {"method": self.method, "fit_space": self.fit_space, **{k: v[i] for k, v in fields.items()}}
            for i in range(batch)
        ]


def metric_pseudo_labels(
    relative: Tensor,
    metric: Tensor,
    valid: Tensor | None = None,
    *,
    method: LabelMethod = "masked_ransac",
    fit_space: FitSpace = "disparity",
    max_depth: float = 80.0,
    options: ScaleShiftFitOptions | None = None,
    **fit_overrides: Any,
) -> PseudoLabels:
    """Metric labels from both teachers: relative (disparity), metric (m), valid B x H x W -> PseudoLabels.

    Pixels take part where ``valid`` (all if None), both maps are finite and the metric depth is positive;
    elsewhere the label is 0. The fit options are a ``ScaleShiftFitOptions`` (defaults: the paper's RANSAC
    settings) and/or its fields as keywords (``percentiles``, ``backend``, ``max_trials``, ``min_samples``,
    ``residual_threshold``, ``seed``), which override it; its ``method`` and ``support`` are set by
    ``method``. See the module docstring for the methods, fit spaces and the units of ``residual_threshold``.
    """
    check_choice("method", method, METHODS)
    check_choice("fit_space", fit_space, FIT_SPACES)
    if "support" in fit_overrides:
        raise ValueError("support is set by method (masked_* use the extremes): do not pass it")
    fit_method, support = _FITS.get(method, ("lstsq", "all"))
    options = replace(options or ScaleShiftFitOptions(), **fit_overrides, method=fit_method, support=support)
    if relative.shape != metric.shape or relative.ndim != 3:
        raise ValueError(
            f"relative and metric must be B x H x W of one shape, got {tuple(relative.shape)} and {tuple(metric.shape)}"
        )
    usable = torch.isfinite(relative) & torch.isfinite(metric) & (metric > 0)
    if valid is not None:
        usable &= valid.to(device=relative.device, dtype=torch.bool)
    if method == "baseline":
        depth = torch.where(usable, metric.clamp_max(max_depth), 0.0)
        return PseudoLabels(depth, usable.to(depth.dtype), None, method, fit_space)

    target = torch.where(usable, metric, 1.0)
    target = target.reciprocal() if fit_space == "disparity" else target  # ``1.0 / x`` is two passes in torch
    fit = fit_scale_shift(relative, target, usable, options)
    calibrated = fit.scale[:, None, None] * relative + fit.shift[:, None, None]
    positive = usable & (calibrated > 0)
    label = calibrated.reciprocal() if fit_space == "disparity" else calibrated
    depth = torch.where(positive, label.clamp_max(max_depth), 0.0)
    residual = (calibrated - target).abs()
    scaled = torch.where(residual > 0, residual / options.residual_threshold, 0.0)
    confidence = torch.where(positive, torch.exp(-0.5 * scaled.square()), 0.0)
    return PseudoLabels(depth, confidence, fit, method, fit_space)
