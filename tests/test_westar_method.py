"""Method-level: WeSTAR adapts the tiny source model to the synthetic target domain (seeded, small, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def westar_scores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validation scores of source and adapted model after 100 steps of full WeSTAR (config_yaml/westar.yaml:
    SA-HDN on ground-truth instances, simulated ordinal labels, LoRA regulariser) at 70 x 224."""
    root = tmp_path_factory.mktemp("westar")
    run = cli.main([
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"),
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "100",
        "--data.val_range", "[3000, 3064]",
        "--data.cache_dir", str(root / "cache"), "--data.num_workers", "0",
    ])
    return run.model.last_val_scores


@pytest.mark.parametrize("condition", ["clean", "fog-3"])
def test_westar_raises_target_delta1_over_the_source_model(westar_scores: dict, condition: str) -> None:
    """64 held-out target-style images (3000-3063), clean and fogged. Measured (deterministic, so the same with 1
    or 2 threads): d1 0.347 -> 0.371 clean (+0.023), 0.320 -> 0.336 fog-3 (+0.015); AbsRel 0.447 -> 0.428 and
    0.467 -> 0.458. The test asserts under half of each gain."""
    source, adapted = westar_scores["source"][condition], westar_scores["adapted"][condition]
    assert adapted["images"] == source["images"] == 64
    assert adapted["d1"] - source["d1"] >= {"clean": 0.01, "fog-3": 0.007}[condition]
    assert adapted["abs_rel"] < source["abs_rel"] - 0.004
