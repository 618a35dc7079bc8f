"""`make pretrain`: train the tiny relative and metric teachers on the synthetic street domain, the tiny
foundation-like relative models (126 and 140 rows; the 140-row one also as a tiny Depth Anything 3, `da3-tiny`) and
the foundation-like metric teacher on domain-randomised street and room styles, export them (official key names or
the official DA3 hub folder, float16) into checkpoints/, score them, and write the card checkpoints/README.md and
checkpoints/scores.json.

The teachers are scored on the test split of each street style; each foundation model on its training
distribution and on every held-out style (``depthadapt.synth.HELD_OUT``), clean and under a fixed KITTI-C
mixture at severity 3 (the metric one in metres, with its scale ratio)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

import cli
from datamodules.base import collate_samples
from datamodules.synthetic import SyntheticDataset, synthetic_datamodule
from depthadapt.corruptions import corrupt
from depthadapt.io import atomic_path
from depthadapt.metrics import AlignmentSpace, DepthMetrics
from depthadapt.models import build_depth_model, infer, load_depth_model, to_official_state_dict
from depthadapt.models.da3 import DepthAnything3, save_da3_hub
from depthadapt.models.da3.build import build_da3_model
from depthadapt.synth import HELD_OUT, RANDOM

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
# kind: (its configs, layered as the CLI's repeated --config, and the exported file); trained in this order.
MODELS = {
    "relative": (("config_yaml/pretrain_relative.yaml",), CHECKPOINTS / "tiny_relative_street.pth"),
    "metric": (("config_yaml/pretrain_metric.yaml",), CHECKPOINTS / "tiny_metric_street.pth"),
    "foundation": (("config_yaml/pretrain_foundation.yaml",), CHECKPOINTS / "tiny_foundation.pth"),
    "foundation_140": (("config_yaml/pretrain_foundation.yaml", "config_yaml/pretrain_foundation_140.yaml"),
                       CHECKPOINTS / "tiny_foundation_140.pth"),
    # An official-layout Depth Anything 3 hub folder (config.json + model.safetensors).
    "da3_foundation_140": (("config_yaml/pretrain_foundation.yaml", "config_yaml/pretrain_da3_foundation_140.yaml"),
                           CHECKPOINTS / "tiny_da3_140"),
    "foundation_metric": (("config_yaml/pretrain_foundation.yaml", "config_yaml/pretrain_foundation_metric.yaml"),
                          CHECKPOINTS / "tiny_foundation_metric.pth"),
}
HEADS = {"relative": "relative", "metric": "metric", "foundation": "relative", "foundation_140": "relative",
         "da3_foundation_140": "relative", "foundation_metric": "metric"}
DA3_MODELS = {"da3_foundation_140": "da3-tiny"}  # kind -> the DA3 model name it trains
# Teachers' evaluation conditions: (style, corruption, severity); every model is scored on the same images.
CONDITIONS = [("source", None, 0), ("target", None, 0), ("source", "fog", 3), ("source", "gaussian_noise", 3),
              ("source", "motion_blur", 3), ("source", "dark", 3)]
EVAL_SIZE = (140, 462)
EVAL_RANGE = (3100, 3300)
# The foundation model: its training distribution and the held-out styles, at its training size, on the test range
# of its config; corrupted with a fixed mixture (image index i gets MIXTURE[i % 5]) at MIXTURE_SEVERITY.
FOUNDATION_DOMAINS = [("street", RANDOM), ("room", RANDOM), *((family, style) for style, family in HELD_OUT.items())]
# Each foundation model's training and scoring size per family: (height, width).
FOUNDATION_SIZES = {"foundation": {"street": (126, 252), "room": (126, 252)},
                    "foundation_140": {"street": (140, 462), "room": (140, 280)},
                    "da3_foundation_140": {"street": (140, 462), "room": (140, 280)}}
# What each foundation model starts from; its card compares the two on the same images.
WARM_STARTS = {"foundation": "tiny_relative_street.pth", "foundation_140": "tiny_foundation.pth",
               "da3_foundation_140": "tiny_foundation_140.pth"}
_VITT = ("`vitt` encoder (as the teachers), relative head (disparity), official key names, float16;\n"
         "`build_depth_model(\"vitt\", checkpoint=\"checkpoints/{file}\")`")
# Each foundation model's architecture and how to load it; the space its output (and its scoring) lives in.
ARCHITECTURES = {
    "foundation": _VITT,
    "foundation_140": _VITT,
    "da3_foundation_140": (
        "`da3-tiny` (the single-view da3-small layout at 6 blocks of width 192: DINOv2 blocks 0-1, then qk-norm,\n"
        "2-D RoPE, alternating attention and a camera token; DualDPT head; 6.1 M parameters), relative depth (not\n"
        "disparity), an official-layout Depth Anything 3 hub folder, float16;\n"
        "`load_depth_model(\"checkpoints/{file}\")`; warm start: `tiny_foundation_140.pth`'s tensors of matching name\n"
        "and shape (its 4 encoder blocks into blocks 0-3, patch and position embeddings, DPT); blocks 4-5 start as\n"
        "identities; the qk-norms, camera token, camera modules and DualDPT's new layers start fresh"),
}
OUTPUT_SPACES: dict[str, AlignmentSpace] = {"foundation": "disparity", "foundation_140": "disparity",
                                            "da3_foundation_140": "depth"}
ROLES = {"foundation": "the first foundation-like model and the warm start of `tiny_foundation_140.pth`; at 126 x 252 "
                         "the street scenes cap it (benchmarks/RESULTS.md, \"Pretraining check: street at 140 rows\")",
         "foundation_140": "the source model of every WeSTAR experiment here "
                           "(`config_yaml/models/tiny_foundation_140.yaml`)",
         "da3_foundation_140": "the Depth Anything 3 source model of the DA3 jobs' tests and synthetic runs "
                               "(`config_yaml/models/tiny_da3_140.yaml`)"}
FOUNDATION_START = 100100
MIXTURE = ("fog", "dark", "snow", "gaussian_noise", "motion_blur")
MIXTURE_SEVERITY = 3
TARGET_D1 = (0.60, 0.90)  # held-out clean d1 of a good but not perfect source model


# The foundation-like metric teacher: scored as is (metres) on the foundation domains at the 140-row model's sizes,
# run at its training size (98 rows) and upsampled; compared with the single-style street metric teacher.
METRIC_FOUNDATION = "foundation_metric"
METRIC_INPUT_SIZE = 98
METRIC_BASELINE = "metric"
SCALE_BOUND = 0.2  # held-out styles: the median per-image depth ratio (prediction / truth) within 1 +- this


def _merged(base: dict, update: dict) -> dict:
    """``update`` over ``base``, key by key into nested mappings (how the CLI layers repeated --config files)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(kind: str) -> dict:
    """The layered configs of ``kind`` as one mapping."""
    config: dict = {}
    for path in MODELS[kind][0]:
        config = _merged(config, yaml.safe_load((ROOT / path).read_text()))
    return config


def render_cache(kind: str) -> None:
    """Render the training and validation samples of a model's config into its cache, one process per core.

    Training then reads them back, so rendering does not compete with the training threads. Configs without a
    ``cache_dir`` (fresh samples every step) render nothing here.
    """
    data = load_config(kind)["data"]["init_args"]
    if data.get("cache_dir") is None:
        return
    module = synthetic_datamodule({**data, "cache_dir": str(ROOT / data["cache_dir"])})
    for span in (module.train_range, module.val_range):
        for _ in DataLoader(module.dataset(span), batch_size=32, num_workers=os.cpu_count() or 1, collate_fn=len):
            pass


def export(kind: str, model: torch.nn.Module, facts: dict) -> dict:
    """Save a model's weights as float16 with official key names (a DA3 model: an official hub folder); returns the
    facts with file name and size."""
    path = MODELS[kind][1]
    if isinstance(model, DepthAnything3):
        save_da3_hub(model.half(), path)
        size = sum(f.stat().st_size for f in path.iterdir())
    else:
        with atomic_path(path) as tmp:
            torch.save({k: v.half() for k, v in to_official_state_dict(model).items()}, tmp)
        size = path.stat().st_size
    return {**facts, "config": " + ".join(MODELS[kind][0]), "checkpoint": path.name,
            "size_mb": round(size / 2**20, 1)}


def train(kind: str, resume: str | None = None) -> dict:
    """Fit one model with its config (or resume its run from a Lightning checkpoint) and export it."""
    render_cache(kind)
    start = time.perf_counter()
    configs = [arg for path in MODELS[kind][0] for arg in ("--config", str(ROOT / path))]
    run = cli.main(["fit", *configs, *(["--ckpt_path", resume] if resume else [])])
    facts = {"steps": run.trainer.global_step, "epochs": run.trainer.current_epoch,
             "seed": run.config.fit.seed_everything, "train_minutes": round((time.perf_counter() - start) / 60),
             "torch_threads": torch.get_num_threads()}
    return export(kind, run.model.model, facts)


def export_lightning_checkpoint(kind: str, ckpt_path: str) -> dict:
    """Export the model of a (possibly interrupted) pretraining run's Lightning checkpoint.

    The training time is the checkpoint's age relative to the run's saved ``config.yaml`` (written at its start).
    """
    if kind in DA3_MODELS:
        model = build_da3_model(DA3_MODELS[kind], ckpt_path)
    else:
        model = build_depth_model("vitt", head=HEADS[kind], checkpoint=ckpt_path, checkpoint_prefix="model.")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    trainer = load_config(kind)["trainer"]
    facts = {"steps": ckpt["global_step"], "epochs": ckpt["epoch"] + 1, "seed": 0}
    started = Path(ckpt_path).resolve().parents[1] / "config.yaml"
    if started.is_file():
        facts["train_minutes"] = round((Path(ckpt_path).stat().st_mtime - started.stat().st_mtime) / 60)
    planned = trainer.get("max_steps", -1)
    if planned > 0 and ckpt["global_step"] < planned:
        facts["note"] = f"exported from step {ckpt['global_step']} of the {planned} the config plans"
    elif planned <= 0 and ckpt["epoch"] + 1 < trainer["max_epochs"]:
        facts["note"] = f"exported from epoch {ckpt['epoch'] + 1} of the {trainer['max_epochs']} the config plans"
    return export(kind, model, facts)


CELL_FORMATS = {"d1": ".3f", "abs_rel": ".3f", "rmse": ".2f", "scale_ratio": ".3f"}


def comparison_rows(own: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]],
                    own_columns: Sequence[str], baseline_columns: Sequence[str]) -> list[str]:
    """Markdown table rows: per condition, its scores in ``own_columns`` then the baseline's ("-" where it has none)."""
    rows = []
    for condition, value in own.items():
        ref = baseline.get(condition)
        cells = [format(value[k], CELL_FORMATS[k]) for k in own_columns]
        cells += [format(ref[k], CELL_FORMATS[k]) if ref else "-" for k in baseline_columns]
        rows.append(f"| {condition} | {' | '.join(cells)} |")
    return rows


@torch.no_grad()
def score(model: torch.nn.Module, dataset: SyntheticDataset, input_size: int, affine_invariant: bool,
          corruptions: Sequence[str] = (), severity: int = MIXTURE_SEVERITY, batch_size: int = 8,
          space: AlignmentSpace = "disparity") -> dict[str, float]:
    """d1 / abs_rel / rmse of ``model`` on ``dataset``; image index i corrupted with ``corruptions[i % len]``;
    a relative output aligned in ``space``.

    A metric model (``affine_invariant`` False) also gets ``scale_ratio``: the median over images of each image's
    median of prediction / truth on its valid pixels (1: right in scale)."""
    metrics = DepthMetrics(affine_invariant=affine_invariant, space=space)
    ratios = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_samples([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        image = batch["image"]
        for k, name in enumerate(corruptions):
            chosen = batch["index"] % len(corruptions) == k
            if chosen.any():
                image[chosen] = corrupt(image[chosen], name, severity, seed=batch["index"][chosen])
        pred = infer(model, image, input_size)
        metrics.update(pred, batch["depth"], batch["valid"])
        ratios += [(p[v] / d[v]).median() for p, d, v in zip(pred, batch["depth"], batch["valid"], strict=True)
                   if v.any()]
    values = metrics.compute()
    scores = {k: round(float(values[k]), 4) for k in ("d1", "abs_rel", "rmse")}
    if not affine_invariant:
        scores["scale_ratio"] = round(float(torch.stack(ratios).median()), 4)
    return scores


def evaluate_teacher(kind: str, count: int) -> dict[str, dict[str, float]]:
    """Test-split scores of an exported teacher under every condition (affine-invariant for the relative one)."""
    model = build_depth_model("vitt", head=HEADS[kind], checkpoint=MODELS[kind][1]).eval()
    input_size = 140 if kind == "relative" else 98
    scores = {}
    for style, corruption, severity in CONDITIONS:
        dataset = SyntheticDataset("street", style, EVAL_RANGE[0], EVAL_RANGE[0] + count, *EVAL_SIZE)
        name = style if corruption is None else f"{style}+{corruption}-{severity}"
        scores[name] = score(model, dataset, input_size, kind == "relative", (corruption,) if corruption else (),
                             severity)
        print(kind, name, scores[name], flush=True)
    return scores


def evaluate_foundation(checkpoint: Path, count: int, kind: str) -> dict[str, dict[str, float]]:
    """Affine-invariant scores of a relative checkpoint (any format `load_depth_model` reads; aligned in its output's
    space) on every foundation domain, clean and corrupted, at foundation model ``kind``'s sizes."""
    model, card = load_depth_model(checkpoint)
    scores = {}
    for family, style in FOUNDATION_DOMAINS:
        height, width = FOUNDATION_SIZES[kind][family]
        dataset = SyntheticDataset(family, style, FOUNDATION_START, FOUNDATION_START + count, height, width)
        for corruptions in ((), MIXTURE):
            name = f"{family}/{style}" + (f"+kitti-c-{MIXTURE_SEVERITY}" if corruptions else "")
            scores[name] = score(model, dataset, height, True, corruptions, space=card.alignment_space)
            print(checkpoint.name, name, scores[name], flush=True)
    return scores


def evaluate_metric_foundation(checkpoint: Path, count: int) -> dict[str, dict[str, float]]:
    """Metric scores (and ``scale_ratio``) of a metric ``vitt`` checkpoint on every foundation domain, clean and
    corrupted, at the 140-row foundation model's sizes, run at ``METRIC_INPUT_SIZE`` and upsampled."""
    model = build_depth_model("vitt", head="metric", checkpoint=checkpoint).eval()
    scores = {}
    for family, style in FOUNDATION_DOMAINS:
        height, width = FOUNDATION_SIZES["foundation_140"][family]
        dataset = SyntheticDataset(family, style, FOUNDATION_START, FOUNDATION_START + count, height, width)
        for corruptions in ((), MIXTURE):
            name = f"{family}/{style}" + (f"+kitti-c-{MIXTURE_SEVERITY}" if corruptions else "")
            scores[name] = score(model, dataset, METRIC_INPUT_SIZE, False, corruptions)
            print(checkpoint.name, name, scores[name], flush=True)
    return scores


def _teacher_lines(facts: dict, scores: dict) -> list[str]:
    lines = [
        "# Tiny models (trained here, on the synthetic domains)",
        "",
        "## Teachers (synthetic street domain)",
        "",
        "Stand-ins for the Depth Anything V2 teachers of the dual-teacher demo and the method-level tests. Both use",
        "the `vitt` encoder (192 wide, 4 blocks, 2.8 M parameters), official key names, float16 on disk; load with",
        "`build_depth_model(\"vitt\", head=..., checkpoint=path)`. Reproduce with `make pretrain` (2-core CPU).",
        "",
        "| file | head | trained on | config | steps | epochs | seed | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    domains = {"relative": "street `source` style, 140 x 462, scale-shift-invariant loss on disparity",
               "metric": "street `simulator` style, 98 x 322, SiLog (lambda 0.5), max depth 80 m"}
    teachers = {kind: fact for kind, fact in facts.items() if kind in domains}
    for kind, fact in teachers.items():
        lines.append(f"| `{fact['checkpoint']}` | {kind} | {domains[kind]} | `{fact['config']}` | {fact['steps']} "
                     f"| {fact['epochs']} | {fact['seed']} | {fact['size_mb']} MB |")
    lines += [f"\nNote on `{fact['checkpoint']}`: {fact['note']}." for fact in teachers.values() if "note" in fact]
    count = next(iter(teachers.values()))["eval_images"]
    lines += [
        "",
        f"Scores on {count} held-out street images (indices {EVAL_RANGE[0]}..{EVAL_RANGE[0] + count - 1}, "
        f"{EVAL_SIZE[0]} x {EVAL_SIZE[1]}); the relative model affine-invariantly (least-squares scale and shift in "
        "disparity), the metric model as is (run at 98 px, upsampled). Corruptions at severity 3 on source images.",
        "",
        "| model | condition | d1 | abs_rel | rmse (m) |",
        "|---|---|---|---|---|",
    ]
    for kind in teachers:
        for condition, value in scores.get(kind, {}).items():
            lines.append(f"| {kind} | {condition} | {value['d1']:.3f} | {value['abs_rel']:.3f} | {value['rmse']:.2f} |")
    return lines


def _foundation_lines(kind: str, fact: dict, scores: dict) -> list[str]:
    sizes = FOUNDATION_SIZES[kind]
    size_text = " and ".join(f"`{family}` at {h} x {w}" for family, (h, w) in sizes.items())
    baseline_name = WARM_STARTS[kind]
    count = fact["eval_images"]
    cores = (f"on {fact['torch_threads']} torch threads of a shared 2-core CPU" if "torch_threads" in fact
             else "on a shared 2-core CPU, thread count not recorded")
    minutes = f", {fact['train_minutes']} min {cores}" if "train_minutes" in fact else ""
    held_out = ", ".join(f"`{style}` ({family})" for style, family in HELD_OUT.items())
    configs = " ".join(f"--config {path}" for path in MODELS[kind][0])
    rows = sorted({h for h, _ in sizes.values()})
    grouped = " (every batch one family)" if len(set(sizes.values())) > 1 else ""
    lines = [
        "",
        f"## {'Depth Anything 3 f' if kind in DA3_MODELS else 'F'}oundation-like source model, "
        f"{'/'.join(map(str, rows))} rows (domain-randomised street and room)",
        "",
        f"The synthetic world's stand-in for Depth Anything {'3' if kind in DA3_MODELS else 'V2'} as WeSTAR's source "
        "model: good but not perfect out of",
        f"domain. {ARCHITECTURES[kind].format(file=fact['checkpoint'])}. Role: {ROLES[kind]}.",
        "",
        f"- **File**: `{fact['checkpoint']}` ({fact['size_mb']} MB).",
        f"- **Config**: `{fact['config']}`; reproduce with",
        f"  `make pretrain MODELS={kind}` (or `python cli.py fit {configs}`,",
        f"  then `python checkpoints/pretrain.py --models {kind} --from-checkpoint .../last.ckpt`).",
        f"- **Training**: {fact['steps']} steps of batch 8, seed {fact['seed']}{minutes}; warm start from",
        f"  `{WARM_STARTS[kind]}`; scale-and-shift-invariant loss on {OUTPUT_SPACES[kind]}; AdamW lr 3e-4, cosine.",
        f"- **Data**: fresh samples (never repeated) of {size_text}{grouped}",
        "  in the randomised style family (`style: random`, `depthadapt.synth.randomize`: per-surface HSV palettes",
        "  and textures, time of day, sky, sun / lamp colour, haze, exposure, contrast, saturation, tint, vignette,",
        "  noise); horizontal flips, kornia photometric augmentation and, on 30 % of the images, one of brightness,",
        "  contrast, defocus_blur, shot_noise, jpeg_compression, pixelate at severity 1-3.",
        "- **Held out** (never in training; outside the randomisation's support, tested):",
        f"  {held_out}.",
        "",
        f"Scores on {count} images per domain (indices {FOUNDATION_START}..{FOUNDATION_START + count - 1},",
        f"{size_text}, run at {'/'.join(map(str, rows))} px), affine-invariant in {OUTPUT_SPACES[kind]}"
        f"{'' if OUTPUT_SPACES[kind] == 'disparity' else ' (the comparison model in disparity, its own output)'}.",
        f"`+kitti-c-{MIXTURE_SEVERITY}`: image i corrupted with ({', '.join(MIXTURE)})[i % 5] at severity",
        f"{MIXTURE_SEVERITY} (`depthadapt.corruptions`; none of them is a training augmentation). For comparison:",
        f"`{baseline_name}`, same images.",
        "",
        f"| domain | d1 | abs_rel | rmse (m) | `{baseline_name}` d1 | `{baseline_name}` abs_rel |",
        "|---|---|---|---|---|---|",
    ]
    lines += comparison_rows(scores[kind], scores.get(f"{kind}_baseline", {}), ("d1", "abs_rel", "rmse"),
                             ("d1", "abs_rel"))
    low, high = TARGET_D1
    outside = [f"{name} ({value['d1']:.3f})" for name, value in scores[kind].items()
               if name.split("/")[1] in HELD_OUT and "+" not in name and not low <= value["d1"] <= high]
    if outside:
        lines += ["", f"Held-out clean d1 outside the target band {low:.2f}-{high:.2f} (Depth Anything V2's regime "
                  f"out of domain): {', '.join(outside)}."]
    if "note" in fact:
        lines += ["", f"Note: {fact['note']}."]
    return lines


def _metric_foundation_lines(fact: dict, scores: dict) -> list[str]:
    sizes = FOUNDATION_SIZES["foundation_140"]
    size_text = " and ".join(f"`{family}` at {h} x {w}" for family, (h, w) in sizes.items())
    train = load_config(METRIC_FOUNDATION)["data"]["init_args"]
    train_sizes = " and ".join(f"`{family}` at {train['height']} x {width}"
                               for family, width in zip(train["family"], train["width"], strict=True))
    images = (train["train_range"][1] - train["train_range"][0]) * len(train["family"])
    baseline_name = MODELS[METRIC_BASELINE][1].name
    count = fact["eval_images"]
    cores = (f"on {fact['torch_threads']} torch threads of a shared 2-core CPU" if "torch_threads" in fact
             else "on a shared 2-core CPU, thread count not recorded")
    minutes = f", {fact['train_minutes']} min {cores}" if "train_minutes" in fact else ""
    configs = " ".join(f"--config {path}" for path in MODELS[METRIC_FOUNDATION][0])
    held_out = {name: value["scale_ratio"] for name, value in scores[METRIC_FOUNDATION].items()
                if "+" not in name and not name.endswith("/random")}
    within = ", ".join(f"{name} {ratio:.3f}" for name, ratio in held_out.items() if abs(ratio - 1) <= SCALE_BOUND)
    outside = ", ".join(f"{name} {ratio:.3f}" for name, ratio in held_out.items() if abs(ratio - 1) > SCALE_BOUND)
    lines = [
        "",
        "## Foundation-like metric teacher (domain-randomised street and room, metric head)",
        "",
        "The synthetic world's stand-in for a Depth Anything V2 metric model fine-tuned on synthetic data: right in",
        "scale on its training styles, less so on styles it never saw (below), blurrier than the relative model (it",
        "runs at 98 rows and is upsampled). The",
        "metric teacher of the chain (`benchmarks/chain.py`); `config_yaml/models/tiny_foundation_metric.yaml`;",
        f"`build_depth_model(\"vitt\", head=\"metric\", checkpoint=\"checkpoints/{fact['checkpoint']}\")`.",
        "",
        f"- **File**: `{fact['checkpoint']}` ({fact['size_mb']} MB).",
        f"- **Config**: `{fact['config']}`; reproduce with",
        f"  `make pretrain MODELS={METRIC_FOUNDATION}` (or `python cli.py fit {configs}`,",
        f"  then `python checkpoints/pretrain.py --models {METRIC_FOUNDATION} --from-checkpoint .../last.ckpt`).",
        f"- **Training**: {fact['steps']} steps of batch 8 ({fact['epochs']} epochs), seed {fact['seed']}{minutes};",
        "  encoder from `tiny_foundation_140.pth`, DPT head fresh (`init: encoder`, as the official metric",
        "  fine-tuning); metric head (sigmoid x 80 m), SiLog (lambda 0.5); AdamW, encoder lr 1.5e-4, head 3x, cosine.",
        f"- **Data**: {images} samples of {train_sizes} (every batch one family) in the randomised style family,",
        "  rendered once (cached), with the relative foundation models' augmentation; on",
        f"  {train['ground_mirrors']:.0%} of them mirror patches on the ground (`ground_mirrors`: puddles, polished",
        "  floors) labelled with the ground's depth, which the relative foundation models never saw.",
        "- **Held out**: the same styles as the relative foundation models.",
        "",
        f"Scores on {count} images per domain (indices {FOUNDATION_START}..{FOUNDATION_START + count - 1},",
        f"{size_text}, run at {METRIC_INPUT_SIZE} px and upsampled), in metres as predicted (no alignment).",
        "`scale`: the median over images of each image's median ratio prediction / truth (1: right in scale).",
        f"Clean held-out styles within 1 +- {SCALE_BOUND}: {within or 'none'}; outside: {outside or 'none'}.",
        f"`+kitti-c-{MIXTURE_SEVERITY}` as above.",
        f"For comparison: the single-style street metric teacher `{baseline_name}`, same images.",
        "",
        f"| domain | d1 | abs_rel | rmse (m) | scale | `{baseline_name}` d1 | `{baseline_name}` abs_rel "
        f"| `{baseline_name}` scale |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += comparison_rows(scores[METRIC_FOUNDATION], scores.get(f"{METRIC_FOUNDATION}_baseline", {}),
                             ("d1", "abs_rel", "rmse", "scale_ratio"), ("d1", "abs_rel", "scale_ratio"))
    if "note" in fact:
        lines += ["", f"Note: {fact['note']}."]
    return lines


def card_text(facts: dict, scores: dict) -> str:
    """The text of checkpoints/README.md: what each model is, how it was made, how it scores."""
    lines = _teacher_lines(facts, scores)
    for kind in FOUNDATION_SIZES:
        if kind in facts and kind in scores:
            lines += _foundation_lines(kind, facts[kind], scores)
    if METRIC_FOUNDATION in facts and METRIC_FOUNDATION in scores:
        lines += _metric_foundation_lines(facts[METRIC_FOUNDATION], scores)
    return "\n".join(lines) + "\n"


def write_card(facts: dict, scores: dict) -> None:
    """checkpoints/README.md (``card_text``) and scores.json."""
    with atomic_path(CHECKPOINTS / "README.md") as tmp:
        tmp.write_text(card_text(facts, scores))
    with atomic_path(CHECKPOINTS / "scores.json") as tmp:
        tmp.write_text(json.dumps({"facts": facts, "scores": scores}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--eval-only", action="store_true", help="score the committed checkpoints, no training")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="images per condition (default: 200 for the teachers, 64 per domain for the foundation)")
    parser.add_argument("--from-checkpoint", help="export this Lightning .ckpt of the run instead of training")
    parser.add_argument("--resume", help="resume the (single) model's interrupted run from this Lightning .ckpt")
    args = parser.parse_args()
    if (args.from_checkpoint or args.resume) and len(args.models) != 1:
        parser.error("--from-checkpoint and --resume need exactly one model in --models")
    previous = CHECKPOINTS / "scores.json"
    stored = json.loads(previous.read_text()) if previous.exists() else {}
    facts, scores = stored.get("facts", {}), stored.get("scores", {})
    for kind in args.models:
        if args.from_checkpoint:
            facts[kind] = export_lightning_checkpoint(kind, args.from_checkpoint)
        elif not args.eval_only:
            facts[kind] = train(kind, args.resume)
        facts[kind]["eval_images"] = args.eval_images or (200 if kind in ("relative", "metric") else 64)
        if kind == METRIC_FOUNDATION:
            count = facts[kind]["eval_images"]
            scores[kind] = evaluate_metric_foundation(MODELS[kind][1], count)
            scores[f"{kind}_baseline"] = evaluate_metric_foundation(MODELS[METRIC_BASELINE][1], count)
        elif kind in FOUNDATION_SIZES:
            count = facts[kind]["eval_images"]
            scores[kind] = evaluate_foundation(MODELS[kind][1], count, kind)
            scores[f"{kind}_baseline"] = evaluate_foundation(CHECKPOINTS / WARM_STARTS[kind], count, kind)
        else:
            scores[kind] = evaluate_teacher(kind, facts[kind]["eval_images"])
    write_card(facts, scores)


if __name__ == "__main__":
    main()
