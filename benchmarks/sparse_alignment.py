"""Sparse metric alignment: least squares vs the robust fits on a few true and wrong points per frame (AbsRel,
fallbacks).

A relative model (the committed foundation-like ``tiny_foundation_140.pth``, with its real errors, not an ideal affine
map) predicts rendered frames of the held-out synthetic domains (room ``neon`` / ``pastel``, street ``sepia`` /
``sintel``); per frame ``--points`` pixels with valid depth are drawn, and a share of them (``--wrong``) gets a
wrong depth (log-uniform over the frame's depth range: LiDAR through glass, a mismatched survey point). Each frame
is aligned by every method and scored against its dense ground truth; each setting is drawn with ``--draws`` seeds.
AbsRel is the mean over the frames a method gives as metric: a fallback (too few points, no fit with a positive
scale: never written by the prediction job) is counted instead; ``ransac_before`` flagged nothing, so all its frames
count, and its fits with a scale <= 0 are counted too.

Each row also compares ``tukey`` (the default) with ``lstsq`` frame by frame (``paired_difference``: the frames both
give as metric): the mean difference of AbsRel with a 95 % bootstrap interval, the median difference and the share of
frames where tukey is at least as good. A mean over 96 frames moves with one or two bad frames; the paired figures say
whether a gap is more than that.

Methods: ``lstsq``, ``ransac`` and ``tukey`` (``align_to_sparse``: the shipped ones), ``ransac_before`` (the old
default: ``fit_scale_shift``'s RANSAC with two-point samples and a threshold of 5 % of the median point disparity,
the scale unconstrained) and ``dense_oracle`` (least squares to every ground-truth pixel: the model's own floor).

Splits: ``val`` frames 6000.., ``test`` 7000.. (choices on ``val``, figures for README on ``test``). ``--sweep``
adds tukey at several ``tukey_c`` (the choice of the default).

    python -m benchmarks.sparse_alignment --split test
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import write_result
from depthadapt.alignment import fit_scale_shift
from depthadapt.alignment.sparse import SparseFitOptions, align_to_sparse
from depthadapt.metrics import depth_to_disparity
from depthadapt.models.card import DepthModelCard
from depthadapt.synth import render_sample

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = (("room", "neon"), ("room", "pastel"), ("street", "sepia"), ("street", "sintel"))
SIZES = {"room": (140, 280), "street": (140, 462)}
FIRST_INDEX = {"val": 6000, "test": 7000}
MAX_DEPTH = 80.0


def frames(split: str, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(disparity H x W of the relative model, true depth H x W) for ``count`` frames of each domain."""
    card = DepthModelCard(encoder="vitt", checkpoint=str(ROOT / "checkpoints" / "tiny_foundation_140.pth"),
                          input_size=140)
    model = card.build().eval()
    out = []
    for family, style in DOMAINS:
        samples = [render_sample(family, style, 0, FIRST_INDEX[split] + i, *SIZES[family]) for i in range(count)]
        with torch.no_grad():
            disparity = card.infer(model, torch.stack([s["image"] for s in samples]))
        out += [(d, s["depth"]) for d, s in zip(disparity, samples, strict=True)]
    return out


def draw_points(depth: torch.Tensor, count: int, wrong: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` valid pixels keep their depth, a share ``wrong`` of them gets a log-uniform wrong one: H x W."""
    pixels = (depth.flatten() > 0).nonzero().squeeze(1)
    chosen = pixels[torch.randperm(len(pixels), generator=generator)[:count]]
    values = depth.flatten()[chosen].clone()
    bad = torch.randperm(count, generator=generator)[: round(wrong * count)]
    low, high = depth[depth > 0].min().log(), depth[depth > 0].max().log()
    values[bad] = (low + (high - low) * torch.rand(len(bad), generator=generator)).exp()
    sparse = torch.zeros_like(depth)
    sparse.view(-1)[chosen] = values
    return sparse


def ransac_before(disparity: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The replaced fit: RANSAC of ``fit_scale_shift`` (two-point samples, threshold 5 % of the median point
    disparity, any scale) -> depth H x W, scale."""
    valid = sparse > 0
    target = depth_to_disparity(sparse.double(), valid)
    unit = target[valid].median()
    fit = fit_scale_shift(disparity[None].double(), (target / unit)[None], valid[None], method="ransac",
                          min_samples=2, residual_threshold=0.05, max_trials=1000, seed=0)
    scale, shift = float(fit.scale[0] * unit), float(fit.shift[0] * unit)
    aligned = (scale * disparity.double() + shift).clamp(1 / MAX_DEPTH, 1e3)
    return (1 / aligned).float(), scale


def dense_oracle(disparity: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Least squares to every ground-truth pixel: the best any scale and shift can do for this prediction."""
    return align_to_sparse(disparity[None], depth[None], SparseFitOptions(method="lstsq", max_depth=MAX_DEPTH)).depth[0]


def abs_rel(pred: torch.Tensor, depth: torch.Tensor) -> float:
    valid = depth > 0
    return float(((pred[valid] - depth[valid]).abs() / depth[valid]).mean())


def paired_difference(first: list[float | None], second: list[float | None], resamples: int = 10_000) -> dict:
    """``first`` - ``second`` per frame (None: not metric; such frames are left out of both): mean, its 95 %
    bootstrap interval (seeded), median, and the share of frames where ``first`` <= ``second``."""
    pairs = [(a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    if not pairs:
        raise ValueError("no frame is metric for both methods")
    diff = torch.tensor([a - b for a, b in pairs], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    means = diff[torch.randint(len(diff), (resamples, len(diff)), generator=generator)].mean(1)
    low, high = means.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"frames": len(diff), "mean": float(diff.mean()), "low": low, "high": high,
            "median": float(diff.median()), "share_first_not_worse": float((diff <= 0).double().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=tuple(FIRST_INDEX), default="test")
    parser.add_argument("--frames", type=int, default=8, help="frames per domain (4 domains)")
    parser.add_argument("--points", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--wrong", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.45])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", type=float, nargs="*", default=[], help="extra tukey_c values to compare")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = frames(args.split, args.frames)
    oracle = statistics.mean(abs_rel(dense_oracle(d, g), g) for d, g in data)
    methods = {"lstsq": dict(method="lstsq"), "ransac": dict(method="ransac"), "tukey": dict(method="tukey")}
    methods |= {f"tukey_c{c:g}": dict(method="tukey", tukey_c=c) for c in args.sweep}
    rows = []
    for points in args.points:
        for wrong in args.wrong:
            scores: dict[str, list[float | None]] = {name: [] for name in (*methods, "ransac_before")}
            non_positive = 0
            for draw in range(args.draws):
                generator = torch.Generator().manual_seed(draw)
                for disparity, depth in data:
                    sparse = draw_points(depth, points, wrong, generator)
                    for name, options in methods.items():
                        fit = SparseFitOptions(max_depth=MAX_DEPTH, **options)
                        result = align_to_sparse(disparity[None], sparse[None], fit)
                        scores[name].append(None if result.fallback[0] else abs_rel(result.depth[0], depth))
                    before, scale = ransac_before(disparity, sparse)
                    scores["ransac_before"].append(abs_rel(before, depth))
                    non_positive += scale <= 0
            row = {"split": args.split, "frames": len(data), "draws": args.draws, "points": points, "wrong": wrong,
                   "threads": args.threads, "dense_oracle_abs_rel": round(oracle, 4)}
            for name, frame_scores in scores.items():
                values = [v for v in frame_scores if v is not None]
                row[f"{name}_abs_rel"] = round(statistics.mean(values), 4)
                row[f"{name}_abs_rel_worst"] = round(max(values), 3)
                row[f"{name}_fallbacks"] = len(frame_scores) - len(values)
            paired = paired_difference(scores["tukey"], scores["lstsq"])
            row |= {f"tukey_minus_lstsq_{key}": round(value, 4) for key, value in paired.items()}
            row["ransac_before_non_positive_scales"] = int(non_positive)
            rows.append(row)
    write_result(f"sparse_alignment_{args.split}", rows)


if __name__ == "__main__":
    main()
