"""`make pretrain`: train the tiny relative and metric teachers on the synthetic street domain, export them
(official key names, float16) into checkpoints/, score them on the test split of each style, and write the
card checkpoints/README.md."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

import cli
from datamodules.image_folder import collate_samples
from datamodules.synthetic import SyntheticDataset
from depthadapt.corruptions import corrupt
from depthadapt.metrics import DepthMetrics
from depthadapt.models import build_depth_model, infer, to_official_state_dict

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
MODELS = {
    "relative": ("config_yaml/pretrain_relative.yaml", CHECKPOINTS / "tiny_relative_street.pth"),
    "metric": ("config_yaml/pretrain_metric.yaml", CHECKPOINTS / "tiny_metric_street.pth"),
}
# Evaluation conditions: (style, corruption, severity); every model is scored on the same images.
CONDITIONS = [("source", None, 0), ("target", None, 0), ("source", "fog", 3), ("source", "gaussian_noise", 3),
              ("source", "motion_blur", 3), ("source", "dark", 3)]
EVAL_SIZE = (140, 462)
EVAL_RANGE = (3100, 3300)


def render_cache(config: str) -> None:
    """Render the training and validation samples of a config into its cache, one process per core.

    Training then reads them back, so rendering does not compete with the training threads.
    """
    data = yaml.safe_load((ROOT / config).read_text())["data"]["init_args"]
    for span in (data["train_range"], data["val_range"]):
        dataset = SyntheticDataset(data["family"], data["style"], *span, data["height"], data["width"],
                                   cache_dir=ROOT / data["cache_dir"])
        for _ in DataLoader(dataset, batch_size=32, num_workers=os.cpu_count() or 1, collate_fn=len):
            pass


def export(kind: str, model: torch.nn.Module, facts: dict) -> dict:
    """Save a model's weights as float16 with official key names; returns the facts with file name and size."""
    path = MODELS[kind][1]
    torch.save({k: v.half() for k, v in to_official_state_dict(model).items()}, path)
    return {**facts, "config": MODELS[kind][0], "checkpoint": path.name,
            "size_mb": round(path.stat().st_size / 2**20, 1)}


def train(kind: str, resume: str | None = None) -> dict:
    """Fit one model with its config (or resume its run from a Lightning checkpoint) and export it."""
    config = MODELS[kind][0]
    render_cache(config)
    run = cli.main(["fit", "--config", str(ROOT / config), *(["--ckpt_path", resume] if resume else [])])
    facts = {"steps": run.trainer.global_step, "epochs": run.trainer.current_epoch,
             "seed": run.config.fit.seed_everything}
    return export(kind, run.model.model, facts)


def export_lightning_checkpoint(kind: str, ckpt_path: str) -> dict:
    """Export the model of a (possibly interrupted) pretraining run's Lightning checkpoint."""
    head = "relative" if kind == "relative" else "metric"
    model = build_depth_model("vitt", head=head, checkpoint=ckpt_path, checkpoint_prefix="model.")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    planned = yaml.safe_load((ROOT / MODELS[kind][0]).read_text())["trainer"]["max_epochs"]
    facts = {"steps": ckpt["global_step"], "epochs": ckpt["epoch"] + 1, "seed": 0,
             "note": f"exported from epoch {ckpt['epoch'] + 1} of the {planned} the config plans"}
    return export(kind, model, facts)


@torch.no_grad()
def evaluate(kind: str, count: int) -> dict[str, dict[str, float]]:
    """Test-split scores of an exported model under every condition (affine-invariant for the relative one)."""
    _, path = MODELS[kind]
    head = "relative" if kind == "relative" else "metric"
    model = build_depth_model("vitt", head=head, checkpoint=path).eval()
    input_size = 140 if kind == "relative" else 98
    scores = {}
    for style, corruption, severity in CONDITIONS:
        dataset = SyntheticDataset("street", style, EVAL_RANGE[0], EVAL_RANGE[0] + count, *EVAL_SIZE)
        metrics = DepthMetrics(affine_invariant=kind == "relative", max_depth=80.0)
        for start in range(0, len(dataset), 8):
            batch = collate_samples([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
            image = batch["image"]
            if corruption is not None:
                image = corrupt(image, corruption, severity, seed=batch["index"])
            metrics.update(infer(model, image, input_size), batch["depth"], batch["valid"])
        values = metrics.compute()
        name = style if corruption is None else f"{style}+{corruption}-{severity}"
        scores[name] = {k: round(float(values[k]), 4) for k in ("d1", "abs_rel", "rmse")}
        print(kind, name, scores[name], flush=True)
    return scores


def write_card(facts: dict, scores: dict) -> None:
    """checkpoints/README.md: what each model is, how it was made, how it scores."""
    lines = [
        "# Tiny models (trained here, on the synthetic street domain)",
        "",
        "Stand-ins for the Depth Anything V2 teachers in the demo and the method-level tests. Both use the",
        "`vitt` encoder (192 wide, 4 blocks, 2.8 M parameters), official key names, float16 on disk; load with",
        "`build_depth_model(\"vitt\", head=..., checkpoint=path)`. Reproduce with `make pretrain` (2-core CPU).",
        "",
        "| file | head | trained on | config | steps | epochs | seed | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    domains = {"relative": "street `source` style, 140 x 462, scale-shift-invariant loss on disparity",
               "metric": "street `simulator` style, 98 x 322, SiLog (lambda 0.5), max depth 80 m"}
    for kind, fact in facts.items():
        lines.append(f"| `{fact['checkpoint']}` | {kind} | {domains[kind]} | `{fact['config']}` | {fact['steps']} "
                     f"| {fact['epochs']} | {fact['seed']} | {fact['size_mb']} MB |")
    lines += [f"\nNote on `{fact['checkpoint']}`: {fact['note']}." for fact in facts.values() if "note" in fact]
    count = next(iter(facts.values()))["eval_images"]
    lines += [
        "",
        f"Scores on {count} held-out street images (indices {EVAL_RANGE[0]}..{EVAL_RANGE[0] + count - 1}, "
        f"{EVAL_SIZE[0]} x {EVAL_SIZE[1]}); the relative model affine-invariantly (least-squares scale and shift in "
        "disparity), the metric model as is (run at 98 px, upsampled). Corruptions at severity 3 on source images.",
        "",
        "| model | condition | d1 | abs_rel | rmse (m) |",
        "|---|---|---|---|---|",
    ]
    for kind, by_condition in scores.items():
        for condition, value in by_condition.items():
            lines.append(f"| {kind} | {condition} | {value['d1']:.3f} | {value['abs_rel']:.3f} | {value['rmse']:.2f} |")
    (CHECKPOINTS / "README.md").write_text("\n".join(lines) + "\n")
    (CHECKPOINTS / "scores.json").write_text(json.dumps({"facts": facts, "scores": scores}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--eval-only", action="store_true", help="score the committed checkpoints, no training")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--from-checkpoint", help="export this Lightning .ckpt of the run instead of training")
    parser.add_argument("--resume", help="resume the (single) model's interrupted run from this Lightning .ckpt")
    args = parser.parse_args()
    previous = CHECKPOINTS / "scores.json"
    facts = json.loads(previous.read_text())["facts"] if previous.exists() else {}
    scores = {}
    for kind in args.models:
        if args.from_checkpoint:
            facts[kind] = export_lightning_checkpoint(kind, args.from_checkpoint)
        elif not args.eval_only:
            facts[kind] = train(kind, args.resume)
        facts[kind]["eval_images"] = args.eval_images
        scores[kind] = evaluate(kind, args.eval_images)
    write_card(facts, scores)


if __name__ == "__main__":
    main()
