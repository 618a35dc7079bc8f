"""The thin base of every task: models from cards, metrics per stage, optimiser and schedule, skip counting, seeds."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import torch
from lightning import LightningModule

from depthadapt.metrics import DepthMetrics, evaluation_mask, suspect_depth_scale
from depthadapt.models.card import DepthModelCard

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
    - evaluation settings and ``DepthMetrics`` per stage (``make_metrics``, ``evaluate``);
    - AdamW over ``parameter_groups()`` with linear warm-up then cosine annealing, stepped per batch;
    - skip counting for fit, validate, test and predict alike: unreadable samples (``batch["skipped"]``) and
      images without a valid ground-truth pixel are named and counted, and the tables' ``skipped`` column has both;
    - randomness per training step seeded by (initial seed, global step), so a resumed run draws what an
      uninterrupted one would.
    """

    def __init__(
        self,
        lr: float = 5e-6,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0:
            raise ValueError(
                f"model.lr must be > 0, weight_decay and warmup_steps >= 0; got {lr}, {weight_decay}, {warmup_steps}"
            )
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.eval_settings = dict(min_depth=eval_min_depth, max_depth=eval_max_depth, crop=eval_crop)
        DepthMetrics(**self.eval_settings)  # fails early on a bad range or crop name
        self.skipped = SkippedSamples()
        self.initial_seed = torch.initial_seed()
        self.scale_checked = False  # the ground truth's scale is checked on the first evaluated batch of a stage

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

    # --- batches and metrics ------------------------------------------------------------------------------
    def take_batch(self, batch: dict[str, Any]) -> bool:
        """Record the batch's unreadable samples; True when it still holds images to process."""
        self.skipped.add(batch.get("skipped", []))
        return "image" in batch and len(batch["name"]) > 0

    def make_metrics(self, affine_invariant: bool) -> DepthMetrics:
        """Depth metrics with this task's evaluation range and crop."""
        return DepthMetrics(affine_invariant=affine_invariant, **self.eval_settings)

    def evaluate(self, metrics: DepthMetrics, prediction: torch.Tensor, batch: dict[str, Any]) -> None:
        """Add a batch to ``metrics``; images without any valid ground-truth pixel are named as skipped."""
        valid = evaluation_mask(batch["depth"], batch["valid"], **self.eval_settings)
        if not self.scale_checked:
            self.scale_checked = True
            message = suspect_depth_scale(batch["depth"], batch["valid"], **{k: self.eval_settings[k] for k in
                                                                             ("min_depth", "max_depth")})
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

    # --- resume -------------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume an epoch-end checkpoint as "that epoch is complete", so a fit with ``max_steps`` continues.

        Lightning (2.6) saves epoch-end checkpoints with the epoch processed but not yet completed; resumed in a
        step-limited run, it processes that epoch a second time and stops early with "max_epochs reached"
        (measured: step 8 of 12). Checkpoints are taken at epoch ends (see README): mark those epochs complete.
        """
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        epoch, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
        if not epoch or not batches or not batches.get("is_last_batch"):
            return
        for part in ("total", "current"):
            if epoch[part]["completed"] == epoch[part]["processed"] - 1:
                epoch[part]["completed"] = epoch[part]["processed"]
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False

    # --- randomness and optimisation ----------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this step's random draws (augmentations) by (initial seed, global step)."""
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
