"""Dual-teacher pseudo-labeller throughput end to end, and where its time goes.

``lightning_modules.DualTeacherLabeler`` labels a folder of PNG images (``datamodules.ImageFolderDataModule``:
decoding included) with masked RANSAC and ``lightning_modules.PseudoLabelWriter`` writes the labels, confidence
maps and sidecars, under ``trainer.predict``: the job as users run it. The classes are used as they are; the
split of each batch's time is read by a callback (batch boundaries) and by timing wrappers set on the two
instances (``teachers``, ``label``, ``write_on_batch_end``; the classes are not changed):

- data: from the end of one batch's ``predict_step`` to the start of the next, less the writing (the loader's
  decode and collate, the writer's skip check), and the first batch's wait;
- teachers: both teachers' ``infer`` (preprocess, forward, upsampling); fit: ``metric_pseudo_labels`` (the
  scale/shift fit and the label maths); rest of ``predict_step`` (copies to the CPU, records);
- write: ``PseudoLabelWriter.write_on_batch_end`` (PNG encoding, sidecars, atomic renames), on the main thread,
  after the timer's ``on_predict_batch_end`` (the timer is the first callback).

Default: the tiny teachers (vitt, ``config_yaml/models/tiny_*.yaml``) on synthetic street images at 140 x 462;
``--cards`` takes any other model cards (e.g. the official vitl ones on a GPU).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import Callback, Trainer

from benchmarks.common import device_description, write_result
from datamodules import ImageFolderDataModule
from datamodules.synthetic import SyntheticDataset
from depthadapt.alignment import fit_scale_shift
from depthadapt.io import write_color_png
from depthadapt.models.card import DepthModelCard
from lightning_modules import DualTeacherLabeler, PseudoLabelWriter

ROOT = Path(__file__).resolve().parents[1]
TINY_CARDS = ("config_yaml/models/tiny_relative_street.yaml", "config_yaml/models/tiny_metric_street.yaml")


def load_card(path: str | Path, **overrides: Any) -> DepthModelCard:
    """A model card from its YAML file (paths inside it relative to the repository root)."""
    card = DepthModelCard(**yaml.safe_load((ROOT / path).read_text()) | overrides)
    if card.checkpoint is not None and not Path(card.checkpoint).is_absolute():
        card.checkpoint = str(ROOT / card.checkpoint)
    return card


def write_images(folder: Path, count: int, height: int, width: int) -> Path:
    """``count`` synthetic street images (source style, unseen by the tiny teachers) as 8-bit PNG files."""
    dataset = SyntheticDataset("street", "source", 4000, 4000 + count, height, width)
    for i in range(count):
        rgb = (dataset[i]["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        write_color_png(folder / f"{i:06d}.png", rgb)
    return folder


class PhaseTimer(Callback):
    """Seconds per phase of ``trainer.predict``: data (between batches), the timed wrappers, the whole loop."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {"data": 0.0, "teachers": 0.0, "fit": 0.0, "write": 0.0, "step": 0.0}
        self.images = 0
        self.mark = self.start = self.total = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def timed(self, phase: str, fn: Callable) -> Callable:
        """``fn`` with its wall time added to ``phase``."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = self._now()
            out = fn(*args, **kwargs)
            self.seconds[phase] += self._now() - start
            return out

        return wrapper

    def on_predict_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.start = self.mark = self._now()

    def on_predict_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        now = self._now()
        self.seconds["data"] += now - self.mark
        self.mark = now
        self.images += len(batch["name"])

    def on_predict_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        now = self._now()
        self.seconds["step"] += now - self.mark  # predict_step (this callback runs before the writer's)
        self.mark = now

    def on_predict_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.total = self._now() - self.start


def load_fit_kernels(device: torch.device) -> float:
    """Seconds of one small fit: the compiled CPU kernels' one-off load from numba's cache (~0.5 s per process; a
    first compile where there is no cache), paid before the timed job, in which a long run would not notice it."""
    start = time.perf_counter()
    pred = torch.rand(2, 40_000, generator=torch.Generator().manual_seed(0)).to(device)
    fit_scale_shift(pred, 2 * pred + 1, method="ransac", support="extremes")
    return round(time.perf_counter() - start, 3)


def measure(relative: DepthModelCard, metric: DepthModelCard, images: Path, batch_size: int, num_workers: int,
            device: torch.device, method: str = "masked_ransac") -> dict:
    """Label every image of ``images`` once, into a temporary folder: images/s and the split of the time."""
    labeler = DualTeacherLabeler(relative=relative, metric=metric, method=method, confidence=True)
    timer = PhaseTimer(device)
    labeler.teachers = timer.timed("teachers", labeler.teachers)
    labeler.label = timer.timed("fit", labeler.label)
    with tempfile.TemporaryDirectory() as out:
        writer = PseudoLabelWriter(str(Path(out) / "labels"))
        writer.write_on_batch_end = timer.timed("write", writer.write_on_batch_end)
        trainer = Trainer(accelerator=device.type, devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, precision="bf16-mixed" if device.type == "cuda" else "32-true",
                          callbacks=[timer, writer])
        data = ImageFolderDataModule(image_dir=str(images), batch_size=batch_size, num_workers=num_workers)
        trainer.predict(labeler, datamodule=data)
        written = writer.written
    seconds = timer.seconds
    seconds["predict_step_rest"] = seconds.pop("step") - seconds["teachers"] - seconds["fit"]
    seconds["data"] -= seconds["write"]  # the writer runs between this timer's batch end and the next start
    share = {f"share_{k}": round(v / timer.total, 3) for k, v in seconds.items()}
    return {
        "benchmark": "pseudo_label_speed", "device": device_description(device), "method": method,
        "relative": f"{relative.encoder} @ {relative.input_size}", "metric": f"{metric.encoder} @ {metric.input_size}",
        "images": timer.images, "written": written, "batch": batch_size, "num_workers": num_workers,
        "seconds_total": round(timer.total, 3), "images_per_s": round(timer.images / timer.total, 2),
        **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()}, **share,
        "host_load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--height", type=int, default=140)
    parser.add_argument("--width", type=int, default=462)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--cards", nargs=2, default=list(TINY_CARDS), help="relative and metric model card YAML")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernels_load = load_fit_kernels(device)
    with tempfile.TemporaryDirectory() as folder:
        images = write_images(Path(folder), args.images, args.height, args.width)
        rows = [measure(load_card(args.cards[0]), load_card(args.cards[1]), images, args.batch, args.num_workers,
                        device, method) | {"seconds_fit_kernels_load": kernels_load}
                for method in ("masked_ransac", "masked_lstsq")]
    write_result("pseudo_label_speed", rows)


if __name__ == "__main__":
    main()
