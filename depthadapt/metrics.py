"""Depth evaluation metrics following the official Depth Anything V2 evaluation, batched in torch.

Conventions of ``metric_depth/util/metric.py::eval_depth``: per-image values over the valid pixels, then
averaged over images (``DepthMetrics``). Affine-invariant evaluation of relative (disparity) models fits
a per-image scale and shift in disparity space first (Depth Anything V2: it predicts disparity), or in depth space
for models that predict depth up to scale (Depth Anything 3: ``space="depth"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torchmetrics
from torch import Tensor

from depthadapt.alignment import lstsq_scale_shift

__all__ = [
    "CROP_NAMES",
    "METRIC_NAMES",
    "DEFAULT_PROTOCOL",
    "KITTI_EIGEN",
    "NYU_EIGEN",
    "DepthMetrics",
    "EvaluationProtocol",
    "AlignmentSpace",
    "affine_invariant_metrics",
    "align_affine",
    "depth_metrics",
    "depth_to_disparity",
    "eval_crop_mask",
    "evaluation_mask",
    "format_metrics_table",
    "suspect_depth_scale",
]

AlignmentSpace = Literal["disparity", "depth"]
ALIGNMENT_SPACES: tuple[str, ...] = ("disparity", "depth")
METRIC_NAMES: tuple[str, ...] = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
CROP_NAMES: tuple[str, ...] = ("garg", "eigen_kitti", "eigen_nyu")

_LN10 = math.log(10.0)


def _unknown_crop(crop: object) -> ValueError:
    return ValueError(f"unknown crop {crop!r}; valid crops are None, " + ", ".join(map(repr, CROP_NAMES)))


def _check_depth_range(min_depth: float, max_depth: float) -> None:
    if not 0.0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")


@dataclass(frozen=True)
class EvaluationProtocol:
    """Which pixels an evaluation counts: ground truth in [``min_depth``, ``max_depth``] metres, inside ``crop``.

    A labelled datamodule states its own (``evaluation_protocol``: KITTI ``KITTI_EIGEN``, NYU ``NYU_EIGEN``); a task
    evaluates with it unless its ``evaluation`` overrides it.
    """

    min_depth: float = 1e-3
    max_depth: float = 80.0
    crop: Literal["garg", "eigen_kitti", "eigen_nyu"] | None = None

    def __post_init__(self) -> None:
        _check_depth_range(self.min_depth, self.max_depth)
        if self.crop is not None and self.crop not in CROP_NAMES:
            raise _unknown_crop(self.crop)


DEFAULT_PROTOCOL = EvaluationProtocol()
"""1e-3..80 m, no crop: what a dataset that states nothing else is evaluated with."""
KITTI_EIGEN = EvaluationProtocol(1e-3, 80.0, "garg")
"""KITTI Eigen split as the official Depth Anything V2 evaluation: 1e-3..80 m, Garg crop."""
NYU_EIGEN = EvaluationProtocol(1e-3, 10.0, "eigen_nyu")
"""NYU Depth v2 as the official evaluation: 1e-3..10 m, Eigen crop [45:471, 41:601] of 480 x 640 images."""


def eval_crop_mask(height: int, width: int, crop: str | None) -> Tensor:
    """Boolean H x W mask of the standard evaluation crop (``None``: everything)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    if crop is None:
        mask[:] = True
    elif crop == "garg":
        mask[
            int(0.40810811 * height) : int(0.99189189 * height),
            int(0.03594771 * width) : int(0.96405229 * width),
        ] = True
    elif crop == "eigen_kitti":
        mask[
            int(0.3324324 * height) : int(0.91351351 * height),
            int(0.0359477 * width) : int(0.96405229 * width),
        ] = True
    elif crop == "eigen_nyu":
        if (height, width) != (480, 640):
            raise ValueError(
                f"crop 'eigen_nyu' is defined on 480 x 640 NYU images, got {height} x {width}; "
                "evaluate at the ground truth's full resolution or use crop=None"
            )
        mask[45:471, 41:601] = True
    else:
        raise _unknown_crop(crop)
    return mask


def _check_depth_args(pred: Tensor, gt: Tensor, mask: Tensor | None) -> None:
    if gt.ndim != 3:
        raise ValueError(f"gt must be B x H x W, got shape {tuple(gt.shape)}")
    if pred.ndim != 3:
        raise ValueError(f"pred must be B x H x W, got shape {tuple(pred.shape)}")
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(
            f"pred spatial size {tuple(pred.shape[-2:])} (pred shape {tuple(pred.shape)}) differs from gt "
            f"{tuple(gt.shape[-2:])} (gt shape {tuple(gt.shape)}); resize pred to the ground truth's size "
            "before evaluating"
        )
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"pred batch {tuple(pred.shape)} and gt batch {tuple(gt.shape)} differ")
    if mask is not None and mask.shape != gt.shape:
        raise ValueError(f"mask must have gt's shape {tuple(gt.shape)}, got {tuple(mask.shape)}")


def evaluation_mask(gt: Tensor, mask: Tensor | None, protocol: EvaluationProtocol = DEFAULT_PROTOCOL) -> Tensor:
    """The pixels an evaluation counts: B x H x W ground truth finite, in ``protocol``'s depth range, in ``mask`` and
    in its crop."""
    valid = torch.isfinite(gt) & (gt >= protocol.min_depth) & (gt <= protocol.max_depth)
    if mask is not None:
        valid &= mask.to(device=gt.device, dtype=torch.bool)
    if protocol.crop is not None:
        valid &= eval_crop_mask(gt.shape[-2], gt.shape[-1], protocol.crop).to(gt.device)
    return valid


def _out_dtype(pred: Tensor) -> torch.dtype:
    # Never report in half precision (bf16 predictions from mixed-precision runs): at least float32.
    return torch.promote_types(pred.dtype, torch.float32) if pred.is_floating_point() else torch.float32


def _masked_metrics(pred: Tensor, gt: Tensor, valid: Tensor, min_depth: float) -> dict[str, Tensor]:
    """Per-image metrics over ``valid`` (B x H x W) in float64; NaN for an image without valid pixels."""
    batch = gt.shape[0]
    valid = valid.reshape(batch, -1)
    gt64 = gt.reshape(batch, -1).to(torch.float64)
    p64 = pred.reshape(batch, -1).to(device=gt.device, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64, device=gt.device)
    p64 = torch.where(torch.isfinite(p64) & (p64 > 0), p64, min_depth * one)
    # Neutral values outside the valid region keep the masked sums free of NaN/inf.
    gt64 = torch.where(valid, gt64, one)
    p64 = torch.where(valid, p64, one)
    w = valid.to(torch.float64)
    n = w.sum(-1)
    inv_n = torch.where(n > 0, 1.0 / n.clamp_min(1.0), torch.full_like(n, math.nan))

    def mean(x: Tensor) -> Tensor:
        return (w * x).sum(-1) * inv_n

    thresh = torch.maximum(gt64 / p64, p64 / gt64)
    diff = p64 - gt64
    dlog = torch.log(p64) - torch.log(gt64)
    mean_dlog = mean(dlog)
    mean_dlog2 = mean(dlog * dlog)
    return {
        "d1": mean((thresh < 1.25).to(torch.float64)),
        "d2": mean((thresh < 1.25**2).to(torch.float64)),
        "d3": mean((thresh < 1.25**3).to(torch.float64)),
        "abs_rel": mean(diff.abs() / gt64),
        "sq_rel": mean(diff * diff / gt64),
        "rmse": mean(diff * diff).sqrt(),
        "rmse_log": mean_dlog2.sqrt(),
        "log10": mean(dlog.abs()) / _LN10,
        # mean(d^2) >= mean(d)^2, so the radicand is >= 0 up to rounding; clamp guards the rounding.
        "silog": (mean_dlog2 - 0.5 * mean_dlog * mean_dlog).clamp_min(0.0).sqrt(),
    }


def depth_metrics(
    pred: Tensor, gt: Tensor, mask: Tensor | None = None, protocol: EvaluationProtocol = DEFAULT_PROTOCOL
) -> dict[str, Tensor]:
    """Per-image depth metrics: pred, gt (metres), mask B x H x W -> {name in METRIC_NAMES: (B,)}.

    Valid pixels: ``mask & isfinite(gt) & min_depth <= gt <= max_depth & crop``. Inside them, pred values
    that are <= 0 or non-finite are clamped to ``min_depth`` (avoids log(0); the official code assumes a
    positive metric head), so they count as (large) errors rather than being dropped. An image with no
    valid pixel gets NaN for every metric (callers count or skip it). pred must already have gt's spatial
    size: resizing is the caller's job (ValueError otherwise).
    """
    _check_depth_args(pred, gt, mask)
    valid = evaluation_mask(gt, mask, protocol)
    out_dtype = _out_dtype(pred)
    return {k: v.to(out_dtype) for k, v in _masked_metrics(pred, gt, valid, protocol.min_depth).items()}


_SCALE_FACTORS = (256.0, 1 / 256.0, 1000.0, 1 / 1000.0, 100.0, 1 / 100.0)
_MIN_PLAUSIBLE_MEDIAN = 0.2  # metres: no scene a depth model is evaluated on has half its pixels nearer


def suspect_depth_scale(depth: Tensor, valid: Tensor, min_depth: float, max_depth: float) -> str | None:
    """A message when the valid ground truth's median lies outside ``[max(min_depth, 0.2 m), max_depth]`` (a wrong
    ``depth_scale``), naming the usual factors that would bring it into range; None when it looks plausible."""
    values = depth[valid & torch.isfinite(depth) & (depth > 0)]
    if values.numel() == 0:
        return None
    median = float(values.median())
    low = max(min_depth, _MIN_PLAUSIBLE_MEDIAN)
    if low <= median <= max_depth:
        return None
    fixes = ", ".join(f"x {f:g} -> {median * f:.4g} m" for f in _SCALE_FACTORS if low <= median * f <= max_depth)
    return (
        f"the valid ground truth's median is {median:.4g} m, outside the plausible {low:g}..{max_depth:g} m: is the "
        f"depth scale right? ({fixes or 'no usual factor fits'}; data.depth_scale multiplies every stored value: "
        "1/256 for KITTI-style 16-bit PNG, 1 for files in metres)"
    )


def depth_to_disparity(depth: Tensor, valid: Tensor | None = None) -> Tensor:
    """1 / depth where ``valid`` (default: depth > 0), 0 elsewhere: any shape -> same shape."""
    valid = depth > 0 if valid is None else valid
    return torch.where(valid, 1.0 / torch.where(valid, depth, torch.ones_like(depth)), torch.zeros_like(depth))


def align_affine(
    pred: Tensor, gt: Tensor, valid: Tensor, max_depth: float = 80.0, space: AlignmentSpace = "disparity"
) -> Tensor:
    """Depth of a relative model aligned to the ground truth: B x H x W prediction, gt metres, valid -> B x H x W.

    ``space="disparity"``: least-squares scale and shift fit the predicted disparity to ``1 / gt`` on ``valid`` per
    image (float64); the aligned disparity is clamped to >= 1 / max_depth and inverted. ``space="depth"``: they fit
    the predicted depth to ``gt`` itself, clamped to <= max_depth. Degenerate images get ``lstsq_scale_shift``'s
    fallback (constant mean).
    """
    if space not in ALIGNMENT_SPACES:
        raise ValueError(f"alignment space must be one of {ALIGNMENT_SPACES}, got {space!r}")
    gt64 = gt.to(torch.float64)
    pred64 = pred.to(device=gt.device, dtype=torch.float64)
    target = gt64 if space == "depth" else depth_to_disparity(gt64, valid)
    scale, shift, _ = lstsq_scale_shift(pred64, target, valid)
    aligned = scale[:, None, None] * pred64 + shift[:, None, None]
    if space == "depth":
        return aligned.clamp_max(max_depth)
    return 1.0 / aligned.clamp_min(1.0 / max_depth)


def affine_invariant_metrics(
    pred_disparity: Tensor,
    gt: Tensor,
    mask: Tensor | None = None,
    protocol: EvaluationProtocol = DEFAULT_PROTOCOL,
    space: AlignmentSpace = "disparity",
) -> dict[str, Tensor]:
    """Metrics of a relative model: disparity (depth up to scale with ``space="depth"``), gt (metres), mask
    B x H x W -> {name in METRIC_NAMES: (B,)}.

    The prediction is aligned per image on the valid mask (as in ``depth_metrics``) by ``align_affine`` in
    ``space``, then evaluated with ``depth_metrics``.
    """
    _check_depth_args(pred_disparity, gt, mask)
    valid = evaluation_mask(gt, mask, protocol)
    aligned = align_affine(pred_disparity, gt, valid, protocol.max_depth, space)
    metrics = _masked_metrics(aligned, gt, valid, protocol.min_depth)
    out_dtype = _out_dtype(pred_disparity)
    return {k: v.to(out_dtype) for k, v in metrics.items()}


class DepthMetrics(torchmetrics.Metric):
    """Mean over images of the per-image depth metrics, accumulated across batches and DDP processes.

    ``update(pred, gt, mask=None)``: B x H x W tensors (pred is metric depth, or disparity when
    ``affine_invariant=True``; depth up to scale, aligned in depth space, when also ``space="depth"``). Images
    without any valid pixel are not averaged but counted in
    ``skipped``. ``compute()`` returns {name: mean} for METRIC_NAMES plus ``images`` and ``skipped``
    counts (float tensors); the means are NaN when no image was counted.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        affine_invariant: bool = False,
        protocol: EvaluationProtocol = DEFAULT_PROTOCOL,
        space: AlignmentSpace = "disparity",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if space not in ALIGNMENT_SPACES:
            raise ValueError(f"alignment space must be one of {ALIGNMENT_SPACES}, got {space!r}")
        self.space = space
        self.affine_invariant = affine_invariant
        self.protocol = protocol
        # float64 sums: accumulated over whole datasets, where float32 would lose digits.
        for state in [f"sum_{name}" for name in METRIC_NAMES] + ["images", "skipped"]:
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def use_protocol(self, protocol: EvaluationProtocol) -> None:
        """Evaluate with ``protocol``'s depth range and crop from now on (a task sets its datamodule's)."""
        self.protocol = protocol

    def update(self, pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: pred, gt, mask B x H x W."""
        if self.affine_invariant:
            values = affine_invariant_metrics(pred.detach(), gt, mask, self.protocol, self.space)
        else:
            values = depth_metrics(pred.detach(), gt, mask, self.protocol)
        stacked = torch.stack([values[name].to(torch.float64) for name in METRIC_NAMES])  # M x B
        counted = torch.isfinite(stacked).all(0)
        for name, row in zip(METRIC_NAMES, stacked, strict=True):
            total = getattr(self, f"sum_{name}")
            setattr(self, f"sum_{name}", total + torch.where(counted, row, 0.0).sum())
        self.images = self.images + counted.sum()
        self.skipped = self.skipped + (~counted).sum()

    def compute(self) -> dict[str, Tensor]:
        """{name: mean over counted images} for METRIC_NAMES, plus ``images`` and ``skipped`` counts."""
        # 0 / 0 is NaN for float tensors: no image counted gives NaN means rather than an error.
        out = {name: (getattr(self, f"sum_{name}") / self.images).float() for name in METRIC_NAMES}
        out["images"] = self.images.float()
        out["skipped"] = self.skipped.float()
        return out


def _format_value(name: str, value: float) -> str:
    if name in ("images", "skipped") and math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:.4f}"


def format_metrics_table(metrics: Mapping[str, float | Tensor], title: str | None = None) -> str:
    """Plain-text table: a header row of metric names and one row of values (4 decimals)."""
    return format_comparison_table({"": metrics}, title=title)


def format_comparison_table(
    rows: Mapping[str, Mapping[str, float | Tensor]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Plain-text table with one labelled row per entry of `rows` (e.g. per method), 4 decimals.

    `columns` defaults to METRIC_NAMES present in the first row, then its other keys; an empty label
    column is left out (a single unlabelled row).
    """
    first = next(iter(rows.values()), {})
    if columns is None:
        columns = [n for n in METRIC_NAMES if n in first] + [n for n in first if n not in METRIC_NAMES]
    labels = list(rows)
    cells = [[_format_value(n, float(rows[label][n])) for n in columns] for label in labels]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(columns)]
    label_width = max(len(label) for label in labels) if labels else 0

    def line(label: str, values: Sequence[str]) -> str:
        text = "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        return f"{label.ljust(label_width)}  {text}" if label_width else text

    lines = [title] if title else []
    lines.append(line("", list(columns)))
    lines += [line(label, row) for label, row in zip(labels, cells, strict=True)]
    return "\n".join(lines)
