"""The ablation benchmark's bookkeeping: each fit lands in the rows file once, reruns resume (fits of the same
setting only), shards split the work, --report fits none; the summary and the issue's bars."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import common, westar_ablation

pytestmark = pytest.mark.integration

CONDITIONS = ("clean", "fog-3")


def _scores(seed: int, extra: list[str]) -> dict:
    gain = 0.01 * (seed + 1) + 0.001 * len(extra)
    return {model: {c: {"d1": 0.5 + (model == "adapted") * gain, "abs_rel": 0.2} for c in CONDITIONS}
            for model in ("source", "adapted")}


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], calls: list) -> list[dict]:
    def fake_fit(domain: str, extra: list[str], seed: int, args, workdir: Path) -> dict:
        calls.append((domain, tuple(extra), seed))
        return _scores(seed, extra)

    monkeypatch.setattr(westar_ablation, "run_fit", fake_fit)
    monkeypatch.setattr(sys, "argv", ["westar_ablation", *argv])
    westar_ablation.main()
    return json.loads((common.RESULTS_DIR / "westar_ablation.json").read_text())


def test_fits_are_recorded_once_resumed_and_averaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "ROWS", tmp_path / "westar_ablation.jsonl")
    variants = ["--variants", "self-training only, grid HDN", westar_ablation.WESTAR]
    calls: list = []
    _run(monkeypatch, ["--domains", "neon", "--seeds", "2", *variants[:2]], calls)
    assert [(d, s) for d, _, s in calls] == [("neon", 0), ("neon", 1)]
    rows = _run(monkeypatch, ["--domains", "neon", "--seeds", "2", *variants], calls)  # resumes: the new one runs
    assert [(d, e, s) for d, e, s in calls[2:]] == [("neon", (), 0), ("neon", (), 1)]
    partial = [json.loads(line) for line in (tmp_path / "westar_ablation.jsonl").read_text().splitlines()]
    assert len(partial) == len(CONDITIONS) * (4 + 1)  # 4 fits + the source model once
    mean = next(r for r in rows if r.get("variant") == westar_ablation.WESTAR and r.get("seeds")
                and r["condition"] == "clean")
    assert mean["d1_mean"] == pytest.approx(0.5 + (0.01 + 0.02) / 2, abs=1e-4)
    assert mean["d1_spread"] == pytest.approx(0.01, abs=1e-4)
    before = len(calls)
    _run(monkeypatch, ["--domains", "neon", "sintel", "--report", *variants], calls)
    assert len(calls) == before  # --report tabulates, never fits
    corrupted = next(r for r in rows if r.get("variant") == westar_ablation.WESTAR and r.get("seeds")
                     and r["condition"] == westar_ablation.MEAN_CORRUPTED)
    assert corrupted["d1_mean"] == mean["d1_mean"]  # one corruption here: its mean is itself


def test_seeds_come_first_and_shards_split_the_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "ROWS", tmp_path / "westar_ablation.jsonl")
    variants = ["--variants", westar_ablation.WEAK_ONLY, westar_ablation.WESTAR]
    first: list = []
    _run(monkeypatch, ["--domains", "neon", "sintel", "--seeds", "2", "--shard", "0/2", *variants], first)
    assert [(d, s) for d, _, s in first] == [("neon", 0), ("sintel", 0), ("neon", 1), ("sintel", 1)]
    second: list = []
    _run(monkeypatch, ["--domains", "neon", "sintel", "--seeds", "2", "--shard", "1/2", *variants], second)
    assert len(second) == 4 and not set(first) & set(second)  # the other half, nothing twice


def test_fits_of_another_setting_are_neither_skipped_nor_averaged(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(westar_ablation, "ROWS", tmp_path / "westar_ablation.jsonl")
    variant = ["--variants", westar_ablation.WESTAR, "--seeds", "1"]
    calls: list = []
    monkeypatch.setattr(westar_ablation, "setting_fingerprint", lambda domain: "old-model")
    _run(monkeypatch, ["--domains", "neon", *variant], calls)
    monkeypatch.setattr(westar_ablation, "setting_fingerprint", lambda domain: "new-model")
    rows = _run(monkeypatch, ["--domains", "neon", *variant], calls)
    assert len(calls) == 2  # the old model's fit is not taken for the new one's
    assert {r["setting"] for r in rows if "setting" in r} == {"new-model"}
    assert all(r["seeds"] == 1 for r in rows if "seeds" in r)  # and not averaged with it


def test_the_setting_fingerprint_follows_the_fragment_and_the_weights(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config_yaml" / "data").mkdir(parents=True)
    (tmp_path / "config_yaml" / "models").mkdir()
    (tmp_path / "config_yaml" / "westar.yaml").write_text("model: {init_args: {model: models/card.yaml}}\n")
    (tmp_path / "config_yaml" / "models" / "card.yaml").write_text("checkpoint: weights.pth\n")
    (tmp_path / "weights.pth").write_bytes(b"one")
    for domain in ("neon", "sintel"):
        (tmp_path / "config_yaml" / "data" / f"ood_{domain}.yaml").write_text(f"style: {domain}\n")
    monkeypatch.setattr(westar_ablation, "ROOT", tmp_path)
    monkeypatch.setattr(westar_ablation, "EXPERIMENT", tmp_path / "config_yaml" / "westar.yaml")
    neon = westar_ablation.setting_fingerprint("neon")
    assert neon != westar_ablation.setting_fingerprint("sintel")
    (tmp_path / "weights.pth").write_bytes(b"two")
    assert westar_ablation.setting_fingerprint("neon") != neon
    assert len(neon) == 12


def test_the_report_table_has_a_column_per_condition_and_half_the_seed_spread() -> None:
    means = [
        {"variant": "source model", "condition": "clean", "seeds": 1, "d1_mean": 0.6, "d1_spread": 0.0},
        {"variant": "source model", "condition": "fog-3", "seeds": 1, "d1_mean": 0.4, "d1_spread": 0.0},
        {"variant": "default", "condition": "clean", "seeds": 2, "d1_mean": 0.8, "d1_spread": 0.01},
        {"variant": "default", "condition": "fog-3", "seeds": 2, "d1_mean": 0.7, "d1_spread": 0.03},
    ]
    assert westar_ablation.markdown_table(means).splitlines() == [
        "| variant | seeds | clean | fog-3 |",
        "|---|---|---|---|",
        "| source model | 1 | 0.600 | 0.400 |",
        "| default | 2 | 0.800 ±0.005 | 0.700 ±0.015 |",
    ]


def test_the_bars_compare_the_rows_the_issue_names() -> None:
    def row(domain: str, variant: str, condition: str, d1: float) -> dict:
        return {"domain": domain, "variant": variant, "condition": condition, "d1_mean": d1, "seeds": 3,
                "d1_spread": 0.0}

    mean = westar_ablation.MEAN_CORRUPTED
    means = [row(d, westar_ablation.SOURCE, c, 0.6) for d in ("neon", "sintel") for c in ("clean", mean)]
    means += [row(d, westar_ablation.WEAK_ONLY, c, 0.7) for d in ("neon", "sintel") for c in ("clean", mean)]
    means += [row("neon", westar_ablation.WESTAR, "clean", 0.75), row("neon", westar_ablation.WESTAR, mean, 0.72),
              row("sintel", westar_ablation.WESTAR, "clean", 0.80), row("sintel", westar_ablation.WESTAR, mean, 0.71)]
    lines = westar_ablation.bars(means, ["neon", "sintel"])
    assert lines[0].startswith("- WeSTAR >= weak labels only + 0.02 (clean and corrupted): 1 of 2 domains")
    assert "neon yes (+0.020)" in lines[0] and "sintel no (+0.010)" in lines[0]
    assert "0 of 0 domains" in lines[1]  # no self-training row measured
    table = westar_ablation.summary_table(means, ["neon", "sintel"]).splitlines()
    assert table[0] == "| variant | neon-C clean | neon-C corrupted | sintel-C clean | sintel-C corrupted |"
    assert table[-1] == f"| {westar_ablation.WESTAR} | 0.750 ±0.000 | 0.720 ±0.000 | 0.800 ±0.000 | 0.710 ±0.000 |"
