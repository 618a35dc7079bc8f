"""The thin bases of every task: ``DepthTask`` (models from cards, evaluation with the data's protocol, skip counting,
the declared hooks) and ``TrainableDepthTask`` (optimiser and schedule, seeds per step, the model to export)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import torch
from lightning import Callback, LightningModule

from depthadapt.metrics import DepthMetrics, EvaluationProtocol, evaluation_mask, suspect_depth_scale
from depthadapt.models.card import DepthModelCard
from lightning_modules.compat import ResumeEpochEndCheckpoints

log = logging.getLogger(__name__)

_SHOWN = 10
NO_VALID_PIXEL = "no valid ground-truth pixel"


class SkippedSamples:
    """Samples a stage could not use, by name and reason: unreadable files and images without valid ground truth."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], None] = {}  # an ordered set: evaluating twice names a sample once

    def add(self, entries: Iterable[tuple[str, str]]) -> None:
        """Record (name, reason) pairs."""
        self.entries.update(dict.fromkeys(entries))

    @property
    def unreadable(self) -> int:
        """How many recorded samples could not be read (the others lacked valid ground truth)."""
        return sum(reason != NO_VALID_PIXEL for _, reason in self.entries)

    def report(self, stage: str) -> int:
        """Log the names (the first few) and reasons; forget them; return how many there were."""
        count = len(self.entries)
        if count:
            shown = "; ".join(f"{name} ({reason})" for name, reason in list(self.entries)[:_SHOWN])
            more = f"; ... ({count - _SHOWN} more)" if count > _SHOWN else ""
            log.warning("%s: %d samples skipped: %s%s", stage, count, shown, more)
        self.entries = {}
        return count


class DepthTask(LightningModule):
    """What every task shares (torchgeo's BaseTask as the model); subclasses hold only their own wiring.

    - models from ``DepthModelCard``s (``build_model``), each run at its card's input size and normalisation;
    - evaluation with ``DepthMetrics`` (``make_metrics``, ``evaluate``) under the evaluation protocol (depth range,
      crop) that the datamodule states (``evaluation_protocol``), unless ``evaluation_protocol`` overrides it;
    - skip counting for fit, validate, test and predict alike: unreadable samples (``batch["skipped"]``, recorded
      before each step) and images without a valid ground-truth pixel are named and counted, and the tables'
      ``skipped`` column has both; a step whose batch holds no image left (``has_images``) does nothing;
    - the declared hook ``manifest()``: what wrote a prediction folder (the writers record it).
    """

    def __init__(self, evaluation_protocol: EvaluationProtocol | None = None) -> None:
        super().__init__()
        self.evaluation_override = evaluation_protocol
        self.protocol = evaluation_protocol or EvaluationProtocol()
        self.skipped = SkippedSamples()
        self.scale_checked = False  # the ground truth's scale is checked on the first evaluated batch of a stage

    # --- declared hooks -----------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """What wrote a prediction folder (model cards with checkpoint hashes, settings); tasks that predict add."""
        return {"task": type(self).__name__}

    # --- models -------------------------------------------------------------------------------------------
    @staticmethod
    def run_at(card: DepthModelCard, input_size: int | None) -> DepthModelCard:
        """The card, run at ``input_size`` instead of its own when one is given (an experiment's choice)."""
        return card if input_size is None else dataclasses.replace(card, input_size=input_size)

    @staticmethod
    def build_model(card: DepthModelCard) -> torch.nn.Module:
        """The card's model; random weights are warned about."""
        if card.checkpoint is None:
            log.warning("model card without a checkpoint: the %s %s model has random weights", card.encoder, card.head)
        return card.build()

    # --- batches ------------------------------------------------------------------------------------------
    @staticmethod
    def has_images(batch: dict[str, Any]) -> bool:
        """Whether the batch still holds images to process (all may have been unreadable or already written)."""
        return "image" in batch and len(batch["name"]) > 0

    def _record_skipped(self, batch: Any) -> None:
        if isinstance(batch, dict):
            self.skipped.add(batch.get("skipped", []))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._record_skipped(batch)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._record_skipped(batch)

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._record_skipped(batch)

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._record_skipped(batch)

    # --- evaluation ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Evaluate with the datamodule's protocol unless ``evaluation_protocol`` overrides it."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        stated = getattr(datamodule, "evaluation_protocol", None)
        self.protocol = self.evaluation_override or stated or EvaluationProtocol()
        for module in self.modules():
            if isinstance(module, DepthMetrics):
                module.use_protocol(self.protocol)

    def make_metrics(self, affine_invariant: bool, space: str = "disparity") -> DepthMetrics:
        """Depth metrics, a relative output aligned in ``space`` (their protocol is set at ``setup``)."""
        metrics = DepthMetrics(affine_invariant=affine_invariant, space=space)
        metrics.use_protocol(self.protocol)
        return metrics

    def evaluate(self, metrics: DepthMetrics, prediction: torch.Tensor, batch: dict[str, Any]) -> None:
        """Add a batch to ``metrics``; images without any valid ground-truth pixel are named as skipped."""
        protocol = self.protocol
        valid = evaluation_mask(batch["depth"], batch["valid"], protocol)
        if not self.scale_checked:
            self.scale_checked = True
            message = suspect_depth_scale(batch["depth"], batch["valid"], protocol.min_depth, protocol.max_depth)
            if message:
                log.warning("%s (first batch: %s)", message, batch["name"][0])
        empty = (~valid.flatten(1).any(1)).tolist()
        self.skipped.add((name, NO_VALID_PIXEL) for name, e in zip(batch["name"], empty, strict=True) if e)
        metrics.update(prediction, batch["depth"], batch["valid"])

    def scores(self, metrics: DepthMetrics) -> dict[str, float]:
        """The metrics' values ({} if never updated; then reset); ``skipped`` also counts unreadable samples."""
        values = {k: float(v) for k, v in metrics.compute().items()} if metrics.update_called else {}
        metrics.reset()
        if values:
            values["skipped"] += self.skipped.unreadable
        return values

    def on_train_epoch_end(self) -> None:
        self.skipped.report("fit")

    def on_validation_end(self) -> None:
        self.skipped.report("validate")
        self.scale_checked = False

    def on_test_end(self) -> None:
        self.skipped.report("test")
        self.scale_checked = False

    def on_predict_end(self) -> None:
        self.skipped.report("predict")


class TrainableDepthTask(DepthTask):
    """A task that trains: AdamW over ``parameter_groups()`` with linear warm-up then cosine annealing, stepped per
    batch; randomness per training step seeded by (initial seed, global step), so that a resumed run draws what an
    uninterrupted one would; the declared hook ``export_model()`` (what the ``ExportCallback`` writes, with ``card``,
    the trained model's card: its input size and normalisation travel with the export)."""

    card: DepthModelCard

    def __init__(
        self,
        lr: float = 5e-6,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        evaluation_protocol: EvaluationProtocol | None = None,
    ) -> None:
        super().__init__(evaluation_protocol)
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0:
            raise ValueError(
                f"model.lr must be > 0, weight_decay and warmup_steps >= 0; got {lr}, {weight_decay}, {warmup_steps}"
            )
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.initial_seed = torch.initial_seed()

    # --- declared hooks -----------------------------------------------------------------------------------
    def export_model(self) -> torch.nn.Module:
        """The trained model in a form the export formats take (LoRA merged or mergeable)."""
        raise NotImplementedError(f"{type(self).__name__} does not say which model to export (export_model)")

    def configure_callbacks(self) -> list[Callback]:
        """Lightning work-arounds every training run needs (``lightning_modules.compat``)."""
        return [ResumeEpochEndCheckpoints()]

    # --- randomness and optimisation ----------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Record the skipped samples; seed this step's random draws (augmentations) by (initial seed, global step)."""
        super().on_train_batch_start(batch, batch_idx)
        torch.manual_seed((self.initial_seed * 1_000_003 + self.global_step) % 2**63)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups ``{"params": [...], "lr": ...}``; the default: every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": self.lr}]

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over ``parameter_groups()``; linear warm-up over ``warmup_steps``, then cosine to the run's end."""
        groups = [g for g in self.parameter_groups() if g["params"]]
        if not groups:
            raise ValueError(f"{type(self).__name__} has no trainable parameter to optimise")
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        warmup = self.warmup_steps
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.trainer.estimated_stepping_batches - warmup)
        )
        if warmup > 0:
            scheduler = torch.optim.lr_scheduler.SequentialLR(
                optimizer,
                [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup), scheduler],
                milestones=[warmup],
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
