"""Peak memory of one WeSTAR training step, with and without activation checkpointing, fp32 and bf16 autocast.

One step = ``WeSTARAdapter.training_step`` (weak/strong views, EMA-teacher forward without gradients, LoRA-student
forward, SA-HDN + ordinal + LoRA-regulariser loss), its backward, an AdamW step and the EMA update. On the CPU each
configuration runs in a fresh process and reports its peak resident memory (``ru_maxrss``) and its resident
memory just before the step (model, teacher, optimiser): their difference is the step's own memory (activations,
gradients, temporaries). vitl at 518 x 518 batch 4 is too slow for a 2-core CPU, so vitl is measured at smaller
inputs and the step's memory is extrapolated linearly in batch x tokens (a ViT's activations are per token; the
attention runs through ``scaled_dot_product_attention``, which keeps no tokens x tokens matrix): from two sizes,
``extra = a + b * batch * tokens`` is fitted and evaluated at 4 x 37 * 37 tokens; the same fit on vits is checked
against vits measured at 518 x 518 batch 4. On a GPU, ``benchmarks/gpu.py`` measures the real thing
(``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import device_description, optimizer_step, write_result
from benchmarks.westar_speed import training_batch
from depthadapt.models.activation_checkpointing import enable_activation_checkpointing
from depthadapt.models.card import DepthModelCard
from lightning_modules import WeSTARAdapter

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")
# (encoder, batch, side): vits at the paper's budget and two small sizes to check the extrapolation; vitl small.
CONFIGS = [("vits", 4, 518), ("vits", 1, 266), ("vits", 2, 266), ("vitl", 1, 182), ("vitl", 1, 266)]


def westar_step(
    encoder: str, batch: int, side: int, device: torch.device, precision: str, checkpointing: bool
) -> Callable[[], None]:
    """One full WeSTAR training step (paper's LoRA on qkv) as a callable, on random images of side x side."""
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the module runs outside a Trainer here
    module = WeSTARAdapter(model=DepthModelCard(encoder=encoder), input_size=side).to(device)
    if checkpointing:
        enable_activation_checkpointing(module.model)  # the student; the no-grad teacher keeps nothing anyway
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    data = training_batch(batch, side, side, device)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def step() -> None:
        optimizer_step(module, data, optimizer, autocast)

    return step


def _rss_bytes() -> int:
    """Current resident memory of this process."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(config: dict) -> dict:
    """Run one configuration in this (fresh) process: resident memory before and at the peak of one step."""
    torch.manual_seed(0)
    step = westar_step(config["encoder"], config["batch"], config["side"], torch.device("cpu"),
                       config["precision"], config["checkpointing"])
    before = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**config, "rss_before_gib": round(before / 2**30, 3), "peak_rss_gib": round(peak / 2**30, 3),
            "step_extra_gib": round((peak - before) / 2**30, 3),
            "peak_set_by_step": peak > peak_before}  # False: building the model peaked higher than the step


def extrapolate(rows: list[dict], encoder: str, precision: str, checkpointing: bool, batch: int, side: int) -> float:
    """Step memory at (batch, side) from the two smallest measured sizes, linear in batch x tokens (GiB)."""
    points = sorted(
        (r["batch"] * (r["side"] // 14) ** 2, r["step_extra_gib"]) for r in rows
        if (r["encoder"], r["precision"], r["checkpointing"]) == (encoder, precision, checkpointing)
        and (r["batch"], r["side"]) != (4, 518)
    )[:2]
    (x0, y0), (x1, y1) = points
    slope = (y1 - y0) / (x1 - x0)
    return round(y0 + slope * (batch * (side // 14) ** 2 - x0), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--encoders", nargs="+", default=["vits", "vitl"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = []
    for encoder, batch, side in CONFIGS:
        if encoder not in args.encoders:
            continue
        for precision in PRECISIONS:
            for checkpointing in (False, True):
                config = {"encoder": encoder, "batch": batch, "side": side, "precision": precision,
                          "checkpointing": checkpointing}
                out = subprocess.run([sys.executable, "-m", "benchmarks.westar_memory", "--child", json.dumps(config)],
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                row = {"benchmark": "westar_memory", "device": device_description(torch.device("cpu")),
                       "host_load_avg_1min": round(os.getloadavg()[0], 2), **json.loads(out.stdout.splitlines()[-1])}
                print(json.dumps(row), flush=True)
                rows.append(row)
    for encoder in args.encoders:
        for precision in PRECISIONS:
            for checkpointing in (False, True):
                rows.append({"benchmark": "westar_memory", "reference": "extrapolated to 518 x 518, batch 4",
                             "encoder": encoder, "precision": precision, "checkpointing": checkpointing,
                             "step_extra_gib": extrapolate(rows, encoder, precision, checkpointing, 4, 518)})
    write_result("westar_memory", rows)


if __name__ == "__main__":
    main()
