"""The base of the tasks that adapt a model on unlabelled target images (WeSTAR and its label-free peer): a LoRA
student, a teacher's (weak) and the student's (strong) view of each batch, and source-vs-adapted evaluation per
condition. Each subclass adds its objective (``training_step``) and says which model labels (``teacher_depth``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from depthadapt.augmentation import STRONG_AUGMENTATION, WEAK_AUGMENTATION, PhotometricAugmentation
from depthadapt.corruptions import EvaluationConditions
from depthadapt.io.visualize import depth_panel
from depthadapt.metrics import EvaluationProtocol, format_comparison_table
from depthadapt.models.activation_checkpointing import enable_activation_checkpointing
from depthadapt.models.card import DepthModelCard
from depthadapt.models.lora import LoraSettings, add_lora
from lightning_modules.base import TrainableDepthTask

TABLE_COLUMNS = ("d1", "abs_rel", "rmse", "images")
MODELS = ("source", "adapted")
# Defaults of the two views, shown with their arguments by `--print_config` (augmentations hold no state).
WEAK_VIEW = lazy_instance(PhotometricAugmentation, **WEAK_AUGMENTATION)
STRONG_VIEW = lazy_instance(PhotometricAugmentation, **STRONG_AUGMENTATION)
DEFAULT_LORA = LoraSettings()


class LoraAdaptationTask(TrainableDepthTask):
    """Adapt a relative Depth Anything V2 or 3 model (``model``: its card; ``input_size`` overrides the card's network
    size) through peft LoRA adapters (``lora``; only they train; DA3: on its encoder's attention only). Subclasses
    give the objective (``training_step``) and the model whose output the panels show as the teacher's
    (``teacher_depth``); ``method`` names them in the tables' titles.

    Validation and test score the source model (adapters off) and the adapted one (``export_model()``),
    affine-invariantly, clean and under each of ``eval_corruptions`` at ``eval_severity``; test prints the table
    (test split), fit the last validation's (validation split). ``activation_checkpointing`` recomputes the
    student's encoder blocks in the backward pass instead of keeping their activations (less memory, ~1 more
    forward; ``configure_model``). Exports at the end of fit are the ``ExportCallback``'s
    (``lightning_modules.writers``).
    """

    method = "adaptation"

    def __init__(
        self,
        model: DepthModelCard,
        input_size: int | None,
        lora: LoraSettings,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        weak_augmentation: PhotometricAugmentation,
        strong_augmentation: PhotometricAugmentation,
        eval_corruptions: tuple[str, ...],
        eval_severity: int,
        evaluation_protocol: EvaluationProtocol | None,
        panel_images: int,
        activation_checkpointing: bool,
    ) -> None:
        if model.head != "relative":
            raise ValueError(f"{self.method} adapts a relative model: the model card's head is {model.head}, "
                             "not relative")
        super().__init__(lr, weight_decay, warmup_steps, evaluation_protocol)
        self.save_hyperparameters(ignore=["weak_augmentation", "strong_augmentation"])
        self.card = self.run_at(model, input_size)
        # DA3: the adapters go on the encoder's attention only (its camera encoder has attention layers of the same
        # names that the single-view run never uses).
        within = "backbone.pretrained." if self.card.family == "da3" else None
        self.model = add_lora(self.build_model(self.card), lora, within)
        self.activation_checkpointing = activation_checkpointing
        self.weak_augmentation = weak_augmentation
        self.strong_augmentation = strong_augmentation
        self.panel_images = panel_images
        self.conditions = EvaluationConditions(eval_corruptions, eval_severity)
        self.eval_metrics = nn.ModuleDict(
            {f"{stage}_{m}_{c}": self.make_metrics(affine_invariant=True, space=self.card.alignment_space)
             for stage in ("val", "test") for m in MODELS for c in self.conditions}
        )
        self.source_val_scores: dict[str, dict[str, float]] | None = None
        self.last_val_scores: dict[str, dict[str, dict[str, float]]] = {}
        self.last_test_scores: dict[str, dict[str, dict[str, float]]] = {}

    # --- models -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Checkpoint the student's encoder blocks (``activation_checkpointing``; Lightning calls this before each
        stage, after ``__init__`` made any teacher copy of the student: teachers run no-grad and stay unwrapped)."""
        if self.activation_checkpointing:
            enable_activation_checkpointing(self.model)

    def export_model(self) -> nn.Module:
        """The model that validation, test, prediction and export use: the LoRA student."""
        return self.model

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] -> B x H x W output (disparity; DA3: depth) of the adapted model at the
        card's input size."""
        return self.card.infer(self.export_model(), image)

    def source_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The same with the adapters off: the source model."""
        with self.model.disable_adapter():
            return self.card.infer(self.model, image)

    def teacher_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The same by the model that labels the student's training views (for the image panels)."""
        raise NotImplementedError(f"{type(self).__name__} does not say which model is its teacher (teacher_depth)")

    def views(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (weak) and the student's (strong) views of B x 3 x H x W images in [0, 1]."""
        return self.weak_augmentation(image), self.strong_augmentation(image)

    # --- evaluation ---------------------------------------------------------------------------------------
    def _evaluate_conditions(self, batch: dict[str, Any], stage: str, with_source: bool) -> None:
        if not self.has_images(batch):
            return
        for condition in self.conditions:
            images = self.conditions.apply(condition, batch["image"], batch["index"])
            self.evaluate(self.eval_metrics[f"{stage}_adapted_{condition}"], self.predict_depth(images), batch)
            if with_source:
                self.evaluate(self.eval_metrics[f"{stage}_source_{condition}"], self.source_depth(images), batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_conditions(batch, "val", with_source=self.source_val_scores is None)
        if batch_idx == 0 and "image" in batch and not self.trainer.sanity_checking:
            self._log_panels(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_conditions(batch, "test", with_source=True)

    def collect_scores(self, stage: str, model: str) -> dict[str, dict[str, float]]:
        scores = {c: self.scores(self.eval_metrics[f"{stage}_{model}_{c}"]) for c in self.conditions}
        return {c: v for c, v in scores.items() if v}

    def _log_scores(self, stage: str, scores: dict[str, dict[str, dict[str, float]]]) -> None:
        values = {}
        for model, per_condition in scores.items():
            for condition, metrics in per_condition.items():
                prefix = stage if model == "adapted" else f"{stage}_source"
                prefix = prefix if condition == "clean" else f"{prefix}/{condition}"
                values |= {f"{prefix}/{k}": metrics[k] for k in ("d1", "abs_rel", "rmse")}
        self.log_dict(values)

    def table(self, scores: dict[str, dict[str, dict[str, float]]], title: str) -> str:
        """Source vs adapted rows per condition."""
        rows = {f"{m} {c}": scores[m][c] for c in self.conditions for m in MODELS if c in scores.get(m, {})}
        return format_comparison_table(rows, TABLE_COLUMNS, title)

    def adapted_name(self) -> str:
        """What the tables' "adapted" rows are (their titles say it)."""
        return "student"

    def on_validation_epoch_end(self) -> None:
        source = self.collect_scores("val", "source")
        if source and not self.trainer.sanity_checking:
            self.source_val_scores = source
        scores = {"source": self.source_val_scores or source, "adapted": self.collect_scores("val", "adapted")}
        self._log_scores("val", scores)
        if not self.trainer.sanity_checking:
            self.last_val_scores = scores

    def on_test_epoch_end(self) -> None:
        scores = {model: self.collect_scores("test", model) for model in MODELS}
        self.last_test_scores = scores
        self._log_scores("test", scores)
        if self.trainer.is_global_zero:
            title = (f"{self.method} on the TEST split: source vs adapted ({self.card.encoder}, affine-invariant, "
                     f"adapted = {self.adapted_name()})")
            print(self.table(scores, title))

    def on_fit_end(self) -> None:
        """Print source vs adapted scores of the last validation (the validation split: for choices, not reports)."""
        if self.trainer.is_global_zero and self.last_val_scores.get("adapted"):
            title = (f"{self.method} on the VALIDATION split after step {self.global_step}: source vs adapted "
                     "(report figures from `cli.py test`, the test split)")
            print(self.table(self.last_val_scores, title))

    @torch.no_grad()
    def _log_panels(self, batch: dict[str, Any]) -> None:
        """RGB | teacher | student | ground truth | error of the first validation images, to TensorBoard."""
        count = min(self.panel_images, len(batch["image"]))
        if count == 0 or not isinstance(self.logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        images = batch["image"][:count]
        teacher = self.teacher_depth(images)
        student = self.card.infer(self.model, images)
        panels = [
            depth_panel(images[i], teacher[i], student[i], batch["depth"][i], batch["valid"][i]) for i in range(count)
        ]
        self.logger.experiment.add_image(
            "val/panels (rgb | teacher | student | gt | error)", np.concatenate(panels, axis=0),
            self.global_step, dataformats="HWC",
        )

    # --- prediction -----------------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """``{"name": [...], "kind": "relative" (disparity) or "depth" (DA3), "depth": B x H x W output of the
        adapted model}``."""
        if not self.has_images(batch):
            return None
        kind = "depth" if self.card.output == "depth" else "relative"
        return {"name": batch["name"], "kind": kind, "depth": self.predict_depth(batch["image"]).float().cpu()}

    def manifest(self) -> dict[str, Any]:
        """What wrote a prediction folder: the source card and the adapted weights' identity."""
        return {"task": type(self).__name__, "model": self.card.describe(), "global_step": int(self.global_step)}
