"""Write predicted depth maps to disk as they come (atomic, resumable)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from depthadapt.io import colorize_depth, write_color_png, write_depth_npy, write_depth_png16, write_relative_png16

log = logging.getLogger(__name__)

FORMATS = ("npy", "png16", "color")
_SUFFIXES = {"npy": ".npy", "png16": ".png", "color": "_color.png"}


class DepthMapWriter(BasePredictionWriter):
    """Per image `a/b.jpg`: `a/b.npy` (float32 output), `a/b.png` (16 bit) and `a/b_color.png` (to look at).

    The 16-bit PNG holds metres x `png_scale` for a metric model (the KITTI convention, 0 invalid) and the
    per-image min-max normalised output for a relative model. Images whose files all exist are skipped,
    so a killed job resumes where it stopped.
    """

    def __init__(
        self, output_dir: str = "outputs/predictions", formats: Sequence[str] = FORMATS, png_scale: float = 256.0
    ) -> None:
        super().__init__(write_interval="batch")
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown or not formats:
            raise ValueError(f"DepthMapWriter.formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
        self.output_dir = Path(output_dir)
        self.formats = tuple(formats)
        self.png_scale = png_scale
        self.written = 0
        self.already_done = 0

    def paths(self, name: str) -> dict[str, Path]:
        """Output file of each format for the image with relative path `name`."""
        stem = self.output_dir / Path(name).with_suffix("")
        return {fmt: stem.parent / (stem.name + _SUFFIXES[fmt]) for fmt in self.formats}

    def is_done(self, name: str) -> bool:
        """True when every output file of image `name` exists."""
        return all(path.is_file() for path in self.paths(name).values())

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Drop images already written from the datamodule's predict dataset before any work is done."""
        dataset = getattr(trainer.datamodule, "predict_dataset", None)
        if stage != "predict" or dataset is None or not hasattr(dataset, "exclude"):
            return
        self.already_done = dataset.exclude({name for name in dataset.files if self.is_done(name)})
        if self.already_done:
            log.info("skipping %d images already written to %s", self.already_done, self.output_dir)

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
        if prediction["prediction"] is None:  # every image of the batch was unreadable
            return
        metric = getattr(pl_module, "head", "relative") == "metric"
        for name, output in zip(prediction["name"], prediction["prediction"], strict=True):
            output = output.numpy()
            paths = self.paths(name)
            if "npy" in paths:
                write_depth_npy(paths["npy"], output)
            if "png16" in paths:
                if metric:
                    write_depth_png16(paths["png16"], output, self.png_scale)
                else:
                    write_relative_png16(paths["png16"], output)
            if "color" in paths:
                write_color_png(paths["color"], colorize_depth(output, invert=metric))
            self.written += 1

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log.info(
            "wrote depth maps of %d images to %s (%d already done)", self.written, self.output_dir, self.already_done
        )
