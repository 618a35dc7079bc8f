"""Dual-teacher metric pseudo-labelling (dual-teacher paper) wiring: label with predict, compare methods with test."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from depthadapt.alignment import ScaleShiftFitOptions
from depthadapt.metrics import EvaluationProtocol, depth_to_disparity, format_comparison_table
from depthadapt.models.card import DepthModelCard
from depthadapt.pseudo_labels import METHODS, TABLE_COLUMNS, FitSpace, LabelMethod, PseudoLabels, metric_pseudo_labels
from lightning_modules.base import DepthTask

PAPER_FIT = ScaleShiftFitOptions(method="ransac", support="extremes")
"""The paper's fit (Sec. 3.2): RANSAC, 1000 trials, 50 points, residual threshold 0.1, support below p10 / above p90."""


class DualTeacherLabeler(DepthTask):
    """A frozen relative teacher calibrated to a frozen metric teacher (``depthadapt.pseudo_labels``).

    ``relative`` and ``metric`` are model cards (each teacher runs at its own input size and normalisation and is
    upsampled to the image): Depth Anything V2 or 3 (DA3 / DA3Mono as the relative teacher, DA3Metric as the
    metric one; ``focal_length``: DA3Metric's focal length in image pixels where the data carry no intrinsics).
    ``predict`` labels every image with ``method`` (write them with ``PseudoLabelWriter``);
    ``test`` labels every image with all five methods and prints the paper's Table 2 (labels against ground truth).
    ``fit`` holds the scale/shift fit options (``depthadapt.alignment.ScaleShiftFitOptions``: percentiles, backend,
    RANSAC trials, points per hypothesis, residual threshold, seed; the paper's by default); its ``method`` and
    ``support`` are set by each labelling ``method``.
    """

    def __init__(
        self,
        relative: DepthModelCard,
        metric: DepthModelCard,
        method: LabelMethod = "masked_ransac",
        fit_space: FitSpace = "disparity",
        fit: ScaleShiftFitOptions = PAPER_FIT,
        confidence: bool = False,
        evaluation_protocol: EvaluationProtocol | None = None,
        focal_length: float | None = None,
    ) -> None:
        if relative.head != "relative" or metric.head != "metric":
            raise ValueError(
                f"model.relative must be a relative and model.metric a metric model card, got heads "
                f"{relative.head!r} and {metric.head!r}"
            )
        super().__init__(evaluation_protocol)
        self.save_hyperparameters()
        self.cards = {"relative": relative, "metric": metric}
        self.relative = self.build_model(relative).requires_grad_(False).eval()
        self.metric = self.build_model(metric).requires_grad_(False).eval()
        self.method, self.confidence, self.focal_length = method, confidence, focal_length
        self.fit = dict(fit_space=fit_space, max_depth=metric.max_depth, options=fit)
        self.test_metrics = nn.ModuleDict({m: self.make_metrics(affine_invariant=False) for m in METHODS})

    def teachers(
        self, image: torch.Tensor, intrinsics: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x H x W image in [0, 1] (B x 4 intrinsics) -> relative disparity, metric depth, each B x H x W.

        A Depth Anything 3 relative teacher predicts depth: its inverse is the disparity fitted. A DA3Metric teacher
        gives metres as ``focal * output / 300`` (official; `DepthModelCard.to_metres`) with the images'
        ``intrinsics``, else ``focal_length``."""
        relative = self.cards["relative"].infer(self.relative, image)
        if self.cards["relative"].output == "depth":
            relative = depth_to_disparity(relative)
        return relative, self.cards["metric"].predict(self.metric, image, intrinsics, self.focal_length)

    def label(self, relative: torch.Tensor, metric: torch.Tensor, method: str) -> PseudoLabels:
        """Labels of one method from the teachers' B x H x W outputs, with this module's fit settings."""
        return metric_pseudo_labels(relative, metric, method=method, **self.fit)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """Labels of ``method``: name, kind, depth B x H x W (m, 0 invalid), confidence or None, per-image records."""
        if not self.has_images(batch):
            return None
        labels = self.label(*self.teachers(batch["image"], batch.get("intrinsics")), self.method)
        teachers = {f"{role}_checkpoint": card.checkpoint for role, card in self.cards.items()}
        return {
            "name": batch["name"],
            "kind": "metric",
            "depth": labels.depth.float().cpu(),
            "confidence": labels.confidence.float().cpu() if self.confidence else None,
            "records": [{**record, **teachers} for record in labels.records()],
        }

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Label the batch with every method and score each against the ground truth."""
        if not self.has_images(batch):
            return
        relative, metric = self.teachers(batch["image"], batch.get("intrinsics"))
        for method, metrics in self.test_metrics.items():
            self.evaluate(metrics, self.label(relative, metric, method).depth, batch)

    def on_test_epoch_end(self) -> None:
        """Log ``test/<method>/<metric>`` and print the paper's Table 2 (rows: methods)."""
        rows = {method: self.scores(metrics) for method, metrics in self.test_metrics.items()}
        rows = {method: values for method, values in rows.items() if values}
        if not rows:
            return
        for method, values in rows.items():
            self.log_dict({f"test/{method}/{k}": values[k] for k in TABLE_COLUMNS})
        if self.trainer.is_global_zero:
            first = next(iter(rows.values()))
            space, images = self.fit["fit_space"], int(first["images"])
            title = f"pseudo-labels against ground truth ({space} fit space, {images} images)"
            print(format_comparison_table(rows, columns=(*TABLE_COLUMNS, "skipped"), title=title))

    def manifest(self) -> dict[str, Any]:
        """What wrote a label folder: both teachers' cards, the method and the fit options."""
        fit = {**self.fit, "options": dataclasses.asdict(self.fit["options"])}
        return {"task": type(self).__name__, "relative": self.cards["relative"].describe(),
                "metric": self.cards["metric"].describe(), "method": self.method, "confidence": self.confidence,
                "fit": fit}
