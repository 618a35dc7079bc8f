"""The gains behind tests/method/test_westar_method.py: the default experiment shortened to the test's steps, scored on
a broad VALIDATION set (256 images, 2000..2255: choices and test margins are made on validation, never on the test
split), and the same fit with each of the method's parts broken once (the mutations the test must catch).

Mutations: ``none`` (the default: realistic weak labels, SA-HDN self-training, EMA teacher), ``no_ema`` (the teacher
frozen at the source: its EMA update removed), ``no_self_training`` (``--model.loss.self_training_weight 0``),
``no_weak`` (``--model.loss.weak_weight 0``). ``--override`` adds CLI arguments to every fit of the run (the validation
sweep that chooses the realistic default's settings, e.g. ``--override --model.loss.weak_weight 3``); they are recorded
in the row, and rows of other overrides are neither skipped nor reported as the default. Each fit appends its d1 /
AbsRel per condition to ``benchmarks/rows/westar_method_gains.jsonl`` (committed); ``--report`` prints the gains over
the source model. Run at one thread (``OMP_NUM_THREADS=1``); the rows record the thread count and the setting's
fingerprint (``benchmarks.westar_ablation.setting_fingerprint``: experiment config, data fragment, source model), so
rows of an earlier default are neither skipped nor read as the current one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch

import cli
from benchmarks.westar_ablation import setting_fingerprint
from lightning_modules import WeSTARAdapter

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "benchmarks" / "rows" / "westar_method_gains.jsonl"
STEPS = 150
DOMAIN = "neon"  # the default experiment's (config_yaml/westar.yaml: data/ood_neon.yaml)
VAL_RANGE = (2000, 2256)
MUTATIONS: dict[str, list[str]] = {
    "none": [],
    "no_ema": [],
    "no_self_training": ["--model.loss.self_training_weight", "0"],
    "no_weak": ["--model.loss.weak_weight", "0"],
}


def fit_scores(mutation: str, seed: int, steps: int, root: Path, overrides: list[str] = ()
               ) -> dict[str, dict[str, dict[str, float]]]:
    """Fit the default experiment with ``mutation`` and CLI ``overrides`` -> {source|adapted: {condition: metrics}}."""
    args = [
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"), "--seed_everything", str(seed),
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.limit_train_batches", str(steps),
        "--data.val_range", f"[{VAL_RANGE[0]}, {VAL_RANGE[1]}]", "--data.num_workers", "0",
        "--data.cache_dir", str(ROOT / "outputs" / "cache"), *MUTATIONS[mutation], *overrides,
    ]
    frozen = mock.patch.object(WeSTARAdapter, "on_train_batch_end", lambda *a: None)
    if mutation == "no_ema":
        with frozen:
            return cli.main(args).model.last_val_scores
    return cli.main(args).model.last_val_scores


def report(rows: list[dict]) -> None:
    """Print each mutation's d1 gain over the source per condition."""
    for row in rows:
        gains = {c: round(row["adapted"][c]["d1"] - row["source"][c]["d1"], 4) for c in row["adapted"]}
        print(f"{row['mutation']:>16} {' '.join(row.get('overrides', []))} seed {row['seed']} steps {row['steps']} "
              f"threads {row['threads']}: {gains}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", nargs="+", default=list(MUTATIONS), choices=list(MUTATIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--override", nargs=argparse.REMAINDER, default=[],
                        help="CLI arguments added to every fit (last option: everything after it is passed on)")
    parser.add_argument("--report", action="store_true", help="no fits: print the gains of the rows file")
    args = parser.parse_args()
    setting = setting_fingerprint(DOMAIN)
    done = [json.loads(line) for line in ROWS.read_text().splitlines()] if ROWS.exists() else []
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    for mutation in [] if args.report else args.mutations:
        key = (mutation, args.seed, args.steps, args.override, setting)
        if any((r["mutation"], r["seed"], r["steps"], r.get("overrides", []), r.get("setting")) == key for r in done):
            continue
        with tempfile.TemporaryDirectory() as workdir:
            scores = fit_scores(mutation, args.seed, args.steps, Path(workdir), args.override)
        row = {"benchmark": "westar_method_gains", "split": "validation", "val_range": list(VAL_RANGE),
               "setting": setting, "mutation": mutation, "overrides": args.override, "seed": args.seed,
               "steps": args.steps, "threads": torch.get_num_threads(), "source": scores["source"],
               "adapted": scores["adapted"]}
        with ROWS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        report([row])
    report(done)


if __name__ == "__main__":
    main()
