"""Method-level: the default experiment (`python cli.py fit`: human-like weak labels on 20 % of neon-C's images)
adapts the foundation-like model to the held-out domain, and the test fails when a part of the method is removed.

The gains it asserts are measured by ``benchmarks.westar_method_gains`` (the default experiment cut to STEPS steps,
seed 0, 1 thread, scored on 256 VALIDATION images, 2000..2255; rows in benchmarks/rows/westar_method_gains.jsonl):
the test runs the same fit at the suite's thread count (which sums in another order) and asserts, on every condition
where the measured gain is at least MIN_GAIN, at least half of it. The benchmark also fits the three mutations the
test must catch (EMA update removed, ``self_training_weight 0``, ``weak_weight 0``).

Measured (2026-12-07, this 2-core VM at 1 thread; rows with the current setting's fingerprint): the default gains
d1 +0.043 clean, +0.012 fog-3, +0.040 dark-3, +0.023 snow-3, +0.037 noise-3, +0.042 blur-3 at 150 steps, so the
test asserts half of it on the five conditions at or above MIN_GAIN (fog-3 is below). Of the mutations, weak weight 0
(+0.011 clean, +0.000 snow-3) and self-training weight 0 (+0.014 clean, -0.075 dark-3) fall short of a margin; the
teacher frozen at the source (EMA update removed) gains as much as the EMA teacher at 150 steps (+0.051 clean), so
the test cannot catch that mutation: ``test_the_gain_test_fails_on_each_benchmarked_mutation[no_ema]`` is a strict
expected failure that says so (README, "Does it work?").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli
from benchmarks.westar_ablation import setting_fingerprint
from benchmarks.westar_method_gains import DOMAIN

pytestmark = pytest.mark.method

ROOT = Path(__file__).resolve().parents[2]
ROWS = ROOT / "benchmarks" / "rows" / "westar_method_gains.jsonl"
STEPS = 150
VAL_RANGE = "[2000, 2256]"
MIN_GAIN = 0.02


def measured(mutation: str) -> dict[str, float]:
    """The benchmark's d1 gain over the source per condition for ``mutation`` (seed 0, STEPS steps)."""
    for line in ROWS.read_text().splitlines():
        row = json.loads(line)
        key = (row["mutation"], row["seed"], row["steps"], row.get("overrides", []), row.get("setting"))
        if key == (mutation, 0, STEPS, [], setting_fingerprint(DOMAIN)):
            return {c: row["adapted"][c]["d1"] - row["source"][c]["d1"] for c in row["adapted"]}
    raise LookupError(f"{ROWS} has no {mutation} row at seed 0, {STEPS} steps: run benchmarks.westar_method_gains")


def asserted_margins() -> dict[str, float]:
    """Half the default's measured gain on each condition where it is at least MIN_GAIN (none is an error)."""
    margins = {c: gain / 2 for c, gain in measured("none").items() if gain >= MIN_GAIN}
    assert margins, f"the default gained under {MIN_GAIN} d1 on every condition in {ROWS.name}: nothing to assert"
    return margins


@pytest.fixture(scope="module")
def westar_scores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validation scores of the source and the adapted model after the default experiment as `python cli.py fit`
    runs it, shortened to STEPS steps and scored on the benchmark's 256 validation images, without side outputs."""
    root = tmp_path_factory.mktemp("westar")
    run = cli.main([
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"), "--seed_everything", "0",
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.limit_train_batches", str(STEPS), "--data.val_range", VAL_RANGE,
        "--data.cache_dir", str(root / "cache"),
    ])
    return run.model.last_val_scores


@pytest.mark.slow
def test_the_source_model_is_good_but_not_perfect_there(westar_scores: dict) -> None:
    """The regime of Depth Anything V2 out of domain, where adaptation has something to gain."""
    assert 0.60 <= westar_scores["source"]["clean"]["d1"] <= 0.90
    assert westar_scores["source"]["clean"]["images"] == 256


@pytest.mark.slow
def test_westar_raises_delta1_by_half_the_measured_gain(westar_scores: dict) -> None:
    source, adapted = westar_scores["source"], westar_scores["adapted"]
    short = {c: round(adapted[c]["d1"] - source[c]["d1"], 4) for c, margin in asserted_margins().items()
             if adapted[c]["d1"] - source[c]["d1"] < margin}
    assert not short, f"gains under half the measured ones: {short}"


@pytest.mark.parametrize("mutation", [
    pytest.param("no_ema", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="measured: the teacher frozen at the source gains as much as the EMA teacher at 150 steps")),
    "no_self_training",
    "no_weak",
])
def test_the_gain_test_fails_on_each_benchmarked_mutation(mutation: str) -> None:
    """The power of the test above, from the benchmark's fits of the broken method: each falls short of a margin."""
    margins = asserted_margins()
    gains = measured(mutation)
    assert any(gains[c] < margin for c, margin in margins.items()), (
        f"{mutation} gains {({c: round(gains[c], 4) for c in margins})} meet every margin "
        f"{({c: round(m, 4) for c, m in margins.items()})}: the gain test would not catch it"
    )
