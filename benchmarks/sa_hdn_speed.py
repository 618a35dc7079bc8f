"""SA-HDN loss forward + backward time (and peak memory on a GPU): batch 4, 518 x 518, 64 instances + image."""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import best_seconds, device_description, write_result
from depthadapt.losses import sa_hdn_loss
from depthadapt.westar import instance_contexts


def measure(batch: int, size: int, instances_per_side: int, device: torch.device, repeats: int) -> dict:
    """Seconds of one SA-HDN forward + backward on random disparities with a grid of square instances."""
    generator = torch.Generator().manual_seed(0)
    cells = torch.arange(size) * instances_per_side // size
    instances = (cells[:, None] * instances_per_side + cells[None, :] + 1).expand(batch, size, size).to(device)
    contexts = instance_contexts(instances, min_area=1)
    target = (torch.rand(batch, size, size, generator=generator) + 0.1).to(device)
    pred = torch.rand(batch, size, size, generator=generator).to(device).requires_grad_(True)
    mask = (torch.rand(batch, size, size, generator=generator) > 0.1).to(device)

    def step() -> None:
        pred.grad = None
        sa_hdn_loss(pred, target, contexts, mask).backward()

    if device.type == "cuda":
        step()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    seconds = best_seconds(step, device, repeats)
    row = {
        "benchmark": "sa_hdn_loss",
        "batch": batch,
        "size": size,
        "contexts": contexts.shape[1],
        "device": device_description(device),
        "forward_backward_ms": round(seconds * 1000, 2),
    }
    if device.type == "cuda":
        row["peak_extra_memory_gib"] = round((torch.cuda.max_memory_allocated(device) - baseline) / 2**30, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--instances-per-side", type=int, default=8, help="instances form an n x n grid")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [measure(args.batch, args.size, args.instances_per_side, d, args.repeats) for d in devices]
    write_result("sa_hdn_speed", rows)


if __name__ == "__main__":
    main()
