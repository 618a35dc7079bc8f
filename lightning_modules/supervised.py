"""A Depth Anything V2 model as a plain LightningModule: supervised fit, evaluation, zero-shot prediction."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import LightningModule

from depthadapt.losses import silog_loss, ssi_loss
from depthadapt.metrics import METRIC_NAMES, DepthMetrics, format_metrics_table
from depthadapt.models import build_depth_model, infer
from depthadapt.models.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class SupervisedDepth(LightningModule):
    """Train (SSI loss on disparity for a relative head, SiLog for a metric head), evaluate and predict.

    Evaluation and prediction run at the official resolution (`input_size`, aspect kept) and upsample
    the output to the image's size; relative models are scored affine-invariantly in disparity space.
    """

    # Constructor arguments kept out of the checkpoint's hyper-parameters (modules, saved as weights or not at all).
    hparams_ignore: tuple[str, ...] = ()

    def __init__(
        self,
        encoder: str = "vits",
        head: str = "relative",
        max_depth: float = 80.0,
        checkpoint: str | None = None,
        checkpoint_prefix: str | None = None,
        input_size: int = 518,
        lr: float = 5e-6,
        decoder_lr_factor: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        silog_lambda: float = 0.5,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        # Attributes, not only hyper-parameters: subclasses fix them without exposing them in their config (and
        # LightningCLI records only the config's arguments as hyper-parameters).
        self.head = head
        self.decoder_lr_factor = decoder_lr_factor
        self.model = build_depth_model(encoder, head, max_depth, checkpoint, checkpoint_prefix)
        if checkpoint is None:
            log.warning("model.checkpoint is not set: the %s model has random weights", encoder)
        metric_args = dict(
            affine_invariant=head == "relative", min_depth=eval_min_depth, max_depth=eval_max_depth, crop=eval_crop
        )
        self.val_metrics = DepthMetrics(**metric_args)
        self.test_metrics = DepthMetrics(**metric_args)
        self.skipped: list[tuple[str, str]] = []
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1] (H, W multiples of 14) -> B x H x W model output."""
        return self.model((image - self.mean) / self.std)

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W image in [0, 1], any size -> B x H x W output at `input_size`, upsampled back."""
        return infer(self.model, image, self.hparams.input_size)

    def _take_skipped(self, batch: dict[str, Any]) -> bool:
        """Record the batch's unreadable samples; True when nothing is left to process."""
        self.skipped.extend(batch.get("skipped", []))
        return "image" not in batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self._take_skipped(batch):
            return None
        pred, depth, valid = self(batch["image"]), batch["depth"], batch["valid"]
        if self.head == "relative":
            loss = ssi_loss(pred, torch.where(valid, 1.0 / depth.clamp_min(1e-6), 0.0), valid)
        else:
            loss = silog_loss(pred, depth, valid, self.hparams.silog_lambda)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(pred))
        return loss

    def _evaluate(self, batch: dict[str, Any], metrics: DepthMetrics) -> None:
        if self._take_skipped(batch):
            return
        metrics.update(self.predict_depth(batch["image"]), batch["depth"], batch["valid"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _log_metrics(self, metrics: DepthMetrics, stage: str) -> dict[str, float]:
        values = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        self.log_dict({f"{stage}/{k}": values[k] for k in METRIC_NAMES}, sync_dist=False)
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        values = self._log_metrics(self.test_metrics, "test")
        if self.trainer.is_global_zero:
            kind = "affine-invariant" if self.head == "relative" else "metric"
            print(format_metrics_table(values, title=f"test ({kind}, {self.hparams.encoder})"))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if self._take_skipped(batch):
            return {"name": [], "prediction": None}
        return {"name": batch["name"], "prediction": self.predict_depth(batch["image"]).float().cpu()}

    def _report_skipped(self, stage: str) -> None:
        if self.skipped:
            names = ", ".join(name for name, _ in self.skipped[:10])
            log.warning("%s: %d unreadable samples skipped: %s", stage, len(self.skipped), names)
        self.skipped = []

    def on_train_epoch_end(self) -> None:
        self._report_skipped("fit")

    def on_test_end(self) -> None:
        self._report_skipped("test")

    def on_predict_end(self) -> None:
        self._report_skipped("predict")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on trainable parameters, encoder at `lr`, decoder at `lr * decoder_lr_factor`; warm-up, then cosine."""
        encoder = [p for p in self.model.pretrained.parameters() if p.requires_grad]
        decoder = [p for p in self.model.depth_head.parameters() if p.requires_grad]
        groups = [
            {"params": encoder, "lr": self.hparams.lr},
            {"params": decoder, "lr": self.hparams.lr * self.decoder_lr_factor},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.hparams.weight_decay)
        warmup = self.hparams.warmup_steps
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
