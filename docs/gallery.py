"""Write docs/gallery.png: per family, one panel per style (source, target, simulator, source + haze, two draws
of the randomised training family, the family's held-out styles) with RGB | depth (inferno, near bright, invalid
black) | instances (whole objects, random colours, background black).

Run with the project installed (``make gallery``): ``python docs/gallery.py [--index N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from datamodules.synthetic import DEFAULT_SIZES
from depthadapt.io import colorize_depth, write_color_png
from depthadapt.synth import FAMILIES, HELD_OUT, RANDOM, render_sample, resolve_style

# (style, haze beta or None for the family's haze, index offset); then the family's held-out styles.
ROWS = (("source", 0.0, 0), ("target", 0.0, 0), ("simulator", 0.0, 0), ("source", None, 0), (RANDOM, 0.0, 0),
        (RANDOM, 0.0, 1))
HAZE_BETA = {"street": 0.03, "room": 0.2}  # 1/m: about 1/3 contrast left at 35 m (street) or 5.5 m (room)
LABEL_HEIGHT = 22
PER_LINE = {"street": 1, "room": 2}  # rows side by side, so that the room rows fill the street rows' width
GAP = 12
SCALE = 0.6


def _instances_rgb(instances: torch.Tensor) -> np.ndarray:
    """Random colour per instance id (H x W x 3 uint8), background black."""
    ids = instances.numpy()
    palette = np.random.default_rng(7).integers(60, 256, (int(ids.max()) + 1, 3)).astype(np.uint8)
    palette[0] = 0
    return palette[ids]


def _row(family: str, style: str, beta: float, index: int) -> np.ndarray:
    """One gallery row (H + label) x 3W x 3 uint8."""
    height, width = DEFAULT_SIZES[family]
    sample = render_sample(family, style, 0, index, height, width, haze_beta=beta)
    image, depth = sample["image"], sample["depth"]
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    depth_rgb = colorize_depth(depth, invert=True, valid=depth > 0)
    row = np.concatenate([rgb, depth_rgb, _instances_rgb(sample["instances"])], 1)
    label = np.full((LABEL_HEIGHT, row.shape[1], 3), 255, np.uint8)
    notes = resolve_style(family, style, 0, index).notes
    text = f"{family} / {style}" + (f" + haze (beta {beta:g}/m)" if beta > 0 else f": {notes}")
    cv2.putText(label, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([label, row], 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, default=0, help="sample index rendered in every row")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "gallery.png"))
    args = parser.parse_args()
    lines = []
    for family in FAMILIES:
        specs = [*ROWS, *((style, 0.0, 0) for style, home in HELD_OUT.items() if home == family)]
        rows = [_row(family, style, HAZE_BETA[family] if beta is None else beta, args.index + offset)
                for style, beta, offset in specs]
        per_line = PER_LINE[family]
        for i in range(0, len(rows), per_line):
            gap = np.full((rows[i].shape[0], GAP, 3), 255, np.uint8)
            lines.append(np.concatenate([part for r in rows[i:i + per_line] for part in (r, gap)][:-1], 1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    canvas = np.concatenate(lines, 0)
    # Noise-like textures compress badly: shrink to keep the PNG small enough to commit.
    canvas = cv2.resize(canvas, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    write_color_png(args.out, canvas)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
