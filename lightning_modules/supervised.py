"""A Depth Anything V2 model trained on labels: fine-tuning, the dual-teacher student; evaluation, prediction."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

from depthadapt.losses import gradient_matching_loss, silog_loss, ssi_loss
from depthadapt.metrics import (
    METRIC_NAMES,
    EvaluationProtocol,
    depth_to_disparity,
    format_comparison_table,
    format_metrics_table,
)
from depthadapt.models.card import DepthModelCard
from depthadapt.models.da3.build import warm_start_from_dav2
from depthadapt.models.depth_anything import DepthAnythingV2
from depthadapt.models.weights.keys import read_checkpoint
from lightning_modules.base import TrainableDepthTask

Init = Literal["full", "encoder"]
TABLE_COLUMNS = ("d1", "abs_rel", "rmse", "rmse_log", "images", "skipped")


class SupervisedDepth(TrainableDepthTask):
    """Train on depth labels (SSI on disparity for a relative head, SiLog for a metric head), evaluate, predict.

    ``model`` is the model card (encoder, head, checkpoint, input size; ``input_size`` overrides the card's).
    ``init``: ``full`` loads the whole checkpoint; ``encoder`` loads only its encoder (``pretrained.*``) and starts
    the DPT head fresh, as the official metric fine-tuning does from a relative checkpoint. A relative head adds
    ``gradient_matching_weight`` x the multi-scale gradient-matching loss to SSI (Depth Anything V2 / MiDaS recipe;
    0 switches it off); ``flip_tta`` averages each evaluation and prediction with its mirrored pass. AdamW with the
    encoder at ``lr`` and the decoder at ``lr * decoder_lr_factor`` (Depth Anything V2 fine-tuning). Evaluation and
    prediction run at the card's input size (aspect kept) and upsample to the image; relative models are scored
    affine-invariantly. With ``table_row`` the test prints a comparison-table row of that name (the dual-teacher
    paper's Table 3 for a student).

    A Depth Anything 3 card (``family: da3``): a relative one (DA3, DA3Mono: depth up to scale, not disparity)
    trains with SSI in depth space and is scored affine-invariantly in depth space; ``warm_start``: a Depth Anything
    V2 checkpoint whose DINOv2 and DPT tensors of matching name and shape initialise it (`warm_start_from_dav2`).
    A DA3Metric card evaluates and predicts in metres, ``focal * output / 300`` as the official code (focal: the
    mean of fx, fy of the network input, from the batch's ``intrinsics`` or else ``focal_length``, in pixels of
    the image as loaded); it does not train here.
    """

    def __init__(
        self,
        model: DepthModelCard,
        input_size: int | None = None,
        init: Init = "full",
        lr: float = 5e-6,
        decoder_lr_factor: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        silog_lambda: float = 0.5,
        gradient_matching_weight: float = 0.0,
        flip_tta: bool = False,
        evaluation_protocol: EvaluationProtocol | None = None,
        table_row: str | None = None,
        warm_start: str | None = None,
        focal_length: float | None = None,
    ) -> None:
        if init not in get_args(Init):
            raise ValueError(f"model.init must be one of {', '.join(get_args(Init))}, got {init!r}")
        if model.family == "da3" and init != "full":
            raise ValueError("model: a Depth Anything 3 card loads here with init: full")
        if focal_length is not None and focal_length <= 0:
            raise ValueError(f"model.focal_length must be > 0 (pixels), got {focal_length}")
        if warm_start is not None and model.family != "da3":
            raise ValueError("model.warm_start initialises a Depth Anything 3 model (family: da3) from a DAv2 .pth")
        super().__init__(lr, weight_decay, warmup_steps, evaluation_protocol)
        self.save_hyperparameters()
        self.card = self.run_at(model, input_size)
        self.model = self.build_model(self.card)
        if init == "encoder":
            fresh = DepthAnythingV2(model.encoder, model.head, model.max_depth)
            fresh.pretrained.load_state_dict(self.model.pretrained.state_dict())
            self.model = fresh
        if warm_start is not None:
            warm_start_from_dav2(self.model, read_checkpoint(warm_start))
        self.decoder_lr_factor = decoder_lr_factor
        self.silog_lambda = silog_lambda
        self.gradient_matching_weight, self.flip_tta = gradient_matching_weight, flip_tta
        self.table_row, self.focal_length = table_row, focal_length
        self.val_metrics = self.make_metrics(model.head == "relative", self.card.alignment_space)
        self.test_metrics = self.make_metrics(model.head == "relative", self.card.alignment_space)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] (H, W multiples of 14) -> B x H x W model output."""
        return self.model(self.card.normalise(image))

    def predict_depth(self, image: torch.Tensor, intrinsics: torch.Tensor | None = None) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1], any size -> B x H x W output at the card's input size, upsampled back
        (DA3Metric: in metres, with the B x 4 ``intrinsics`` of the images or ``focal_length``)."""
        return self.card.predict(self.model, image, intrinsics, self.focal_length, self.flip_tta)

    def on_fit_start(self) -> None:
        if self.card.focal_scaled:
            raise ValueError(f"model: {self.card.encoder} (DA3Metric) evaluates and predicts here; it does not train")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not self.has_images(batch):
            return None
        pred, depth, valid = self(batch["image"]), batch["depth"], batch["valid"]
        if self.card.head == "relative":
            target = depth if self.card.output == "depth" else depth_to_disparity(depth, valid)
            loss = ssi_loss(pred, target, valid)
            if self.gradient_matching_weight > 0:
                loss = loss + self.gradient_matching_weight * gradient_matching_loss(pred, target, valid)
        else:
            loss = silog_loss(pred, depth, valid, self.silog_lambda)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(pred))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.has_images(batch):
            self.evaluate(self.val_metrics, self.predict_depth(batch["image"], batch.get("intrinsics")), batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.has_images(batch):
            self.evaluate(self.test_metrics, self.predict_depth(batch["image"], batch.get("intrinsics")), batch)

    def on_validation_epoch_end(self) -> None:
        values = self.scores(self.val_metrics)
        if values:
            self.log_dict({f"val/{k}": values[k] for k in METRIC_NAMES})

    def on_test_epoch_end(self) -> None:
        values = self.scores(self.test_metrics)
        if not values:
            return
        self.log_dict({f"test/{k}": values[k] for k in METRIC_NAMES})
        if self.trainer.is_global_zero:
            kind = "affine-invariant" if self.card.head == "relative" else "metric"
            if self.table_row is None:
                print(format_metrics_table(values, title=f"test ({kind}, {self.card.encoder})"))
            else:
                title = f"{self.card.encoder} ({kind}) against ground truth, {int(values['images'])} images"
                print(format_comparison_table({self.table_row: values}, columns=TABLE_COLUMNS, title=title))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """``{"name": [...], "kind": "relative" | "depth" | "metric", "depth": B x H x W}``: disparity (DAv2
        relative), depth up to scale (DA3 relative) or metres."""
        if not self.has_images(batch):
            return None
        depth = self.predict_depth(batch["image"], batch.get("intrinsics")).float().cpu()
        kind = "depth" if self.card.output == "depth" else self.card.head
        return {"name": batch["name"], "kind": kind, "depth": depth}

    def manifest(self) -> dict[str, Any]:
        """What wrote a prediction folder: the model card (with the checkpoint's hash)."""
        return {"task": type(self).__name__, "model": self.card.describe()}

    def export_model(self) -> torch.nn.Module:
        """The model the export callback writes."""
        return self.model

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Encoder at ``lr``, decoder at ``lr * decoder_lr_factor`` (trainable parameters only)."""
        encoder_module = self.model.backbone if self.card.family == "da3" else self.model.pretrained
        encoder_ids = {id(p) for p in encoder_module.parameters()}
        encoder = [p for p in encoder_module.parameters() if p.requires_grad]
        decoder = [p for p in self.model.parameters() if p.requires_grad and id(p) not in encoder_ids]
        return [{"params": encoder, "lr": self.lr}, {"params": decoder, "lr": self.lr * self.decoder_lr_factor}]
