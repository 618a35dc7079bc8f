"""KITTI-C corruptions: corrupted images/s for a batch of 16 at 196 x 644, per type and mean, CPU (+ CUDA)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial

import torch

from benchmarks.common import best_seconds, device_description, write_result
from depthadapt.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def _images(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """B x 3 x H x W images in [0, 1] with smooth structure and texture, like a photograph more than noise."""
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 24, generator=g), size=(height, width),
                                             mode="bicubic", align_corners=False)  # fmt: skip
    return (0.8 * smooth + 0.2 * torch.rand(batch, 3, height, width, generator=g)).clamp(0, 1).to(device)


def measure(
    device: torch.device, batch: int, height: int, width: int, repeats: int, corruptions: Sequence[str] = CORRUPTIONS
) -> list[dict]:
    """One row per corruption (images/s over severities 1..5) and a "mean" row: throughput over every type."""
    images = _images(batch, height, width, device)
    seeds = torch.arange(batch)
    rows = []
    for corruption in corruptions:
        seconds = [
            best_seconds(partial(corrupt, images, corruption, severity, seed=seeds), device, repeats)
            for severity in SEVERITIES
        ]
        mean_seconds = sum(seconds) / len(seconds)
        rows.append({
            "benchmark": "corruption_speed", "corruption": corruption, "batch": batch, "size": [height, width],
            "device": device_description(device), "images_per_s": round(batch / mean_seconds, 1),
            "images_per_s_by_severity": [round(batch / s, 1) for s in seconds],
        })  # fmt: skip
    total_seconds = sum(batch / row["images_per_s"] for row in rows)
    rows.append({
        "benchmark": "corruption_speed", "corruption": "mean", "batch": batch, "size": [height, width],
        "device": device_description(device), "images_per_s": round(len(rows) * batch / total_seconds, 1),
    })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--height", type=int, default=196)
    parser.add_argument("--width", type=int, default=644)
    parser.add_argument("--repeats", type=int, default=None, help="default: 10 on a GPU, 2 on the CPU")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        repeats = args.repeats or (10 if device.type == "cuda" else 2)
        rows += measure(device, args.batch, args.height, args.width, repeats)
    write_result("corruption_speed", rows)


if __name__ == "__main__":
    main()
