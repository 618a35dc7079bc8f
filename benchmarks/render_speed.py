"""Synthetic renderer speed: street images/s at 196 x 644 with 1 and 2 CPU threads (one JSON line)."""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import write_result
from depthadapt.synth import render_sample


def images_per_s(family: str, style: str, n: int, height: int, width: int, threads: int) -> float:
    """Mean rendering rate over ``n`` images (after one warm-up render) with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    render_sample(family, style, 0, -1, height, width)
    start = time.perf_counter()
    for index in range(n):
        render_sample(family, style, 0, index, height, width)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20, help="images per measurement")
    parser.add_argument("--family", default="street")
    parser.add_argument("--style", default="source")
    parser.add_argument("--height", type=int, default=196)
    parser.add_argument("--width", type=int, default=644)
    args = parser.parse_args()
    row = {"benchmark": "render_speed", "family": args.family, "style": args.style,
           "size": [args.height, args.width], "n": args.n}
    for threads in (1, 2):
        rate = images_per_s(args.family, args.style, args.n, args.height, args.width, threads)
        row[f"images_per_s_{threads}_thread{'s' if threads > 1 else ''}"] = round(rate, 2)
    write_result("render_speed", [row])


if __name__ == "__main__":
    main()
