"""Helpers shared by the benchmarks: device description, timing, result files."""

from __future__ import annotations

import contextlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from depthadapt.io import atomic_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_description(device: torch.device) -> str:
    """A human-readable name of the device the figures come from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of `fn`, synchronising CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def best_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Fastest wall time of `repeats` calls of `fn` after `warmup` calls, synchronising CUDA."""
    for _ in range(warmup):
        fn()
    return min(seconds(fn, device) for _ in range(repeats))


def with_peak_memory(row: dict, device: torch.device) -> dict:
    """`row` plus the peak CUDA memory allocated (GiB) when the device is a GPU."""
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def optimizer_step(module: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
                   autocast: contextlib.AbstractContextManager) -> None:
    """One training step of a task outside a Trainer: its training_step under `autocast`, backward, AdamW, and the
    task's batch-end hook (WeSTAR: the EMA update)."""
    with autocast:
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    module.on_train_batch_end(None, batch, 0)


def write_result(name: str, rows: list[dict]) -> Path:
    """Write benchmark rows as JSON into benchmarks/results/<name>.json (atomically) and print them."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        print(json.dumps(row))
    return path
