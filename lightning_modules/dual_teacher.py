"""Dual-teacher metric pseudo-labelling (papers/003) as a LightningModule: label with predict, compare with test."""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningModule
from torch import nn

from depthadapt.alignment import check_choice
from depthadapt.metrics import DepthMetrics, format_comparison_table
from depthadapt.models import build_depth_model, infer
from depthadapt.pseudo_labels import FIT_SPACES, METHODS, TABLE_COLUMNS, PseudoLabels, metric_pseudo_labels
from lightning_modules.supervised import SupervisedDepth


class DualTeacherLabeler(LightningModule):
    """A frozen relative teacher calibrated to a frozen metric teacher (``depthadapt.pseudo_labels``).

    ``predict`` labels every image with ``method`` (write the labels with ``PseudoLabelWriter``); ``test``
    labels every image with all five methods and prints the paper's Table 2 (labels against ground truth).
    Each teacher runs at its own ``*_input_size`` (official preprocessing) and is upsampled to the image.
    """

    def __init__(
        self,
        relative_checkpoint: str,
        metric_checkpoint: str,
        relative_encoder: str = "vitl",
        metric_encoder: str = "vitl",
        max_depth: float = 80.0,
        relative_input_size: int = 518,
        metric_input_size: int = 518,
        method: str = "masked_ransac",
        fit_space: str = "disparity",
        percentiles: tuple[float, float] = (10, 90),
        max_trials: int = 1000,
        min_samples: int = 50,
        residual_threshold: float = 0.1,
        backend: str = "torch",
        seed: int = 0,
        confidence: bool = False,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("model.method", method, METHODS)
        check_choice("model.fit_space", fit_space, FIT_SPACES)
        self.save_hyperparameters()
        self.relative = build_depth_model(relative_encoder, "relative", checkpoint=relative_checkpoint)
        self.metric = build_depth_model(metric_encoder, "metric", max_depth, metric_checkpoint)
        for teacher in (self.relative, self.metric):
            teacher.requires_grad_(False).eval()
        self.test_metrics = nn.ModuleDict(
            {m: DepthMetrics(min_depth=eval_min_depth, max_depth=eval_max_depth, crop=eval_crop) for m in METHODS}
        )
        self.skipped: list[tuple[str, str]] = []

    def teachers(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x H x W image in [0, 1] -> relative disparity, metric depth, each B x H x W."""
        relative = infer(self.relative, image, self.hparams.relative_input_size)
        metric = infer(self.metric, image, self.hparams.metric_input_size)
        return relative, metric

    def label(self, relative: torch.Tensor, metric: torch.Tensor, method: str) -> PseudoLabels:
        """Labels of one method from the teachers' B x H x W outputs, with this module's fit settings."""
        hp = self.hparams
        return metric_pseudo_labels(
            relative, metric, method=method, fit_space=hp.fit_space, max_depth=hp.max_depth,
            percentiles=tuple(hp.percentiles), backend=hp.backend, max_trials=hp.max_trials,
            min_samples=hp.min_samples, residual_threshold=hp.residual_threshold, seed=hp.seed,
        )

    # Unreadable samples are counted and reported as by SupervisedDepth (``self.skipped``).
    _take_skipped = SupervisedDepth._take_skipped
    _report_skipped = SupervisedDepth._report_skipped

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Labels of ``method``: name, depth B x H x W (m, 0 invalid), confidence or None, per-image records."""
        if self._take_skipped(batch):
            return {"name": [], "depth": None, "confidence": None, "records": []}
        labels = self.label(*self.teachers(batch["image"]), self.hparams.method)
        teachers = {"relative_checkpoint": self.hparams.relative_checkpoint,
                    "metric_checkpoint": self.hparams.metric_checkpoint}
        return {
            "name": batch["name"],
            "depth": labels.depth.float().cpu(),
            "confidence": labels.confidence.float().cpu() if self.hparams.confidence else None,
            "records": [{**record, **teachers} for record in labels.records()],
        }

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Label the batch with every method and score each against the ground truth."""
        if self._take_skipped(batch):
            return
        relative, metric = self.teachers(batch["image"])
        for method, metrics in self.test_metrics.items():
            metrics.update(self.label(relative, metric, method).depth, batch["depth"], batch["valid"])

    def on_test_epoch_end(self) -> None:
        """Log ``test/<method>/<metric>`` and print the paper's Table 2 (rows: methods)."""
        rows = {}
        for method, metrics in self.test_metrics.items():
            rows[method] = {k: float(v) for k, v in metrics.compute().items()}
            metrics.reset()
            self.log_dict({f"test/{method}/{k}": rows[method][k] for k in TABLE_COLUMNS})
        if self.trainer.is_global_zero:
            title = (f"pseudo-labels against ground truth ({self.hparams.fit_space} fit space, "
                     f"{int(rows[METHODS[0]]['images'])} images)")
            print(format_comparison_table(rows, columns=TABLE_COLUMNS, title=title))

    def on_test_end(self) -> None:
        self._report_skipped("test")

    def on_predict_end(self) -> None:
        self._report_skipped("predict")
