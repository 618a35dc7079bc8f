"""`make benchmark`: run every benchmark, each writing benchmarks/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = [
    "benchmarks.render_speed",
    "benchmarks.corruption_speed",
    "benchmarks.sa_hdn_speed",
    "benchmarks.ransac_speed",
    "benchmarks.inference_speed",
    "benchmarks.westar_speed",
    "benchmarks.westar_ablation",
    "benchmarks.pseudo_label_tables",
    "benchmarks.pseudo_label_speed",
    "benchmarks.westar_memory",
]


def main() -> None:
    failed = []
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module], cwd=ROOT).returncode != 0:
            failed.append(module)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
