"""The dual-teacher paper's Tables 2 and 3 (dual-teacher paper) on the synthetic street domain with the tiny teachers.

Table 2: the pseudo-labels of every method against the ground truth, in both fit spaces (disparity: fit to
1 / metric; depth: the paper's eq. (1) literally), on street `source` images unseen by the teachers
(`python cli.py test --config config_yaml/pseudo_label.yaml`). Table 3: students (`config_yaml/student.yaml`,
the tiny `vitt` started from the tiny metric teacher) trained on the baseline labels and on the masked-RANSAC
labels of either fit space, then scored against the ground truth of held-out images; at the scale a 2-core
CPU allows in about 10 minutes (a few hundred label images, about a hundred steps), not the paper's.
Everything runs through the real entry point (`cli.main`), seeded; the labels go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cli
from benchmarks.common import write_result
from depthadapt.pseudo_labels import FIT_SPACES, METHODS, TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
LABELS = "config_yaml/pseudo_label.yaml"
STUDENT = "config_yaml/student.yaml"
STUDENT_TEST = "config_yaml/student_test.yaml"
FIRST_IMAGE = 4000  # the images to label: outside the tiny teachers' training range (0..3000)
CACHE = "outputs/cache"  # render once for every run
# Table 3 arms: (label method, fit space).
STUDENT_LABELS = (("baseline", "disparity"), ("masked_ransac", "disparity"), ("masked_ransac", "depth"))


def metrics_row(callback_metrics: dict, prefix: str) -> dict[str, float]:
    """The paper's columns from a run's logged metrics ``<prefix><name>``."""
    return {name: round(float(callback_metrics[f"{prefix}{name}"]), 4) for name in TABLE_COLUMNS}


def markdown_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A titled markdown table."""
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_2(images: int) -> list[dict]:
    """Every method in both fit spaces against the ground truth of ``images`` unseen street images."""
    image_range = f"[{FIRST_IMAGE}, {FIRST_IMAGE + images}]"
    rows = []
    for fit_space in FIT_SPACES:
        start = time.perf_counter()
        run = cli.main(["test", "--config", LABELS, "--model.fit_space", fit_space, "--data.test_range", image_range,
                        "--data.cache_dir", CACHE])
        seconds = time.perf_counter() - start
        for method in METHODS:
            rows.append({
                "benchmark": "pseudo_label_tables", "table": 2, "fit_space": fit_space, "method": method,
                "images": images, **metrics_row(run.trainer.callback_metrics, f"test/{method}/"),
                "seconds_all_methods": round(seconds, 1),
            })
    return rows


def table_3(label_images: int, steps: int, eval_images: int, workdir: Path) -> list[dict]:
    """Students trained ``steps`` steps on each arm's labels of ``label_images`` images, scored on ``eval_images``."""
    image_range = f"[{FIRST_IMAGE}, {FIRST_IMAGE + label_images}]"
    images = workdir / "images"
    rows = []
    for method, fit_space in STUDENT_LABELS:
        labels = workdir / f"{method}_{fit_space}"
        start = time.perf_counter()
        cli.main(["predict", "--config", LABELS, "--model.method", method, "--model.fit_space", fit_space,
                  "--data.test_range", image_range, "--data.cache_dir", CACHE,
                  "--trainer.callbacks.init_args.output_dir", str(labels),
                  "--trainer.callbacks.init_args.image_dir", str(images)])
        label_seconds = time.perf_counter() - start
        start = time.perf_counter()
        fit = cli.main(["fit", "--config", STUDENT, "--data.image_dir", str(images), "--data.depth_dir", str(labels),
                        "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.logger", "false",
                        "--trainer.enable_checkpointing", "false", "--model.table_row", f"{method} ({fit_space})"])
        fit_seconds = time.perf_counter() - start
        test = cli.main(["--config", STUDENT, "--config", STUDENT_TEST, "--data.cache_dir", CACHE,
                         "--data.test_range", f"[3100, {3100 + eval_images}]"], run=False)
        test.trainer.test(fit.model, datamodule=test.datamodule, verbose=False)
        rows.append({
            "benchmark": "pseudo_label_tables", "table": 3, "labels": method, "fit_space": fit_space,
            "label_images": label_images, "steps": steps, "batch": fit.datamodule.batch_size,
            "eval_images": eval_images, **metrics_row(test.trainer.callback_metrics, "test/"),
            "label_seconds": round(label_seconds, 1), "fit_seconds": round(fit_seconds, 1),
            "host_load_avg_1min": round(os.getloadavg()[0], 2),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table2-images", type=int, default=128, help="images the labels are scored on")
    parser.add_argument("--label-images", type=int, default=256, help="pseudo-labelled images per student")
    parser.add_argument("--steps", type=int, default=100, help="training steps per student (batch 8)")
    parser.add_argument("--eval-images", type=int, default=200, help="held-out images the students are scored on")
    args = parser.parse_args()
    os.chdir(ROOT)  # the configs name the tiny teachers relative to the repository
    labels = table_2(args.table2_images)
    with tempfile.TemporaryDirectory() as workdir:
        students = table_3(args.label_images, args.steps, args.eval_images, Path(workdir))
    write_result("pseudo_label_tables", labels + students)
    header = ["fit space", "method", *TABLE_COLUMNS]
    print(markdown_table(f"Table 2: pseudo-labels of {args.table2_images} synthetic street images", header,
                         [[r["fit_space"], r["method"], *(f"{r[c]:.3f}" for c in TABLE_COLUMNS)] for r in labels]))
    print()
    title = (f"Table 3: students ({args.steps} steps on {args.label_images} labelled images), "
             f"{args.eval_images} held-out images")
    print(markdown_table(title, ["training labels", "fit space", *TABLE_COLUMNS],
                         [[r["labels"], r["fit_space"], *(f"{r[c]:.3f}" for c in TABLE_COLUMNS)] for r in students]))


if __name__ == "__main__":
    main()
