"""Method-level: the default experiment (`python cli.py fit`) adapts the foundation-like model to a held-out domain."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
# Gains in d1 measured for config_yaml/westar.yaml on neon's 64 validation images (room style never seen in
# pretraining; adaptation on its "-C" images, 300 steps of 4), seed 0 / seed 1 at 1 thread (benchmarks/RESULTS.md).
# The test runs seed 0 and asserts under half of the smaller of the two; at 2 threads seed 0 gains +0.184, +0.060,
# +0.231, +0.083, +0.186, +0.135 (other float summation order), as far above.
MEASURED_GAINS = {
    "clean": (0.174, 0.182),
    "fog-3": (0.068, 0.059),
    "dark-3": (0.209, 0.228),
    "snow-3": (0.084, 0.099),
    "gaussian_noise-3": (0.182, 0.188),
    "motion_blur-3": (0.134, 0.143),
}


@pytest.fixture(scope="module")
def westar_scores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validation scores of the source and the adapted model after the default experiment, as `python cli.py fit`
    runs it (full WeSTAR: SA-HDN on whole-object instances, simulated ordinal labels), without its side outputs."""
    root = tmp_path_factory.mktemp("westar")
    run = cli.main([
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"),
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--data.cache_dir", str(root / "cache"), "--data.num_workers", "0",
    ])
    return run.model.last_val_scores


def test_the_source_model_is_good_but_not_perfect_there(westar_scores: dict) -> None:
    """The regime of Depth Anything V2 out of domain, where adaptation has something to gain (measured 0.614)."""
    assert 0.60 <= westar_scores["source"]["clean"]["d1"] <= 0.90


@pytest.mark.parametrize("condition", list(MEASURED_GAINS))
def test_westar_raises_delta1_on_every_condition(westar_scores: dict, condition: str) -> None:
    source, adapted = westar_scores["source"][condition], westar_scores["adapted"][condition]
    assert adapted["images"] == source["images"] == 64
    assert adapted["d1"] - source["d1"] >= min(MEASURED_GAINS[condition]) / 2
    assert adapted["abs_rel"] < source["abs_rel"]
