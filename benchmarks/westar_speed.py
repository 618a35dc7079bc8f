"""WeSTAR training speed: seconds per step and per image, the SA-HDN loss's share of a step, GPU memory.

One step = weak/strong views, EMA-teacher forward, LoRA-student forward + backward, SA-HDN over the image and
64 instances, simulated ordinal pairs, LoRA regulariser, AdamW, EMA update. On a GPU in bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings

import torch

from benchmarks.common import best_seconds, device_description, optimizer_step, with_peak_memory, write_result
from benchmarks.sa_hdn_speed import measure as measure_sa_hdn
from depthadapt.models.card import DepthModelCard
from depthadapt.westar import pad_pairs, simulate_ordinal_pairs
from lightning_modules import WeSTARAdapter


def training_batch(batch: int, height: int, width: int, device: torch.device) -> dict:
    """Random images, a depth ramp, an 8 x 8 grid of instances (64) and 15 exact ordinal pairs per image."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.linspace(1, 0, height)[:, None].expand(height, width)
    depth = (2.0 + 60.0 * rows**2).expand(batch, height, width).contiguous()
    cells_y, cells_x = torch.arange(height) * 8 // height, torch.arange(width) * 8 // width
    instances = (cells_y[:, None] * 8 + cells_x[None, :] + 1).expand(batch, height, width)
    return {
        "image": torch.rand(batch, 3, height, width, generator=generator).to(device),
        "depth": depth.to(device),
        "valid": torch.ones(batch, height, width, dtype=torch.bool, device=device),
        "instances": instances.to(device),
        "ordinal": pad_pairs([simulate_ordinal_pairs(d, d > 0, generator=torch.Generator().manual_seed(i))
                              for i, d in enumerate(depth)], 15).to(device),
        "index": torch.arange(batch, device=device),
        "name": [f"random/{i}" for i in range(batch)],
        "skipped": [],
    }


def measure(encoder: str, batch: int, height: int, width: int, device: torch.device, repeats: int) -> dict:
    """Seconds per WeSTAR training step (full method, paper's LoRA on qkv) and peak memory on a GPU."""
    module = WeSTARAdapter(model=DepthModelCard(encoder=encoder)).to(device)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    data = training_batch(batch, height, width, device)
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"

    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step() -> None:
        optimizer_step(module, data, optimizer, autocast)

    if device.type == "cuda":
        step()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = best_seconds(step, device, repeats)
    row = {
        "benchmark": "westar_step",
        "encoder": encoder,
        "batch": batch,
        "size": f"{height}x{width}",
        "precision": precision,
        "device": device_description(device),
        "seconds_per_step": round(seconds, 3),
        "images_per_second": round(batch / seconds, 2),
    }
    return with_peak_memory(row, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the module runs outside a Trainer here
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows.append(measure("vitt", 4, 140, 462, device, args.repeats))
        step = measure("vits", 4, 518, 518, device, 1 if device.type == "cpu" else args.repeats + 3)
        sa_hdn = measure_sa_hdn(4, 518, 8, device, args.repeats + 1)
        step["sa_hdn_forward_backward_ms"] = sa_hdn["forward_backward_ms"]
        step["sa_hdn_share_of_step"] = round(sa_hdn["forward_backward_ms"] / 1000 / step["seconds_per_step"], 3)
        rows.append(step)
        if device.type == "cuda":
            rows.append(measure("vitl", 4, 518, 518, device, args.repeats + 3))
    if not torch.cuda.is_available():
        print("no GPU: the bf16 vits / vitl figures (images/s, peak memory) need a CUDA device")
    write_result("westar_speed", rows)


if __name__ == "__main__":
    main()
