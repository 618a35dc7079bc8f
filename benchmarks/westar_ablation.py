"""WeSTAR baselines and ablations on the held-out domains (the paper's ablation table, CPU scale).

Every variant is the default experiment (config_yaml/westar.yaml: the foundation-like model at 140 rows, SA-HDN on
whole-object instances, the normalised ordinal term at weight 10, no regulariser) with a few switches, adapted to
one held-out domain (config_yaml/data/ood_<domain>.yaml) for the same steps, once per seed. The unlabelled
adaptation images are the domain's "-C" version (the fragment's ``train_corruptions``), as in the paper's corrupted
benchmarks: each image is corrupted with chance 0.5 by one of the KITTI-C mixture (fog, dark, snow,
gaussian_noise, motion_blur) at severity 1..3. Scores: affine-invariant d1 / AbsRel on the domain's 64 validation
images, clean and under each corruption of the mixture at severity 3.

Variants (the paper's rows, ``VARIANTS``): self-training with grid HDN; weak supervision only (SGRL-like: ordinal
labels, no self-training); SA-HDN self-training; + ordinal labels (the default experiment); + the LoRA regulariser
at the paper's 1.0 (the paper's full WeSTAR); the default with grid HDN; the default with the paper's literal weak
term (raw disparity, weight 0.001, no margin); the paper's full WeSTAR with its literal weak term (all its weights);
the default with LoRA on the attention ``qkv`` only (the paper's placement; the tiny experiment adapts every linear);
the default with SLIC superpixels instead of the scenes' whole-object instances; the default and weak supervision
only with ordinal labels on 10 % of the images (the paper labels a subset by hand: does self-training add when the
labels are scarce?).
Each fit's scores are appended to ``benchmarks/results/westar_ablation.partial.jsonl`` as it finishes, and a rerun
skips the fits found there (a killed benchmark resumes); ``westar_ablation.json`` gets every fit and the
per-variant means over seeds. Every row carries the fingerprint of its setting (``setting_fingerprint``: the
experiment config, the domain's fragment, the source model's card and weights), so fits of another source model or
image size are neither skipped nor averaged in. Each domain's table is printed as in benchmarks/RESULTS.md
(``--report`` prints them from the partial file without fitting).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from pathlib import Path

import yaml

import cli
from benchmarks.common import RESULTS_DIR, write_result

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ["neon", "pastel", "sepia", "sintel"]
_LITERAL_WEAK_TERM = [
    "--model.ordinal_form", "disparity", "--model.weak_weight", "0.001", "--model.ordinal_margin", "0",
]
VARIANTS: dict[str, list[str]] = {
    "self-training, grid HDN": ["--model.context", "grid", "--model.weak_weight", "0"],
    "weak supervision only": ["--model.self_training_weight", "0"],
    "self-training, SA-HDN": ["--model.weak_weight", "0"],
    "SA-HDN + ordinal labels (default)": [],
    "+ LoRA regulariser 1.0 (paper's full WeSTAR)": ["--model.regularizer_weight", "1.0"],
    "default with grid HDN": ["--model.context", "grid"],
    "default with the paper's literal weak term": _LITERAL_WEAK_TERM,
    "paper's full WeSTAR, literal weak term": ["--model.regularizer_weight", "1.0", *_LITERAL_WEAK_TERM],
    "default, LoRA on qkv only (paper)": ["--model.lora_targets", "[qkv]"],
    "default with SLIC superpixels as instances": ["--data.instance_source", "superpixels"],
    "default, ordinal labels on 10 % of the images": ["--model.ordinal_label_fraction", "0.1"],
    "weak supervision only, ordinal labels on 10 % of the images": [
        "--model.self_training_weight", "0", "--model.ordinal_label_fraction", "0.1",
    ],
}
PARTIAL = RESULTS_DIR / "westar_ablation.partial.jsonl"
EXPERIMENT = ROOT / "config_yaml" / "westar.yaml"


def setting_fingerprint(domain: str) -> str:
    """12 hex digits of the SHA-256 of the experiment config, ``domain``'s fragment and the source model's card and
    weights: what every variant of the domain shares."""
    card = ROOT / "config_yaml" / yaml.safe_load(EXPERIMENT.read_text())["model"]["init_args"]["model"]
    weights = ROOT / yaml.safe_load(card.read_text())["checkpoint"]
    digest = hashlib.sha256()
    for path in (EXPERIMENT, ROOT / "config_yaml" / "data" / f"ood_{domain}.yaml", card, weights):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_fit(domain: str, extra: list[str], seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Fit one variant on one domain; its last validation scores {source|adapted: {condition: metrics}}."""
    run = cli.main([
        "fit", "--config", str(EXPERIMENT),
        "--data", str(ROOT / "config_yaml" / "data" / f"ood_{domain}.yaml"),
        "--seed_everything", str(seed),
        "--trainer.default_root_dir", str(workdir), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", str(args.steps),
        "--data.cache_dir", str(ROOT / "outputs" / "cache"), "--data.num_workers", "0", *extra,
    ])
    return run.model.last_val_scores


def _rows(domain: str, variant: str, seed: int, steps: int, setting: str,
          scores: dict[str, dict[str, float]]) -> list[dict]:
    return [{"benchmark": "westar_ablation", "domain": domain, "variant": variant, "seed": seed, "steps": steps,
             "setting": setting, "condition": condition, "d1": round(m["d1"], 5), "abs_rel": round(m["abs_rel"], 5)}
            for condition, m in scores.items()]


def markdown_table(means: list[dict]) -> str:
    """One domain's per-variant means as RESULTS.md's table: d1 per condition, mean ± half the seeds' spread."""
    conditions = list(dict.fromkeys(row["condition"] for row in means))
    cells: dict[str, dict[str, str]] = {}
    seeds: dict[str, int] = {}
    for row in means:
        spread = f" ±{row['d1_spread'] / 2:.3f}" if row["seeds"] > 1 else ""
        cells.setdefault(row["variant"], {})[row["condition"]] = f"{row['d1_mean']:.3f}{spread}"
        seeds[row["variant"]] = row["seeds"]
    lines = [f"| variant | seeds | {' | '.join(conditions)} |", "|---" * (len(conditions) + 2) + "|"]
    lines += [f"| {variant} | {seeds[variant]} | {' | '.join(row.get(c, '-') for c in conditions)} |"
              for variant, row in cells.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=DOMAINS, choices=DOMAINS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--report", action="store_true", help="no fits: tabulate the ones already in the partial file")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    settings = {domain: setting_fingerprint(domain) for domain in args.domains}
    done = [json.loads(line) for line in PARTIAL.read_text().splitlines()] if PARTIAL.exists() else []
    done = [r for r in done if r["domain"] in settings and r.get("setting") == settings[r["domain"]]]
    keys = {(r["domain"], r["variant"], r["seed"], r["steps"]) for r in done}
    with tempfile.TemporaryDirectory() as workdir:
        for domain in args.domains:
            for variant in args.variants:
                for seed in range(args.seeds):
                    if (domain, variant, seed, args.steps) in keys or args.report:
                        continue
                    scores = run_fit(domain, VARIANTS[variant], seed, args, Path(workdir))
                    new = _rows(domain, variant, seed, args.steps, settings[domain], scores["adapted"])
                    if (domain, "source model", 0, 0) not in keys:
                        new += _rows(domain, "source model", 0, 0, settings[domain], scores["source"])
                        keys.add((domain, "source model", 0, 0))
                    with PARTIAL.open("a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in new)
                    done += new
                    keys.add((domain, variant, seed, args.steps))
    wanted = [r for r in done if r["steps"] in (0, args.steps)]
    means = []
    for domain in args.domains:
        domain_means = []
        for variant in ["source model", *args.variants]:
            fits = [r for r in wanted if r["domain"] == domain and r["variant"] == variant]
            for condition in dict.fromkeys(r["condition"] for r in fits):
                d1 = [r["d1"] for r in fits if r["condition"] == condition]
                abs_rel = [r["abs_rel"] for r in fits if r["condition"] == condition]
                domain_means.append({"benchmark": "westar_ablation", "domain": domain, "variant": variant,
                                     "condition": condition, "seeds": len(d1),
                                     "d1_mean": round(statistics.mean(d1), 4), "d1_spread": round(max(d1) - min(d1), 4),
                                     "abs_rel_mean": round(statistics.mean(abs_rel), 4)})
        if domain_means:
            print(f"\n**{domain}-C** ({args.steps} steps; setting fingerprint {settings[domain]})\n")
            print(markdown_table(domain_means))
        means += domain_means
    write_result("westar_ablation", wanted + means)


if __name__ == "__main__":
    main()
