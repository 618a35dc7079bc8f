"""Depth Anything V2 inference images/s at 518 x 518 (bf16 autocast on a GPU, fp32 on the CPU)."""

from __future__ import annotations

import argparse
import contextlib

import torch

from benchmarks.common import best_seconds, device_description, with_peak_memory, write_result
from depthadapt.models import build_depth_model


def measure(encoder: str, batch: int, size: int, device: torch.device, repeats: int) -> dict:
    """Images/s and peak memory of one encoder's forward pass."""
    model = build_depth_model(encoder).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    bf16 = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    @torch.inference_mode()
    def step() -> None:
        with autocast:
            model(x)

    seconds = best_seconds(step, device, repeats)
    row = {
        "benchmark": "inference", "encoder": encoder, "batch": batch, "size": size,
        "precision": "bf16-autocast" if bf16 else "fp32", "device": device_description(device),
        "images_per_s": round(batch / seconds, 2),
    }
    return with_peak_memory(row, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoders", nargs="+", default=["vits", "vitl"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 on a GPU, 2 on the CPU")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats = args.repeats or (20 if device.type == "cuda" else 2)
    rows = [measure(e, args.batch, args.size, device, repeats) for e in args.encoders]
    write_result("inference_speed", rows)


if __name__ == "__main__":
    main()
