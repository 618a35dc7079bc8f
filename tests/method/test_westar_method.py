"""Method-level: the default experiment (`python cli.py fit`) adapts the foundation-like model to a held-out domain."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli

pytestmark = pytest.mark.method

ROOT = Path(__file__).resolve().parents[2]
# The default experiment (config_yaml/westar.yaml: neon's "-C" images, 64 validation images of a room style never seen
# in pretraining) cut from 300 to 150 steps of 4 to fit the suite's budget (300 steps: benchmarks/RESULTS.md).
# Gains in d1 at 150 steps, seed 0 / seed 1, measured at 1 thread; the test runs seed 0 (at the suite's thread
# count, which sums in another order) and asserts under half of the smaller of the two.
STEPS = 150
MEASURED_GAINS = {
    "clean": (0.132, 0.145),
    "fog-3": (0.027, 0.044),
    "dark-3": (0.107, 0.131),
    "snow-3": (0.077, 0.075),
    "gaussian_noise-3": (0.141, 0.143),
    "motion_blur-3": (0.114, 0.125),
}


@pytest.fixture(scope="module")
def westar_scores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validation scores of the source and the adapted model after the default experiment as `python cli.py fit`
    runs it (SA-HDN on whole-object instances, simulated ordinal labels), shortened, without its side outputs; its
    render worker overlaps the training on the second core."""
    root = tmp_path_factory.mktemp("westar")
    run = cli.main([
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"),
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.limit_train_batches", str(STEPS), "--data.cache_dir", str(root / "cache"),
    ])
    return run.model.last_val_scores


def test_the_source_model_is_good_but_not_perfect_there(westar_scores: dict) -> None:
    """The regime of Depth Anything V2 out of domain, where adaptation has something to gain (measured 0.663)."""
    assert 0.60 <= westar_scores["source"]["clean"]["d1"] <= 0.90


@pytest.mark.parametrize("condition", list(MEASURED_GAINS))
def test_westar_raises_delta1_on_every_condition(westar_scores: dict, condition: str) -> None:
    source, adapted = westar_scores["source"][condition], westar_scores["adapted"][condition]
    assert adapted["images"] == source["images"] == 64
    assert adapted["d1"] - source["d1"] >= min(MEASURED_GAINS[condition]) / 2
    assert adapted["abs_rel"] < source["abs_rel"]
