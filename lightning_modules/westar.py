"""WeSTAR (paper 000): EMA teacher / LoRA student self-training with SA-HDN, ordinal weak labels, LoRA regulariser."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from depthadapt.alignment import check_choice
from depthadapt.augmentation import STRONG_AUGMENTATION, WEAK_AUGMENTATION, PhotometricAugmentation
from depthadapt.corruptions import check_corruption, corrupt
from depthadapt.io import atomic_path
from depthadapt.losses import (
    depth_range_contexts,
    grid_contexts,
    instance_contexts,
    lora_regularizer,
    ordinal_loss,
    sa_hdn_loss,
    ssi_loss,
)
from depthadapt.metrics import DepthMetrics, format_comparison_table
from depthadapt.models import infer, to_official_state_dict
from depthadapt.models.lora import add_lora, save_lora_adapter
from depthadapt.ordinal import simulate_batch
from depthadapt.visualize import depth_panel
from lightning_modules.supervised import SupervisedDepth

log = logging.getLogger(__name__)

CONTEXTS = ("instances", "grid", "depth_range", "global")
ORDINAL_LABELS = ("simulate", "dataset")
TABLE_COLUMNS = ("d1", "abs_rel", "rmse", "images")
# Defaults of the two views, shown with their arguments by `--print_config` (augmentations hold no state).
WEAK_VIEW = lazy_instance(PhotometricAugmentation, **WEAK_AUGMENTATION)
STRONG_VIEW = lazy_instance(PhotometricAugmentation, **STRONG_AUGMENTATION)


class WeSTARAdapter(SupervisedDepth):
    """Adapt a relative Depth Anything V2 model to unlabelled target images (WeSTAR).

    The student is the model with peft LoRA adapters (only they train); the teacher is its EMA. Each step the
    teacher labels a weakly augmented view and the student predicts a strongly augmented view of the same
    images; the loss is ``self_training_weight`` x the self-training loss over ``context`` (``instances``:
    SA-HDN over the whole image and each instance mask of the batch; ``grid`` / ``depth_range``: HDN;
    ``global``: plain SSI) + ``weak_weight`` x the ordinal ranking loss on sparse pairs (``simulate``d from
    ground truth, or read by the datamodule from a JSON Lines file: ``dataset``) + ``regularizer_weight`` x
    the LoRA weight regulariser. A weight of 0 switches its term off (the paper's ablations).

    Validation and test score the source model (adapters off) and the adapted one (``eval_model``: student
    or EMA teacher), affine-invariantly, on the clean images and under each of ``eval_corruptions`` at
    ``eval_severity``. At the end of fit the adapted model is exported next to the checkpoints: merged as
    an official-format ``adapted_model.pth`` and the adapter alone in peft's format (``lora_adapter/``).
    """

    hparams_ignore = ("weak_augmentation", "strong_augmentation")

    def __init__(
        self,
        encoder: str = "vits",
        checkpoint: str | None = None,
        checkpoint_prefix: str | None = None,
        input_size: int = 518,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: tuple[str, ...] = ("qkv",),
        lora_dropout: float = 0.0,
        ema_decay: float = 0.996,
        context: str = "instances",
        min_instance_fraction: float = 0.001,
        hdn_levels: tuple[int, ...] = (1, 2, 4),
        ordinal_labels: str = "simulate",
        ordinal_anchors: int = 5,
        ordinal_relative_margin: float = 0.05,
        ordinal_margin: float = 0.0,
        self_training_weight: float = 1.0,
        weak_weight: float = 0.001,
        regularizer_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        weak_augmentation: PhotometricAugmentation = WEAK_VIEW,
        strong_augmentation: PhotometricAugmentation = STRONG_VIEW,
        eval_model: str = "student",
        eval_corruptions: tuple[str, ...] = (),
        eval_severity: int = 3,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
        panel_images: int = 2,
        export: bool = True,
    ) -> None:
        check_choice("model.context", context, CONTEXTS)
        check_choice("model.ordinal_labels", ordinal_labels, ORDINAL_LABELS)
        check_choice("model.eval_model", eval_model, ("student", "teacher"))
        for corruption in eval_corruptions:
            check_corruption(corruption, eval_severity)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        if min(self_training_weight, weak_weight, regularizer_weight) < 0:
            raise ValueError("model loss weights must be >= 0 (0 switches a term off)")
        super().__init__(
            encoder=encoder,
            head="relative",
            checkpoint=checkpoint,
            checkpoint_prefix=checkpoint_prefix,
            input_size=input_size,
            lr=lr,
            decoder_lr_factor=1.0,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            eval_min_depth=eval_min_depth,
            eval_max_depth=eval_max_depth,
            eval_crop=eval_crop,
        )
        self.model = add_lora(self.model, lora_rank, lora_alpha, lora_targets, lora_dropout)
        self.teacher = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.teacher.requires_grad_(False)
        self.weak_augmentation = weak_augmentation
        self.strong_augmentation = strong_augmentation
        self.conditions = {"clean": None} | {f"{c}-{eval_severity}": c for c in eval_corruptions}
        metric_args = dict(affine_invariant=True, min_depth=eval_min_depth, max_depth=eval_max_depth, crop=eval_crop)
        self.eval_metrics = nn.ModuleDict(
            {
                f"{stage}_{model}_{condition}": DepthMetrics(**metric_args)
                for stage in ("val", "test")
                for model in ("source", "adapted")
                for condition in self.conditions
            }
        )
        self.source_val_scores: dict[str, dict[str, float]] | None = None
        self.last_val_scores: dict[str, dict[str, float]] = {}

    # --- models -------------------------------------------------------------------------------------------
    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of B x 3 x H x W images in [0, 1]."""
        return (image - self.mean) / self.std

    def adapted_model(self) -> nn.Module:
        """The model that validation, test, prediction and export use: the LoRA student or its EMA teacher."""
        return self.model if self.hparams.eval_model == "student" else self.teacher.module

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] -> B x H x W disparity of the adapted model at `input_size`."""
        return infer(self.adapted_model(), image, self.hparams.input_size)

    def source_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The same with the adapters off: the source model."""
        with self.model.disable_adapter():
            return infer(self.model, image, self.hparams.input_size)

    # --- training -----------------------------------------------------------------------------------------
    def contexts(self, batch: dict[str, Any], pseudo_label: torch.Tensor) -> torch.Tensor:
        """Normalisation contexts of the self-training loss: B x K x H x W or K x H x W bool."""
        height, width = pseudo_label.shape[-2:]
        context = self.hparams.context
        if context == "instances":
            if "instances" not in batch:
                raise ValueError(
                    "model.context instances (SA-HDN) needs instance masks: set data.instance_source "
                    "(sam2 with a mask cache, ground_truth on synthetic data, or superpixels), or choose "
                    "model.context grid / depth_range / global"
                )
            min_area = max(1, round(self.hparams.min_instance_fraction * height * width))
            return instance_contexts(batch["instances"], min_area)
        if context == "grid":
            return grid_contexts(height, width, self.hparams.hdn_levels, device=pseudo_label.device)
        if context == "depth_range":
            return depth_range_contexts(pseudo_label, levels=self.hparams.hdn_levels)
        return torch.ones(1, height, width, dtype=torch.bool, device=pseudo_label.device)

    def ordinal_pairs(self, batch: dict[str, Any]) -> torch.Tensor:
        """B x P x 5 ordinal pairs: simulated from the batch's ground truth, or the datamodule's."""
        if self.hparams.ordinal_labels == "dataset":
            if "ordinal" not in batch:
                raise ValueError(
                    "model.ordinal_labels dataset needs weak labels: set data.ordinal_file to a JSON Lines file "
                    "of ordinal pairs, or use model.ordinal_labels simulate (needs ground truth) or "
                    "model.weak_weight 0"
                )
            return batch["ordinal"]
        if "depth" not in batch:
            raise ValueError(
                "model.ordinal_labels simulate needs ground-truth depth in the training batches: give the "
                "datamodule a depth folder, or use ordinal_labels dataset with data.ordinal_file"
            )
        hp = self.hparams
        return simulate_batch(
            batch["depth"], batch["valid"], hp.ordinal_anchors, hp.ordinal_relative_margin, seed=batch["index"]
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self._take_skipped(batch):
            return None
        hp = self.hparams
        image = batch["image"]
        with torch.no_grad():
            pseudo_label = self.teacher(self.normalise(self.weak_augmentation(image)))
        pred = self(self.strong_augmentation(image))
        terms: dict[str, torch.Tensor] = {}
        if hp.self_training_weight > 0:
            if hp.context == "global":
                terms["self_training"] = ssi_loss(pred, pseudo_label, torch.ones_like(pred, dtype=torch.bool))
            else:
                terms["self_training"] = sa_hdn_loss(pred, pseudo_label, self.contexts(batch, pseudo_label))
        if hp.weak_weight > 0:
            terms["ordinal"] = ordinal_loss(pred, self.ordinal_pairs(batch), hp.ordinal_margin)
        if hp.regularizer_weight > 0:
            terms["lora_regularizer"] = lora_regularizer(self.model)
        weights = {"self_training": hp.self_training_weight, "ordinal": hp.weak_weight,
                   "lora_regularizer": hp.regularizer_weight}
        loss = sum((weights[k] * v for k, v in terms.items()), pred.sum() * 0.0)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=len(pred))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(pred))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the teacher after each optimiser step."""
        self.teacher.update_parameters(self.model)

    # --- evaluation ---------------------------------------------------------------------------------------
    def _condition_images(self, batch: dict[str, Any], corruption: str | None) -> torch.Tensor:
        if corruption is None:
            return batch["image"]
        return corrupt(batch["image"], corruption, self.hparams.eval_severity, seed=batch["index"].to(torch.long))

    def _evaluate_conditions(self, batch: dict[str, Any], stage: str, with_source: bool) -> None:
        if self._take_skipped(batch):
            return
        for condition, corruption in self.conditions.items():
            images = self._condition_images(batch, corruption)
            self.eval_metrics[f"{stage}_adapted_{condition}"].update(
                self.predict_depth(images), batch["depth"], batch["valid"]
            )
            if with_source:
                self.eval_metrics[f"{stage}_source_{condition}"].update(
                    self.source_depth(images), batch["depth"], batch["valid"]
                )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_conditions(batch, "val", with_source=self.source_val_scores is None)
        if batch_idx == 0 and "image" in batch and not self.trainer.sanity_checking:
            self._log_panels(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_conditions(batch, "test", with_source=True)

    def _collect(self, stage: str, model: str) -> dict[str, dict[str, float]]:
        scores = {}
        for condition in self.conditions:
            metrics = self.eval_metrics[f"{stage}_{model}_{condition}"]
            if metrics.update_called:
                scores[condition] = {k: float(v) for k, v in metrics.compute().items()}
            metrics.reset()
        return scores

    def _log_scores(self, stage: str, scores: dict[str, dict[str, dict[str, float]]]) -> None:
        values = {}
        for model, per_condition in scores.items():
            for condition, metrics in per_condition.items():
                prefix = stage if model == "adapted" else f"{stage}_source"
                prefix = prefix if condition == "clean" else f"{prefix}/{condition}"
                values |= {f"{prefix}/{k}": metrics[k] for k in ("d1", "abs_rel", "rmse")}
        self.log_dict(values)

    def _table(self, scores: dict[str, dict[str, dict[str, float]]], title: str) -> str:
        rows = {
            f"{model} {condition}": scores[model][condition]
            for condition in self.conditions
            for model in ("source", "adapted")
            if condition in scores.get(model, {})
        }
        return format_comparison_table(rows, TABLE_COLUMNS, title)

    def on_validation_epoch_end(self) -> None:
        source = self._collect("val", "source")
        if source and not self.trainer.sanity_checking:
            self.source_val_scores = source
        scores = {"source": self.source_val_scores or source, "adapted": self._collect("val", "adapted")}
        self._log_scores("val", scores)
        if not self.trainer.sanity_checking:
            self.last_val_scores = scores

    def on_test_epoch_end(self) -> None:
        scores = {model: self._collect("test", model) for model in ("source", "adapted")}
        self._log_scores("test", scores)
        if self.trainer.is_global_zero:
            title = f"WeSTAR test ({self.hparams.encoder}, affine-invariant, adapted = {self.hparams.eval_model})"
            print(self._table(scores, title))

    @torch.no_grad()
    def _log_panels(self, batch: dict[str, Any]) -> None:
        """RGB | teacher | student | ground truth | error of the first validation images, to TensorBoard."""
        count = min(self.hparams.panel_images, len(batch["image"]))
        if count == 0 or not isinstance(self.logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        images = batch["image"][:count]
        teacher = infer(self.teacher.module, images, self.hparams.input_size)
        student = infer(self.model, images, self.hparams.input_size)
        panels = [
            depth_panel(images[i], teacher[i], student[i], batch["depth"][i], batch["valid"][i]) for i in range(count)
        ]
        self.logger.experiment.add_image(
            "val/panels (rgb | teacher | student | gt | error)", np.concatenate(panels, axis=0),
            self.global_step, dataformats="HWC",
        )

    # --- end of fit -----------------------------------------------------------------------------------------
    def export_dir(self) -> Path:
        """Where the exports go: the checkpoint folder, else the run's log folder."""
        callback = self.trainer.checkpoint_callback
        if callback is not None and getattr(callback, "dirpath", None):
            return Path(callback.dirpath)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir)

    def on_fit_end(self) -> None:
        """Print source vs adapted validation scores; export the merged model and the LoRA adapter."""
        if not self.trainer.is_global_zero:
            return
        if self.last_val_scores.get("adapted"):
            print(self._table(self.last_val_scores, f"WeSTAR validation after step {self.global_step}"))
        if self.hparams.export:
            directory = self.export_dir()
            model = self.adapted_model()
            with atomic_path(directory / "adapted_model.pth") as tmp:
                torch.save(to_official_state_dict(model), tmp)
            save_lora_adapter(model, directory / "lora_adapter")
            log.info("exported %s/adapted_model.pth (official format, LoRA merged) and lora_adapter/", directory)
