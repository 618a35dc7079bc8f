"""Prediction writers (one resumable mechanism, three kinds of output) and the export callback.

Every writer is a ``ResumableWriter``: ``paths(name)`` names an item's files, ``is_done(name)`` says whether they
exist, ``write(name, item)`` writes them atomically. Before the model runs on a batch, the items already done are
dropped from it (any datamodule, synthetic included), so a killed job resumes where it stopped. Each output folder
holds a manifest (``depthadapt.io.MANIFEST_NAME``: the model cards with checkpoint hashes, the settings); a rerun
with another model or other settings into the same folder is an error unless ``overwrite`` is set, and folders with
a manifest are never listed as input images. An item ``write`` refuses (``SkipItem``: a fallback fit, a non-finite
output) is named in the log and counted, never written; a run whose every item was skipped is an error.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from depthadapt.export import EXPORT_FORMATS as MODEL_FORMATS
from depthadapt.export import export_all
from depthadapt.io import (
    atomic_path,
    check_intrinsics,
    check_output_manifest,
    colorize_depth,
    depth_to_points,
    make_intrinsics,
    write_color_png,
    write_depth_npy,
    write_depth_png16,
    write_ply,
    write_relative_png16,
)
from depthadapt.models.lora import save_lora_adapter
from depthadapt.westar import mask_cache_path, write_instance_map
from lightning_modules.base import DepthTask, TrainableDepthTask

log = logging.getLogger(__name__)

DEPTH_PNG_SCALE = 256.0
"""Label PNGs hold metres x 256 (the KITTI convention): read with ``read_depth(path, 1 / 256)``."""
CONFIDENCE_PNG_SCALE = 65535.0
"""Confidence PNGs hold confidence x 65535: read with ``read_depth(path, 1 / 65535)``."""
_SHOWN = 10  # skipped items named in the end-of-run line


class SkipItem(Exception):
    """Raised by a writer's ``write``: this item must not be written (the message says why); the run goes on."""


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


class ResumableWriter(BasePredictionWriter):
    """The one resumable prediction writer: subclasses define ``paths``, ``write`` and optionally ``settings``.

    ``is_done(name)``: every file of ``paths(name)`` exists (subclasses may check one file written last). Items
    come from ``predict_step`` as ``{"name": [...], <key>: batched tensors or lists, ...}``; ``write`` gets one
    item's values. ``trainer.predict`` keeps nothing in memory (``return_predictions`` is switched off here).
    """

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.resume = True  # until setup reads the manifest: files that exist are this job's
        self.written = self.already_done = 0
        self.skipped: list[tuple[str, str]] = []  # (name, why): refused by write, or unreadable input

    # --- to define ----------------------------------------------------------------------------------------
    def paths(self, name: str) -> dict[str, Path]:
        """Output files of item ``name`` by role."""
        raise NotImplementedError

    def write(self, name: str, item: dict[str, Any]) -> None:
        """Write the files of item ``name`` (atomically); raise ``SkipItem`` to leave it out."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """This writer's options that change its files (recorded in the manifest)."""
        return {}

    # --- the mechanism ------------------------------------------------------------------------------------
    def is_done(self, name: str) -> bool:
        """True when the files of item ``name`` exist."""
        return all(path.is_file() for path in self.paths(name).values())

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check or record the output folder's manifest; keep no prediction in memory."""
        if stage != "predict":
            return
        trainer.predict_loop.return_predictions = False
        if not isinstance(pl_module, DepthTask):
            raise TypeError(f"{type(self).__name__} writes a DepthTask's predictions, not {type(pl_module).__name__}'s")
        manifest = {"writer": type(self).__name__, "settings": self.settings()} | pl_module.manifest()
        self.resume = check_output_manifest(self.output_dir, manifest, self.overwrite)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.written = self.already_done = 0
        self.skipped = []

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Drop the items an earlier run of this job wrote from the batch (in place), before the model runs."""
        self.skipped += [(name, f"unreadable: {why}") for name, why in batch.get("skipped", [])]
        keep = [not (self.resume and self.is_done(name)) for name in batch["name"]]
        if not all(keep):
            self.already_done += keep.count(False)
            kept = _keep(batch, keep)
            batch.clear()
            batch.update(kept)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any] | None,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write every item of the batch's prediction (None: the batch held no image to predict)."""
        if prediction is None:
            return
        names = prediction["name"]
        for i, name in enumerate(names):
            item = {k: v if isinstance(v, str) or v is None else v[i] for k, v in prediction.items() if k != "name"}
            for key in ("image", "intrinsics"):  # what writers may need of the input
                if key in batch and len(batch[key]) == len(names):
                    item[key] = batch[key][i]
            try:
                self.write(name, item)
            except SkipItem as why:
                log.warning("%s: not written: %s", name, why)
                self.skipped.append((name, str(why)))
                continue
            self.written += 1

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log what was written and skipped; a run whose every item was skipped (none written or done before) is an
        error. A run given no item at all (another shard's images only) is not."""
        shown = "; ".join(f"{name} ({why})" for name, why in self.skipped[:_SHOWN])
        shown += f"; ... ({len(self.skipped) - _SHOWN} more)" if len(self.skipped) > _SHOWN else ""
        log.info("rank %d: %s wrote %d items to %s (%d already done)", trainer.global_rank, type(self).__name__,
                 self.written, self.output_dir, self.already_done)
        if self.skipped:
            log.warning("rank %d: %s skipped %d items: %s", trainer.global_rank, type(self).__name__,
                        len(self.skipped), shown)
        if self.skipped and self.written == 0 and self.already_done == 0 and trainer.world_size == 1:
            raise ValueError(f"{type(self).__name__} wrote nothing to {self.output_dir}: {len(self.skipped)} items "
                             f"skipped{': ' + shown if shown else ''}")


FORMATS = ("npy", "png16", "color", "ply")
_SUFFIXES = {"npy": ".npy", "png16": ".png", "color": "_color.png", "ply": ".ply"}


class DepthMapWriter(ResumableWriter):
    """Per image ``a/b.jpg``: ``a/b.npy`` (float32 output), ``a/b.png`` (16 bit), ``a/b_color.png`` (to look at) and,
    for metric predictions, ``a/b.ply`` (a binary point cloud, x y z metres in the camera frame + RGB).

    The 16-bit PNG holds metres x ``png_scale`` for a metric prediction (the KITTI convention, 0 invalid) and the
    per-image min-max normalised output for a relative one (``relative``: disparity; ``depth``: depth up to scale,
    Depth Anything 3); the kind comes with the prediction. Point clouds use
    ``intrinsics`` (fx, fy, cx, cy in pixels of the image as stored), else ``focal_length`` (principal point at the
    centre), else the sample's own ``intrinsics`` (synthetic scenes; KITTI's calibration); the camera is checked
    when the writer is built, before anything is written.

    Not written, but named in the log and counted: an output with a non-finite value (NaN, inf), and an item whose
    fit record says ``fallback`` (``SparseAlignedDepth``: too few points, no fit with a positive scale; its depth is
    not metric), unless ``write_fallbacks``, which writes it with a sidecar ``a/b.json`` holding the record
    (``"fallback": true``, scale, shift, points).
    """

    def __init__(
        self,
        output_dir: str = "outputs/predictions",
        formats: Sequence[str] = ("npy", "png16", "color"),
        png_scale: float = 256.0,
        intrinsics: tuple[float, float, float, float] | None = None,
        focal_length: float | None = None,
        overwrite: bool = False,
        write_fallbacks: bool = False,
    ) -> None:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown or not formats:
            raise ValueError(f"DepthMapWriter.formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
        if intrinsics is not None and focal_length is not None:
            raise ValueError("DepthMapWriter: give intrinsics (fx, fy, cx, cy) or focal_length, not both")
        if not (math.isfinite(png_scale) and png_scale > 0):
            raise ValueError(f"DepthMapWriter.png_scale must be a positive number, got {png_scale}")
        if focal_length is not None and not (math.isfinite(focal_length) and focal_length > 0):
            raise ValueError(f"DepthMapWriter.focal_length must be a positive number of pixels, got {focal_length}")
        super().__init__(output_dir, overwrite)
        self.formats = tuple(formats)
        self.png_scale = png_scale
        self.intrinsics = None if intrinsics is None else check_intrinsics(intrinsics, "DepthMapWriter.intrinsics")
        self.focal_length = focal_length
        self.write_fallbacks = write_fallbacks

    def settings(self) -> dict[str, Any]:
        return {"formats": list(self.formats), "png_scale": self.png_scale, "intrinsics": self.intrinsics,
                "focal_length": self.focal_length, "write_fallbacks": self.write_fallbacks}

    def camera(self, name: str, item: dict[str, Any], height: int, width: int) -> tuple[float, ...]:
        """The (fx, fy, cx, cy) of image ``name`` for its point cloud."""
        if self.intrinsics is not None:
            return self.intrinsics
        if self.focal_length is not None:
            return make_intrinsics(height, width, focal=self.focal_length)
        if "intrinsics" in item:
            return check_intrinsics(item["intrinsics"].tolist(), f"the intrinsics of sample {name}")
        raise ValueError(
            f"a point cloud of {name} needs the camera: set the writer's intrinsics [fx, fy, cx, cy] or focal_length "
            "(pixels), or use a dataset whose samples carry intrinsics"
        )

    def paths(self, name: str) -> dict[str, Path]:
        """Output file of each format for the image with relative path ``name``."""
        stem = self.output_dir / Path(name).with_suffix("")
        return {fmt: stem.parent / (stem.name + _SUFFIXES[fmt]) for fmt in self.formats}

    def write(self, name: str, item: dict[str, Any]) -> None:
        output = item["depth"].numpy()
        finite = np.isfinite(output)
        if not finite.all():
            raise SkipItem(f"the model's output has {int((~finite).sum())} non-finite values (NaN or inf) of "
                           f"{output.size}")
        record = item.get("records")
        fallback = record is not None and bool(record.get("fallback"))
        if fallback and not self.write_fallbacks:
            raise SkipItem(f"fallback fit, its depth is not metric ({record.get('points')} points; set the writer's "
                           "write_fallbacks: true to write it with a sidecar saying so)")
        metric = item["kind"] == "metric"
        paths = self.paths(name)
        if "npy" in paths:
            write_depth_npy(paths["npy"], output)
        if "png16" in paths:
            if metric:
                write_depth_png16(paths["png16"], output, self.png_scale)
            else:
                write_relative_png16(paths["png16"], output)
        if "color" in paths:
            write_color_png(paths["color"], colorize_depth(output, invert=item["kind"] != "relative"))  # near bright
        if "ply" in paths:
            if not metric:
                raise ValueError(
                    f"point clouds need metric depth, but {name} has a relative prediction: use a metric model card, "
                    "or SparseAlignedDepth to make a relative model metric, or drop ply from the writer's formats"
                )
            camera = self.camera(name, item, *output.shape)
            points, colors = depth_to_points(item["depth"], camera, item.get("image"))
            write_ply(paths["ply"], points, colors)
        if fallback:
            sidecar = self.output_dir / Path(name).with_suffix(".json")
            with atomic_path(sidecar) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n")


class PseudoLabelWriter(ResumableWriter):
    """Per image ``name`` (extension dropped), from ``DualTeacherLabeler.predict_step``:

    - ``<output_dir>/<name>.png``: 16-bit metres x 256, 0 invalid (the KITTI convention);
    - ``<output_dir>/<name>_confidence.png``: 16-bit confidence x 65535, when the labeler gives one;
    - ``<image_dir>/<name>.png``: the input RGB (8 bit), when ``image_dir`` is set: for datasets rendered in memory
      (the synthetic domain), so that a student can train from the two folders;
    - ``<output_dir>/<name>.json``: the fit record (method, fit space, scale, shift, inlier ratio, support count,
      fallback, teachers' checkpoints), written last: it marks the image done.

    Under DDP each process writes the images of its own shard (Lightning's unrepeated sampler: none twice).
    """

    def __init__(
        self, output_dir: str = "outputs/pseudo_labels/labels", image_dir: str | None = None, overwrite: bool = False
    ) -> None:
        super().__init__(output_dir, overwrite)
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.fallbacks = 0

    def settings(self) -> dict[str, Any]:
        return {"image_dir": None if self.image_dir is None else str(self.image_dir)}

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
        """True when image ``name`` is labelled (its sidecar, written last, exists)."""
        return self.paths(name)["sidecar"].is_file()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.fallbacks = 0

    def write(self, name: str, item: dict[str, Any]) -> None:
        paths = self.paths(name)
        write_depth_png16(paths["label"], item["depth"], DEPTH_PNG_SCALE)
        if item["confidence"] is not None:
            write_depth_png16(paths["confidence"], item["confidence"], CONFIDENCE_PNG_SCALE)
        if "image" in paths:
            rgb = (item["image"].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8)
            write_color_png(paths["image"], rgb.cpu().numpy())
        with atomic_path(paths["sidecar"]) as tmp:
            tmp.write_text(json.dumps(item["records"], indent=1) + "\n")
        self.fallbacks += bool(item["records"]["fallback"])

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_end(trainer, pl_module)
        log.info("rank %d: %d fallback fits", trainer.global_rank, self.fallbacks)


class InstanceMaskWriter(ResumableWriter):
    """Write each image's instance map to ``mask_cache_path(cache_dir, name)`` (16-bit PNG, atomic).

    Images already cached are dropped from the batch before SAM2 runs, so a killed job resumes where it stopped.
    """

    def __init__(self, cache_dir: str = "outputs/sam2_masks", overwrite: bool = False) -> None:
        super().__init__(cache_dir, overwrite)

    def paths(self, name: str) -> dict[str, Path]:
        return {"instances": mask_cache_path(self.output_dir, name)}

    def write(self, name: str, item: dict[str, Any]) -> None:
        write_instance_map(self.paths(name)["instances"], item["instances"])


EXPORT_FORMATS = (*MODEL_FORMATS, "peft")


class ExportCallback(Callback):
    """At the end of fit, export the task's model (``pl_module.export_model()``) into ``directory`` (default: the
    checkpoint folder, else the run's log folder), LoRA merged: ``official`` -> ``adapted_model.pth`` (official state
    dict, with an ``adapted_model.json`` sidecar naming encoder and head), ``hf`` -> ``adapted_model_hf/`` (a
    transformers folder), ``onnx`` -> ``adapted_model.onnx``; ``peft`` -> ``lora_adapter/`` (the adapter alone, in
    peft's format; only for LoRA models)."""

    def __init__(self, formats: Sequence[str] = EXPORT_FORMATS, directory: str | None = None) -> None:
        unknown = sorted(set(formats) - set(EXPORT_FORMATS))
        if unknown:
            raise ValueError(f"ExportCallback.formats must be a subset of {EXPORT_FORMATS}, got {list(formats)}")
        self.formats = tuple(formats)
        self.directory = directory

    def export_dir(self, trainer: Trainer) -> Path:
        """Where the exports go."""
        if self.directory is not None:
            return Path(self.directory)
        callback = trainer.checkpoint_callback
        if callback is not None and getattr(callback, "dirpath", None):
            return Path(callback.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not isinstance(pl_module, TrainableDepthTask):
            raise TypeError(f"ExportCallback exports a trained model: {type(pl_module).__name__} does not train one")
        model = pl_module.export_model()
        directory = self.export_dir(trainer)
        export_all(model, [f for f in self.formats if f != "peft"], directory, card=pl_module.card)
        if "peft" in self.formats and hasattr(model, "peft_config"):
            save_lora_adapter(model, directory / "lora_adapter")
        log.info("exported %s to %s", ", ".join(self.formats), directory)
