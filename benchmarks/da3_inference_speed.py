"""Depth Anything 3 inference seconds per image, ours against the official network (PyPI `depth-anything-3`), the
same weights and input, one image (official layout B x N = 1 x 1), fp32.

Ours: ``forward`` (the depth output only: the any-view models skip the ray branch and the camera) and
``forward_all`` (every single-view output). The official network computes all its outputs (and its ray branch's
four pyramid levels) in every call.
"""

from __future__ import annotations

import argparse

import torch
from depth_anything_3.cfg import create_object, load_config
from depth_anything_3.registry import MODEL_REGISTRY

from benchmarks.common import device_description, seconds, write_result
from depthadapt.models.da3 import DepthAnything3


def measure(model_name: str, height: int, width: int, repeats: int) -> list[dict]:
    """Seconds per image of the official net and of ours (depth only, all outputs) at one input size."""
    device = torch.device("cpu")
    official = create_object(load_config(MODEL_REGISTRY[model_name])).eval()
    with torch.device("meta"):
        ours = DepthAnything3(model_name)
    ours.load_state_dict(official.state_dict(), assign=True)
    ours.eval()
    x = torch.randn(1, 3, height, width)
    runs = {
        "official": lambda: official(x[:, None]),
        "ours: depth": lambda: ours(x),
        "ours: all outputs": lambda: ours.forward_all(x),
    }
    # Interleaved rounds, best of each: on a shared machine the load drifts, and every implementation sees it.
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for run in runs.values():
            run()  # warm-up
        for _ in range(repeats):
            for implementation, run in runs.items():
                best[implementation] = min(best[implementation], seconds(run, device))
    rows = []
    for implementation, value in best.items():
        rows.append({"benchmark": "da3_inference", "model": model_name, "implementation": implementation,
                     "size": f"{height}x{width}", "threads": torch.get_num_threads(), "precision": "fp32",
                     "device": device_description(device), "seconds_per_image": round(value, 3)})
        print(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["da3-small", "da3mono-large"])
    parser.add_argument("--height", type=int, default=280)
    parser.add_argument("--width", type=int, default=378)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models for row in measure(name, args.height, args.width, args.repeats)]
    write_result("da3_inference_speed", rows)


if __name__ == "__main__":
    main()
