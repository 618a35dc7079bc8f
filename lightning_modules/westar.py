"""WeSTAR (paper 000) wiring: EMA teacher / LoRA student self-training; the objective is ``depthadapt.westar``."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from depthadapt.augmentation import STRONG_AUGMENTATION, WEAK_AUGMENTATION, PhotometricAugmentation
from depthadapt.consistency import PerturbationConsistencyLoss
from depthadapt.corruptions import EvaluationConditions
from depthadapt.io.visualize import depth_panel
from depthadapt.losses import EqualPairs
from depthadapt.metrics import EvaluationProtocol, format_comparison_table
from depthadapt.models.activation_checkpointing import enable_activation_checkpointing
from depthadapt.models.card import DepthModelCard
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.lora import LoraSettings, add_lora
from depthadapt.westar import Context, OrdinalForm, WeSTARLoss
from lightning_modules.base import TrainableDepthTask

TABLE_COLUMNS = ("d1", "abs_rel", "rmse", "images")
MODELS = ("source", "adapted")
# Defaults of the two views, shown with their arguments by `--print_config` (augmentations hold no state).
WEAK_VIEW = lazy_instance(PhotometricAugmentation, **WEAK_AUGMENTATION)
STRONG_VIEW = lazy_instance(PhotometricAugmentation, **STRONG_AUGMENTATION)
DEFAULT_LORA = LoraSettings()


class WeSTARAdapter(TrainableDepthTask):
    """Adapt a relative Depth Anything V2 or 3 model (``model``: its card; ``input_size`` overrides the card's
    network size) to unlabelled target images (WeSTAR). A DA3 card (depth output) is adapted in depth: the ordinal
    term ranks its negated depth, SA-HDN compares depths, scores align in depth space; ``lora.targets`` name
    modules of its encoder's attention (``qkv``, ``proj``: ``backbone.pretrained.blocks.N.attn.*``).

    The student is the model with peft LoRA adapters (only they train); the teacher is its EMA. Each step the
    teacher labels a weakly augmented view and the student predicts a strongly augmented view of the same images;
    the loss is ``depthadapt.westar.WeSTARLoss``: ``self_training_weight`` x the self-training loss over ``context``
    + ``weak_weight`` x the ordinal ranking loss on the sparse pairs of the batch's ``ordinal`` (the datamodule's:
    people's labels from a JSON Lines file, or a simulated annotator's, ``data.weak_labels.ordinal_simulation``) +
    ``regularizer_weight`` x the LoRA weight regulariser. Every
    ``log_every_n_steps`` the gradient norm of each weighted term is logged as ``train/grad_norm/<term>``
    (``log_grad_norms``; one extra backward pass per term, skipped when the trainer has no logger), to see whether
    one term swamps another. ``activation_checkpointing`` recomputes the
    student's encoder blocks in the backward pass instead of keeping their activations (less memory, ~1 more forward).

    Validation and test score the source model (adapters off) and the adapted one (``eval_model``: student or EMA
    teacher), affine-invariantly, clean and under each of ``eval_corruptions`` at ``eval_severity``. Exports at the
    end of fit are the ``ExportCallback``'s (``lightning_modules.writers``).
    """

    def __init__(
        self,
        model: DepthModelCard,
        input_size: int | None = None,
        lora: LoraSettings = DEFAULT_LORA,
        ema_decay: float = 0.996,
        context: Context = "instances",
        min_instance_fraction: float = 0.001,
        hdn_levels: tuple[int, ...] = (1, 2, 4),
        ordinal_form: OrdinalForm = "normalised",
        ordinal_margin: float = 0.1,
        ordinal_equal: EqualPairs = "hinge",
        self_training_weight: float = 1.0,
        weak_weight: float = 3.0,
        regularizer_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        weak_augmentation: PhotometricAugmentation = WEAK_VIEW,
        strong_augmentation: PhotometricAugmentation = STRONG_VIEW,
        eval_model: Literal["student", "teacher"] = "student",
        eval_corruptions: tuple[str, ...] = (),
        eval_severity: int = 3,
        evaluation_protocol: EvaluationProtocol | None = None,
        panel_images: int = 2,
        log_grad_norms: bool = True,
        activation_checkpointing: bool = False,
    ) -> None:
        if model.head != "relative":
            raise ValueError(f"WeSTAR adapts a relative model: the model card's head is {model.head}, not relative")
        if eval_model not in ("student", "teacher"):
            raise ValueError(f"model.eval_model must be student or teacher, got {eval_model!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        super().__init__(lr, weight_decay, warmup_steps, evaluation_protocol)
        self.save_hyperparameters(ignore=["weak_augmentation", "strong_augmentation"])
        self.card = self.run_at(model, input_size)
        output = "depth" if self.card.output == "depth" else "disparity"
        self.objective = WeSTARLoss(context, self_training_weight, weak_weight, regularizer_weight,
                                    min_instance_fraction, hdn_levels, ordinal_form, ordinal_margin, output,
                                    ordinal_equal)
        # DA3: the adapters go on the encoder's attention only (its camera encoder has attention layers of the same
        # names that the single-view run never uses).
        within = "backbone.pretrained." if self.card.family == "da3" else None
        self.model = add_lora(self.build_model(self.card), lora, within)
        self.teacher = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.teacher.requires_grad_(False)
        if activation_checkpointing:  # the student's encoder blocks recompute in backward; the teacher runs no-grad
            enable_activation_checkpointing(self.model)
        self.weak_augmentation = weak_augmentation
        self.strong_augmentation = strong_augmentation
        self.eval_model = eval_model
        self.panel_images, self.log_grad_norms = panel_images, log_grad_norms
        self.conditions = EvaluationConditions(eval_corruptions, eval_severity)
        self.eval_metrics = nn.ModuleDict(
            {f"{stage}_{m}_{c}": self.make_metrics(affine_invariant=True, space=self.card.alignment_space)
             for stage in ("val", "test") for m in MODELS for c in self.conditions}
        )
        self.source_val_scores: dict[str, dict[str, float]] | None = None
        self.last_val_scores: dict[str, dict[str, dict[str, float]]] = {}
        self.last_test_scores: dict[str, dict[str, dict[str, float]]] = {}

    # --- models -------------------------------------------------------------------------------------------
    def export_model(self) -> nn.Module:
        """The model that validation, test, prediction and export use: the LoRA student or its EMA teacher."""
        return self.model if self.eval_model == "student" else self.teacher.module

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] -> B x H x W output (disparity; DA3: depth) of the adapted model at the
        card's input size."""
        return self.card.infer(self.export_model(), image)

    def source_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The same with the adapters off: the source model."""
        with self.model.disable_adapter():
            return self.card.infer(self.model, image)

    def teacher_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The same by the model that makes the pseudo-labels (the EMA teacher), for the image panels."""
        return self.card.infer(self.teacher.module, image)

    # --- training -----------------------------------------------------------------------------------------
    def ordinal_pairs(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's B x P x 5 ordinal pairs (padding rows y1 = -1 for images without labels)."""
        if "ordinal" not in batch:
            raise ValueError(
                "the weak term (model.weak_weight > 0) needs ordinal pairs in the training batches: set "
                "data.weak_labels.ordinal_file to a JSON Lines file of labels (python -m depthadapt.annotate makes "
                "one), or data.weak_labels.ordinal_simulation to simulate an annotator from ground truth; or set "
                "model.weak_weight 0"
            )
        return batch["ordinal"]

    def views(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (weak) and the student's (strong) views of B x 3 x H x W images in [0, 1]."""
        return self.weak_augmentation(image), self.strong_augmentation(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not self.has_images(batch):
            return None
        teacher_view, student_view = self.views(batch["image"])
        with torch.no_grad():
            pseudo_label = self.teacher(self.card.normalise(teacher_view))
        pred = self.model(self.card.normalise(student_view))
        ordinal = self.ordinal_pairs(batch) if self.objective.needs("ordinal") else None
        terms = self.objective(pred, pseudo_label, batch.get("instances"), ordinal, self.model)
        loss = terms.pop("loss")
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=len(pred))
        logged = self._trainer is not None and self.logger is not None
        if self.log_grad_norms and logged and self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({f"train/grad_norm/{k}": v for k, v in self.term_gradient_norms(terms).items()},
                          batch_size=len(pred))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(pred))
        return loss

    def term_gradient_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L2 norm of each weighted term's gradient over the trainable (LoRA) parameters: the terms' balance."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norms = {}
        for name, value in terms.items():
            weighted = self.objective.weights[name] * value
            grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
            norms[name] = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None) + 0.0)
        return norms

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the teacher after each optimiser step."""
        self.teacher.update_parameters(self.model)

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
            title = (f"WeSTAR on the TEST split: source vs adapted ({self.card.encoder}, affine-invariant, "
                     f"adapted = {self.eval_model})")
            print(self.table(scores, title))

    def on_fit_end(self) -> None:
        """Print source vs adapted scores of the last validation (the validation split: for choices, not reports)."""
        if self.trainer.is_global_zero and self.last_val_scores.get("adapted"):
            title = (f"WeSTAR on the VALIDATION split after step {self.global_step}: source vs adapted "
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
        return {"task": type(self).__name__, "model": self.card.describe(), "eval_model": self.eval_model,
                "global_step": int(self.global_step)}


class PerturbationConsistencyAdapter(WeSTARAdapter):
    """The label-free peer baseline: DepthAnything-AC's perturbation-consistency fine-tuning with its spatial distance
    constraint (``depthadapt.consistency.PerturbationConsistencyLoss``), on WeSTAR's LoRA student, views, data and
    evaluation, so that a comparison changes the objective only.

    The teacher is the frozen source model (the student with its adapters off) on the weak view; the student
    predicts the weak and the strong view each step (one forward more than WeSTAR). No weak labels, no EMA.
    """

    def __init__(
        self,
        model: DepthModelCard,
        input_size: int | None = None,
        lora: LoraSettings = DEFAULT_LORA,
        distill_weight: float = 1 / 3,
        consistency_weight: float = 1 / 3,
        spatial_weight: float = 1 / 3,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        weak_augmentation: PhotometricAugmentation = WEAK_VIEW,
        strong_augmentation: PhotometricAugmentation = STRONG_VIEW,
        eval_corruptions: tuple[str, ...] = (),
        eval_severity: int = 3,
        evaluation_protocol: EvaluationProtocol | None = None,
        panel_images: int = 2,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            model, input_size, lora, self_training_weight=0.0,
            weak_weight=0.0, regularizer_weight=0.0, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
            weak_augmentation=weak_augmentation, strong_augmentation=strong_augmentation,
            eval_corruptions=eval_corruptions, eval_severity=eval_severity,
            evaluation_protocol=evaluation_protocol, panel_images=panel_images, log_grad_norms=False,
            activation_checkpointing=activation_checkpointing,
        )
        self.peer_objective = PerturbationConsistencyLoss(distill_weight, consistency_weight, spatial_weight,
                                                          PATCH_SIZE)

    def teacher_depth(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen source model's depth: this baseline's teacher."""
        return self.source_depth(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not self.has_images(batch):
            return None
        clean_view, perturbed_view = self.views(batch["image"])
        with torch.no_grad(), self.model.disable_adapter():
            source = self.model(self.card.normalise(clean_view))
        clean = self.model(self.card.normalise(clean_view))
        perturbed = self.model(self.card.normalise(perturbed_view))
        terms = self.peer_objective(clean, perturbed, source)
        loss = terms.pop("loss")
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=len(clean))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(clean))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """No EMA teacher to update."""
