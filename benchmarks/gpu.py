"""Every GPU figure in one run: ``make benchmark-gpu`` (under 8 minutes on one H100 / H200).

Writes the rows to ``benchmarks/gpu.json`` and a section with the GPU's name to ``benchmarks/RESULTS.md``:

- inference images/s, vits and vitl at 518 x 518 batch 8: ours in bf16 autocast against the official code
  (``depth_anything_v2``, PyPI ``jkp-depth-anything-v2``) in fp32, in the same run, with the same weights;
- WeSTAR training step (``WeSTARAdapter``: EMA teacher + LoRA student, full loss, AdamW, EMA update) images/s and
  peak memory (``torch.cuda.max_memory_allocated``), vits and vitl at 518 x 518 batch 4, bf16 autocast, with and
  without activation checkpointing (``depthadapt.models.activation_checkpointing``): does vitl fit 24 GB?
- the dual-teacher pseudo-labeller's images/s end to end (``benchmarks.pseudo_label_speed``): tiny teachers on
  140 x 462 images, and vitl teachers at 518 on KITTI-sized 375 x 1242 images;
- torch RANSAC on the GPU against sklearn (``benchmarks.ransac_speed``, both scenarios);
- corruptions images/s (``benchmarks.corruption_speed``, batch 16 at 196 x 644, all 18 types x 5 severities).

``--smoke`` runs the same code paths on the CPU with tiny sizes (vitt / vits at small inputs, few images, one
repeat) into the paths given, in well under 30 s: ``tests/benchmarks/test_benchmark_gpu.py`` runs it in the
default suite.

On the device machine (no package registry there; its python3 is 3.12 with torch, lightning, timm, peft,
scikit-learn, scikit-image, opencv): the packages it lacks travel as wheels. Here, once, in the repository root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        kornia==0.9.0 kornia_rs==0.2.0 jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0 \\
        jkp-depth-anything-v2==0.1.1

then the device tool's ``run`` with ``carry=[".whl"]``, ``timeout_s=600`` and the command

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \\
    && export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 && python3 -m benchmarks.gpu \\
    && cp benchmarks/gpu.json benchmarks/RESULTS.md $OUT/

and copy the two files it brings back over ``benchmarks/gpu.json`` and ``benchmarks/RESULTS.md`` (8 MB of wheels,
checked downloadable on 2026-12-01). ``make benchmark-gpu`` runs the same module from the project's .venv; the
device machine has none, hence ``python3 -m benchmarks.gpu``. Its torch (2.11) is older than the .venv's: a
failure at import is the first thing to look at in the returned output.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import tempfile
import time
from argparse import Namespace
from functools import partial
from pathlib import Path

import torch

from benchmarks import corruption_speed, pseudo_label_speed, ransac_speed
from benchmarks.common import best_seconds, device_description
from benchmarks.westar_memory import westar_step
from depthadapt.io import atomic_path
from depthadapt.models import ENCODER_CONFIGS, build_depth_model, to_official_state_dict

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- benchmarks/gpu.py: begin -->", "<!-- benchmarks/gpu.py: end -->"
FULL = {
    "inference": {"encoders": ("vits", "vitl"), "batch": 8, "side": 518, "repeats": 10},
    "westar": {"encoders": ("vits", "vitl"), "batch": 4, "side": 518, "repeats": 5},
    "labeller": [{"cards": "tiny", "images": 64, "height": 140, "width": 462, "batch": 8},
                 {"cards": "vitl", "images": 32, "height": 375, "width": 1242, "batch": 4}],
    "ransac": {"scenarios": tuple(ransac_speed.SCENARIOS), "batch": 8, "rounds": 3, "seeds": 3},
    "corruptions": {"batch": 16, "height": 196, "width": 644, "repeats": 5},
}
SMOKE = {
    "inference": {"encoders": ("vits",), "batch": 1, "side": 42, "repeats": 1},
    "westar": {"encoders": ("vitt",), "batch": 2, "side": 42, "repeats": 1},
    "labeller": [{"cards": "tiny", "images": 2, "height": 28, "width": 56, "batch": 2}],
    "ransac": {"scenarios": ("mild_outliers",), "batch": 1, "rounds": 1, "seeds": 1},
    "corruptions": {"batch": 1, "height": 32, "width": 48, "repeats": 1, "only": ("fog", "gaussian_noise")},
}


def _free(device: torch.device) -> None:
    """Release what the last measurement held, so that the next one's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


@torch.inference_mode()
def _forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> None:
    """One inference forward pass, in bf16 autocast or in fp32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        model(x)


def inference_rows(cfg: dict, device: torch.device) -> list[dict]:
    """Ours in bf16 autocast against the official code in fp32, same weights and input, images/s."""
    from depth_anything_v2.dpt import DepthAnythingV2 as Official

    rows = []
    for encoder in cfg["encoders"]:
        ours = build_depth_model(encoder).to(device).eval()
        arch = ENCODER_CONFIGS[encoder]
        official = Official(encoder=encoder, features=arch.features, out_channels=list(arch.out_channels))
        official.load_state_dict(to_official_state_dict(ours))
        official = official.to(device).eval()
        x = torch.randn(cfg["batch"], 3, cfg["side"], cfg["side"], device=device)
        row = {"benchmark": "gpu_inference", "encoder": encoder, "batch": cfg["batch"], "size": cfg["side"],
               "device": device_description(device)}
        for name, model, precision in (("ours", ours, "bf16"), ("official", official, "fp32")):
            _free(device)
            seconds = best_seconds(partial(_forward, model, x, precision == "bf16"), device, cfg["repeats"])
            row[f"{name}_{precision}_images_per_s"] = round(cfg["batch"] / seconds, 2)
            row[f"{name}_peak_gib"] = _peak_gib(device)
        row["speedup_ours_bf16_vs_official_fp32"] = round(row["ours_bf16_images_per_s"]
                                                          / row["official_fp32_images_per_s"], 2)
        rows.append(row)
        del ours, official
        _free(device)
    return rows


def westar_rows(cfg: dict, device: torch.device) -> list[dict]:
    """WeSTAR step images/s and peak memory, bf16 autocast, with and without activation checkpointing."""
    rows = []
    for encoder in cfg["encoders"]:
        for checkpointing in (False, True):
            _free(device)
            step = westar_step(encoder, cfg["batch"], cfg["side"], device, "bf16", checkpointing)
            step()  # optimiser state and allocator warm-up; the peak below includes both
            seconds = best_seconds(step, device, cfg["repeats"], warmup=0)
            rows.append({"benchmark": "gpu_westar_step", "encoder": encoder, "batch": cfg["batch"],
                         "size": cfg["side"], "precision": "bf16-autocast", "checkpointing": checkpointing,
                         "device": device_description(device), "seconds_per_step": round(seconds, 4),
                         "images_per_s": round(cfg["batch"] / seconds, 2), "peak_gib": _peak_gib(device),
                         "fits_24_gb": None if device.type != "cuda" else _peak_gib(device) < 24e9 / 2**30})
            del step
    _free(device)
    return rows


def labeller_rows(cfg: list[dict], device: torch.device) -> list[dict]:
    """The pseudo-labeller end to end: tiny teachers and vitl teachers (random weights: speed only)."""
    rows = []
    for run in cfg:
        if run["cards"] == "tiny":
            cards = [pseudo_label_speed.load_card(path) for path in pseudo_label_speed.TINY_CARDS]
        else:
            cards = [pseudo_label_speed.load_card(path, checkpoint=None, input_size=518) for path in
                     ("config_yaml/models/depth_anything_v2_vitl.yaml",
                      "config_yaml/models/depth_anything_v2_metric_vkitti_vitl.yaml")]
        with tempfile.TemporaryDirectory() as folder:
            images = pseudo_label_speed.write_images(Path(folder), run["images"], run["height"], run["width"])
            row = pseudo_label_speed.measure(*cards, images, run["batch"], 2, device)
        rows.append({**row, "benchmark": "gpu_pseudo_label", "size": [run["height"], run["width"]]})
        _free(device)
    return rows


def ransac_rows(cfg: dict) -> list[dict]:
    """torch RANSAC on every device (the GPU included when there is one) against sklearn."""
    args = Namespace(batch=cfg["batch"], rounds=cfg["rounds"], seeds=cfg["seeds"])
    rows = []
    for name in cfg["scenarios"]:
        rows += ransac_speed.run_scenario(name, ransac_speed.SCENARIOS[name], args)
    return rows


def corruption_rows(cfg: dict, device: torch.device) -> list[dict]:
    """Corrupted images/s per type and overall."""
    return corruption_speed.measure(device, cfg["batch"], cfg["height"], cfg["width"], cfg["repeats"],
                                    cfg.get("only", corruption_speed.CORRUPTIONS))


def summary(rows: list[dict], device: torch.device, seconds: float) -> str:
    """The RESULTS.md section: one short table per benchmark."""
    name = device_description(device)
    lines = [BEGIN, f"### {name} (`make benchmark-gpu`, {time.strftime('%Y-%m-%d')}, {seconds:.0f} s)", "",
             "| benchmark | setting | figure |", "|---|---|---|"]
    for r in rows:
        kind = r.get("benchmark")
        if kind == "gpu_inference":
            lines.append(f"| inference | {r['encoder']} {r['size']} x {r['size']} batch {r['batch']} | ours bf16 "
                         f"{r['ours_bf16_images_per_s']} images/s, official fp32 {r['official_fp32_images_per_s']} "
                         f"({r['speedup_ours_bf16_vs_official_fp32']}x) |")
        elif kind == "gpu_westar_step":
            lines.append(f"| WeSTAR step | {r['encoder']} {r['size']} x {r['size']} batch {r['batch']} bf16, "
                         f"checkpointing {'on' if r['checkpointing'] else 'off'} | {r['images_per_s']} images/s, "
                         f"peak {r['peak_gib'] if r['peak_gib'] is not None else 'n/a'} GiB |")
        elif kind == "gpu_pseudo_label":
            lines.append(f"| pseudo-labeller | {r['relative']} + {r['metric']}, {r['method']}, "
                         f"{r['size'][0]} x {r['size'][1]} | {r['images_per_s']} images/s (teachers "
                         f"{r['share_teachers']:.0%}, fit {r['share_fit']:.0%}, write {r['share_write']:.0%}, "
                         f"data {r['share_data']:.0%}) |")
        elif kind == "ransac_speed" and r.get("backend") == "torch" and r["device"] == name:
            lines.append(f"| RANSAC {r['scenario']} | {r['batch']} x 375 x 1242, masked, torch | first call "
                         f"{r['seconds_median']} s ({r['speedup_vs_sklearn_median']}x sklearn, {r['x_floor']}x the "
                         f"floor), sustained {r['seconds_sustained_median']} s "
                         f"({r['speedup_sustained_vs_sklearn_median']}x, {r['x_floor_sustained']}x the floor) |")
        elif kind == "corruption_speed" and r.get("corruption") == "mean":
            lines.append(f"| corruptions | batch {r['batch']}, {r['size'][0]} x {r['size'][1]}, every type "
                         f"and severity | {r['images_per_s']} images/s |")
    return "\n".join([*lines, "", "Raw rows: `benchmarks/gpu.json`.", END])


def write_outputs(rows: list[dict], section: str, json_path: Path, results_path: Path | None) -> None:
    """The rows as JSON and the section into the results file (replacing an earlier one), both atomically."""
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
    if results_path is None:
        return
    text = results_path.read_text() if results_path.is_file() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with atomic_path(results_path) as tmp:
        tmp.write_text(text)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the same code paths on the CPU with tiny sizes")
    parser.add_argument("--json", type=Path, default=HERE / "gpu.json")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.smoke:
        device, cfg = torch.device("cpu"), SMOKE
    elif torch.cuda.is_available():
        device, cfg = torch.device("cuda"), FULL
    else:
        parser.error("no CUDA device: run on a GPU machine, or pass --smoke (CPU, tiny sizes)")
    start = time.perf_counter()
    rows: list[dict] = []
    for part in (lambda: inference_rows(cfg["inference"], device), lambda: westar_rows(cfg["westar"], device),
                 lambda: labeller_rows(cfg["labeller"], device), lambda: ransac_rows(cfg["ransac"]),
                 lambda: corruption_rows(cfg["corruptions"], device)):
        new = part()
        for row in new:
            print(json.dumps(row), flush=True)
        rows += new
    write_outputs(rows, summary(rows, device, time.perf_counter() - start), args.json, args.results)
    return rows


if __name__ == "__main__":
    main()
