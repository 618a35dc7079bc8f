"""Reproducible fits: the same config and seed in two parallel processes give the same weights, and a fit killed
with SIGKILL after an epoch and resumed from last.ckpt ends where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from builders import make_dataset

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "configs"
CHECKPOINT = "{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {dirpath: %s, save_last: true}}"
RUNS = {
    # WeSTAR, step-limited (max_steps and max_epochs both set, as in the reported failure), validation each epoch.
    "westar": [str(CONFIGS / "westar.yaml"), "--trainer.limit_train_batches", "1.0", "--trainer.max_epochs", "3",
               "--trainer.max_steps", "6", "--data.train_range", "[0, 4]", "--data.num_workers", "0"],
    # The metric student (SupervisedDepth), epoch-limited, with flips.
    "student": [str(CONFIGS / "test.yaml"), "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "1",
                "--data.val_fraction", "0.2", "--data.batch_size", "2", "--data.hflip", "true",
                "--data.image_size", "[56, 84]", "--model.lr", "1e-3"],
}


def command(run: str, out: Path, *extra: str) -> list[str]:
    """The fit of ``run`` writing its checkpoints to ``out``; 2 torch threads, so threading order could matter."""
    config, *args = RUNS[run]
    return [sys.executable, str(ROOT / "cli.py"), "fit", "--config", config, *args,
            "--trainer.callbacks", f"[{CHECKPOINT % out}]", "--trainer.logger", "false", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "random"}


def final_state(path: Path) -> dict:
    checkpoint = torch.load(path, weights_only=False)
    return {"global_step": checkpoint["global_step"], "epoch": checkpoint["epoch"],
            "state_dict": checkpoint["state_dict"]}


@pytest.mark.slow  # default suite under 10 minutes: runs in make test-all
@pytest.mark.parametrize("run", ["westar", "student"])
def test_same_seed_same_weights_and_sigkill_resume_ends_where_an_uninterrupted_fit_does(
    run: str, tmp_path: Path
) -> None:
    extra: list[str] = []
    if run == "student":
        images, depths = make_dataset(tmp_path, count=5)  # 4 train, 1 val: 2 steps an epoch
        extra = ["--data.image_dir", str(images), "--data.depth_dir", str(depths)]
    env = environment()
    parallel = [subprocess.Popen(command(run, tmp_path / name, *extra), cwd=tmp_path, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for name in ("first", "second")]
    killed_dir = tmp_path / "killed"
    killed = subprocess.Popen(command(run, killed_dir, *extra), cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(killed_dir.glob("epoch=1-*.ckpt")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    for process in parallel:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    resumed = subprocess.run(command(run, killed_dir, *extra, "--ckpt_path", str(killed_dir / "last.ckpt")),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    first, second = (final_state(tmp_path / name / "last.ckpt") for name in ("first", "second"))
    again = final_state(killed_dir / "last.ckpt")
    assert first["global_step"] == second["global_step"] == again["global_step"] == 6
    assert first["epoch"] == again["epoch"] == 2
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key  # same seed, same numbers, bit for bit
        assert torch.equal(value, again["state_dict"][key]), key  # resumed == uninterrupted
