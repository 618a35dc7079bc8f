"""Write dual-teacher pseudo-labels as they come: atomic, resumable, one writer per process under DDP."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from depthadapt.io import atomic_path, write_color_png, write_depth_png16

log = logging.getLogger(__name__)

DEPTH_PNG_SCALE = 256.0
"""Label PNGs hold metres x 256 (the KITTI convention): read with ``read_depth(path, 1 / 256)``."""
CONFIDENCE_PNG_SCALE = 65535.0
"""Confidence PNGs hold confidence x 65535: read with ``read_depth(path, 1 / 65535)``."""


def _keep(batch: dict[str, Any], keep: list[bool]) -> dict[str, Any]:
    """The batch restricted to the samples where ``keep``; ``skipped`` (unreadable samples) unchanged."""
    if not any(keep):
        return {"skipped": batch.get("skipped", []), "name": []}
    kept: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "skipped":
            kept[key] = value
        elif isinstance(value, torch.Tensor):
            kept[key] = value[torch.tensor(keep, device=value.device)]
        else:
            kept[key] = [v for v, k in zip(value, keep, strict=True) if k]
    return kept


class PseudoLabelWriter(BasePredictionWriter):
    """Per image ``name`` (extension dropped), from ``DualTeacherLabeler.predict_step``:

    - ``<output_dir>/<name>.png``: 16-bit metres x 256, 0 invalid (the KITTI convention);
    - ``<output_dir>/<name>_confidence.png``: 16-bit confidence x 65535, when the labeler gives one;
    - ``<image_dir>/<name>.png``: the input RGB (8 bit), when ``image_dir`` is set: for datasets rendered
      in memory (the synthetic domain), so that a student can train from the two folders;
    - ``<output_dir>/<name>.json``: the fit record (method, fit space, scale, shift, inlier ratio, support
      count, fallback, teachers' checkpoints), written last: it marks the image done.

    Every file is written atomically, and no label is kept in memory once written. Images whose sidecar
    exists are dropped from the batch before the teachers run, so a killed job resumes where it stopped,
    with any datamodule. Under DDP each process writes the images of its own shard (Lightning's unrepeated
    sampler: none twice, none missed) and logs its counts.
    """

    def __init__(self, output_dir: str = "outputs/pseudo_labels/labels", image_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.written = 0
        self.already_done = 0
        self.fallbacks = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Labels go to disk only: ``trainer.predict`` keeps none in memory (a whole dataset would not fit)."""
        if stage == "predict":
            trainer.predict_loop.return_predictions = False

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start this run's counts at zero."""
        self.written = self.already_done = self.fallbacks = 0

    def paths(self, name: str) -> dict[str, Path]:
        """Output files of the image with relative path ``name``: label, confidence, sidecar (and image)."""
        stem = Path(name).with_suffix("")
        label = self.output_dir / stem
        paths = {
            "label": label.with_name(label.name + ".png"),
            "confidence": label.with_name(label.name + "_confidence.png"),
            "sidecar": label.with_name(label.name + ".json"),
        }
        if self.image_dir is not None:
            paths["image"] = self.image_dir / stem.parent / (stem.name + ".png")
        return paths

    def is_done(self, name: str) -> bool:
        """True when image ``name`` was labelled already (its sidecar, written last, exists)."""
        return self.paths(name)["sidecar"].is_file()

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Drop the images already labelled from the batch (in place), before any work is done on them."""
        keep = [not self.is_done(name) for name in batch["name"]]
        if not all(keep):
            self.already_done += keep.count(False)
            kept = _keep(batch, keep)
            batch.clear()
            batch.update(kept)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write the label, confidence, image and sidecar of every image of the batch."""
        for i, (name, record) in enumerate(zip(prediction["name"], prediction["records"], strict=True)):
            paths = self.paths(name)
            write_depth_png16(paths["label"], prediction["depth"][i], DEPTH_PNG_SCALE)
            if prediction["confidence"] is not None:
                write_depth_png16(paths["confidence"], prediction["confidence"][i], CONFIDENCE_PNG_SCALE)
            if "image" in paths:
                rgb = (batch["image"][i].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8)
                write_color_png(paths["image"], rgb.cpu().numpy())
            with atomic_path(paths["sidecar"]) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n")
            self.written += 1
            self.fallbacks += bool(record["fallback"])

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log this process's counts: written, already done, fallbacks."""
        log.info(
            "rank %d: wrote pseudo-labels of %d images to %s (%d already done, %d fallback fits)",
            trainer.global_rank, self.written, self.output_dir, self.already_done, self.fallbacks,
        )
