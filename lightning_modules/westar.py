"""WeSTAR (paper 000) wiring: EMA teacher / LoRA student self-training; the objective is ``depthadapt.westar``. Also
the label-free peer baseline on the same student, views, data and evaluation (``PerturbationConsistencyAdapter``)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from depthadapt.augmentation import PhotometricAugmentation
from depthadapt.consistency import PerturbationConsistencyLoss
from depthadapt.metrics import EvaluationProtocol
from depthadapt.models.card import DepthModelCard
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.lora import LoraSettings
from depthadapt.westar import WeSTARLoss, WeSTARLossSettings
from lightning_modules.adaptation import DEFAULT_LORA, STRONG_VIEW, WEAK_VIEW, LoraAdaptationTask

DEFAULT_LOSS = WeSTARLossSettings()


class WeSTARAdapter(LoraAdaptationTask):
    """Adapt a relative Depth Anything V2 or 3 model (``model``: its card; ``input_size`` overrides the card's
    network size) to unlabelled target images (WeSTAR). A DA3 card (depth output) is adapted in depth: the ordinal
    term ranks its negated depth, SA-HDN compares depths, scores align in depth space; ``lora.targets`` name
    modules of its encoder's attention (``qkv``, ``proj``: ``backbone.pretrained.blocks.N.attn.*``).

    The student is the model with peft LoRA adapters (only they train); the teacher is its EMA. Each step the
    teacher labels a weakly augmented view and the student predicts a strongly augmented view of the same images;
    the loss is ``depthadapt.westar.WeSTARLoss`` with the settings ``loss`` (``WeSTARLossSettings``):
    ``loss.self_training_weight`` x the self-training loss over ``loss.context`` + ``loss.weak_weight`` x the ordinal
    ranking loss on the sparse pairs of the batch's ``ordinal`` (the datamodule's: people's labels from a JSON Lines
    file, or a simulated annotator's, ``data.weak_labels.ordinal_simulation``) + ``loss.regularizer_weight`` x the
    LoRA weight regulariser. Every
    ``log_every_n_steps`` the gradient norm of each weighted term is logged as ``train/grad_norm/<term>``
    (``log_grad_norms``; one extra backward pass per term, skipped when the trainer has no logger), to see whether
    one term swamps another.

    Validation and test score the source model and the adapted one (``eval_model``: student or EMA teacher), as
    ``LoraAdaptationTask`` says (its other arguments too).
    """

    method = "WeSTAR"

    def __init__(
        self,
        model: DepthModelCard,
        input_size: int | None = None,
        lora: LoraSettings = DEFAULT_LORA,
        ema_decay: float = 0.996,
        loss: WeSTARLossSettings = DEFAULT_LOSS,
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
        if eval_model not in ("student", "teacher"):
            raise ValueError(f"model.eval_model must be student or teacher, got {eval_model!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        super().__init__(model, input_size, lora, lr, weight_decay, warmup_steps, weak_augmentation,
                         strong_augmentation, eval_corruptions, eval_severity, evaluation_protocol, panel_images,
                         activation_checkpointing)
        output = "depth" if self.card.output == "depth" else "disparity"
        self.objective = WeSTARLoss(loss, output)
        self.teacher = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.teacher.requires_grad_(False)
        self.eval_model = eval_model
        self.log_grad_norms = log_grad_norms

    # --- models -------------------------------------------------------------------------------------------
    def export_model(self) -> nn.Module:
        """The model that validation, test, prediction and export use: the LoRA student or its EMA teacher."""
        return self.model if self.eval_model == "student" else self.teacher.module

    def teacher_depth(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] -> B x H x W output of the model that makes the pseudo-labels (the EMA
        teacher), for the image panels."""
        return self.card.infer(self.teacher.module, image)

    # --- training -----------------------------------------------------------------------------------------
    def ordinal_pairs(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's B x P x 5 ordinal pairs (padding rows y1 = -1 for images without labels)."""
        if "ordinal" not in batch:
            raise ValueError(
                "the weak term (model.loss.weak_weight > 0) needs ordinal pairs in the training batches: set "
                "data.weak_labels.ordinal_file to a JSON Lines file of labels (python -m depthadapt.annotate makes "
                "one), or data.weak_labels.ordinal_simulation to simulate an annotator from ground truth; or set "
                "model.loss.weak_weight 0"
            )
        return batch["ordinal"]

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

    def adapted_name(self) -> str:
        return self.eval_model

    def manifest(self) -> dict[str, Any]:
        """What wrote a prediction folder: the source card and the adapted weights' identity."""
        return {**super().manifest(), "eval_model": self.eval_model}


class PerturbationConsistencyAdapter(LoraAdaptationTask):
    """The label-free peer baseline: DepthAnything-AC's perturbation-consistency fine-tuning with its spatial distance
    constraint (``depthadapt.consistency.PerturbationConsistencyLoss``), on WeSTAR's LoRA student, views, data and
    evaluation, so that a comparison changes the objective only.

    The teacher is the frozen source model (the student with its adapters off) on the weak view; the student
    predicts the weak and the strong view each step (one forward more than WeSTAR). No weak labels, no EMA.
    """

    method = "Perturbation consistency (label-free peer)"

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
        super().__init__(model, input_size, lora, lr, weight_decay, warmup_steps, weak_augmentation,
                         strong_augmentation, eval_corruptions, eval_severity, evaluation_protocol, panel_images,
                         activation_checkpointing)
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
