"""The chained pipeline of the two papers (`make chain`): adapt -> label -> distil, on the synthetic street target.

1. WeSTAR (WeSTAR paper) adapts the tiny relative teacher (trained on the `source` style) to unlabelled `target`
   images (`config_yaml/chain_westar.yaml`); the fit exports `adapted_model.pth` (LoRA merged).
2. The dual teacher (dual-teacher paper) labels other target images three ways (`config_yaml/chain_pseudo_label.yaml`):
   `baseline` (the metric teacher's own output), `dual_teacher` (masked RANSAC with the unadapted relative teacher)
   and `chained` (masked RANSAC with the adapted one).
3. One student per label set (`config_yaml/chain_student.yaml`: from the tiny metric teacher, same schedule and seed).
4. Each student is scored on held-out target images with ground truth; one table, `benchmarks/results/chain.json`
   and a section of `benchmarks/RESULTS.md`. Also measured, to explain the table: the label sets against ground
   truth (the labeler's test, Table 2) and both relative teachers' affine-invariant scores on the labelled images.

Everything runs through the real entry point (`cli.main`); outputs go to `outputs/chain/` (`--workdir`). A rerun
skips finished steps: the export exists, the label writer resumes per image, a student with scores is done (an
unfinished one resumes from its `last.ckpt`), measured scores are kept as JSON in the work folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import cli
from benchmarks.common import RESULTS_DIR, write_result
from depthadapt.io import atomic_path
from depthadapt.metrics import format_comparison_table

ROOT = Path(__file__).resolve().parents[1]
WESTAR = "config_yaml/chain_westar.yaml"
LABELER = "config_yaml/chain_pseudo_label.yaml"
STUDENT = "config_yaml/chain_student.yaml"
DATA = "config_yaml/data/chain_street_target.yaml"
EVALUATE = "config_yaml/evaluate.yaml"
SOURCE_TEACHER = "config_yaml/models/tiny_relative_street.yaml"
ARMS = ("baseline", "dual_teacher", "chained")
COLUMNS = ("d1", "abs_rel", "rmse", "rmse_log")
LABEL_METHOD = {"baseline": "baseline", "dual_teacher": "masked_ransac", "chained": "masked_ransac"}
MACHINE = "2-core CPU, shared"
SECTION = "## Chained pipeline (`make chain`)"
# --smoke: the wiring on tiny sizes (tests/benchmarks/test_chain.py): 28 x 84 images, 2 WeSTAR steps, 8 labelled images,
# 1 student step, 4 test images; the networks run at 28 px.
DATA_RANGES = yaml.safe_load((ROOT / DATA).read_text())["init_args"]
DATA_RANGES = {k: tuple(v) for k, v in DATA_RANGES.items() if k.endswith("_range")}
SMOKE_RANGES = {"train_range": (0, 8), "val_range": (3000, 3004), "test_range": (3100, 3104),
                "predict_range": (4000, 4008)}
SMOKE_DATA = ["--data.height", "28", "--data.width", "84", "--data.cache_dir", "null"]  # nothing into outputs/
SMOKE_DATA += [a for k, (start, stop) in SMOKE_RANGES.items() for a in (f"--data.{k}", f"[{start}, {stop}]")]
SMOKE = {
    "westar": [*SMOKE_DATA, "--model.input_size", "28", "--trainer.max_epochs", "1"],
    "labeler": [*SMOKE_DATA, "--model.relative.input_size", "28", "--model.metric.input_size", "28",
                "--model.fit.max_trials", "20", "--model.fit.min_samples", "10"],
    "student": ["--model.input_size", "28", "--trainer.max_epochs", "1"],
    "student_test": [*SMOKE_DATA, "--model.input_size", "28"],
    "teacher_test": [*SMOKE_DATA, "--model.model.input_size", "28"],
}


def test_scores(run: cli.DepthAdaptCLI, prefix: str = "test/") -> dict[str, float]:
    """The table's columns from a test run's logged metrics ``<prefix><name>``."""
    return {name: float(run.trainer.callback_metrics[prefix + name]) for name in COLUMNS}


class Chain:
    """The chain's steps in one work folder; ``smoke`` runs them on tiny sizes."""

    def __init__(self, workdir: Path, smoke: bool) -> None:
        self.work, self.smoke = workdir, smoke
        self.adapted = workdir / "westar" / "checkpoints" / "adapted_model.pth"
        self.images = workdir / "images"
        self.ranges = {k: SMOKE_RANGES.get(k, v) if smoke else v for k, v in DATA_RANGES.items()}
        # Wall time of each step and the host's 1-min load average at its end, from the run that did it.
        self.times = workdir / "seconds.json"
        self.seconds: dict[str, float] = {}
        self.load: dict[str, float] = {}
        if self.times.is_file():
            self.seconds, self.load = (json.loads(self.times.read_text())[k] for k in ("seconds", "load"))

    def args(self, step: str, head: list[str], tail: tuple[str, ...] = ()) -> list[str]:
        """``head`` (subcommand, configs), the smoke overrides of ``step``, then ``tail``."""
        return [*head, *(SMOKE[step] if self.smoke else []), *tail]

    def labels(self, arm: str) -> Path:
        """The label folder of an arm."""
        return self.work / "labels" / arm

    def relative_teacher(self, arm: str) -> list[str]:
        """The labeler's relative-teacher arguments of an arm: the adapted export for ``chained``."""
        if arm == "chained":
            return ["--model.relative.checkpoint", str(self.adapted)]
        return ["--model.relative", SOURCE_TEACHER]

    def timed(self, name: str, run: Callable[[], Any], did_work: Callable[[Any], bool] = bool) -> Any:
        """``run()``; its wall time is kept under ``name`` when ``did_work(result)`` (a rerun that skipped is not)."""
        start = time.perf_counter()
        result = run()
        if not did_work(result):
            return result
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.load[name] = round(os.getloadavg()[0], 2)
        with atomic_path(self.times) as tmp:
            tmp.write_text(json.dumps({"seconds": self.seconds, "load": self.load}, indent=1) + "\n")
        return result

    def measured(self, name: str, measure: Callable[[], dict]) -> dict:
        """The scores kept in ``<work>/<name>.json``, measured (timed) and written first when absent."""
        path = self.work / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        values = self.timed(name, measure)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(values, indent=1) + "\n")
        return values

    # --- the steps ------------------------------------------------------------------------------------------
    def adapt(self) -> None:
        """WeSTAR on the target training images, unless the export exists (resumes an unfinished fit)."""
        if self.adapted.is_file():
            print(f"adapt: {self.adapted} exists, skipped")
            return
        last = self.adapted.with_name("last.ckpt")
        resume = ["--ckpt_path", str(last)] if last.is_file() else []
        tail = ("--trainer.default_root_dir", str(self.work / "westar"), *resume)
        self.timed("adapt", lambda: cli.main(self.args("westar", ["fit", "--config", WESTAR], tail)))

    def label(self, arm: str) -> None:
        """The arm's labels of the predict range (the writer skips images labelled by an earlier run and checks
        that they came from the same teachers)."""
        tail = ("--model.method", LABEL_METHOD[arm], *self.relative_teacher(arm),
                "--trainer.callbacks.init_args.output_dir", str(self.labels(arm)),
                "--trainer.callbacks.init_args.image_dir", str(self.images))
        self.timed(f"label_{arm}", lambda: cli.main(self.args("labeler", ["predict", "--config", LABELER], tail)),
                   did_work=lambda run: any(getattr(c, "written", 0) for c in run.trainer.callbacks))

    def student(self, arm: str) -> dict[str, float]:
        """Train the arm's student (resuming from its last.ckpt), then score it on the held-out images."""
        root = self.work / "students" / arm
        last = root / "checkpoints" / "last.ckpt"

        def fit_and_test() -> dict[str, float]:
            resume = ["--ckpt_path", str(last)] if last.is_file() else []
            cli.main(self.args("student", ["fit", "--config", STUDENT], (
                "--trainer.default_root_dir", str(root), "--data.image_dir", str(self.images),
                "--data.depth_dir", str(self.labels(arm)), "--model.table_row", arm, *resume)))
            head = ["test", "--verbose", "false", "--config", STUDENT, "--data", DATA]
            test = cli.main(self.args("student_test", head, ("--model.table_row", arm, "--ckpt_path", str(last))))
            return test_scores(test)

        return self.measured(f"student_{arm}", fit_and_test)

    def label_quality(self) -> dict[str, dict[str, float]]:
        """Each label set against the ground truth of the labelled images (the labeler's test: Table 2, run with
        each relative teacher)."""
        def table_2(arm: str) -> dict[str, dict[str, float]]:
            tail = (*self.relative_teacher(arm), "--data.test_range", self.predict_range())
            test = cli.main(self.args("labeler", ["test", "--verbose", "false", "--config", LABELER], tail))
            return {method: test_scores(test, f"test/{method}/") for method in ("baseline", "masked_ransac")}

        source = self.measured("labels_source_teacher", lambda: table_2("dual_teacher"))
        adapted = self.measured("labels_adapted_teacher", lambda: table_2("chained"))
        return {"baseline": source["baseline"], "dual_teacher": source["masked_ransac"],
                "chained": adapted["masked_ransac"]}

    def teacher_quality(self) -> dict[str, dict[str, float]]:
        """Both relative teachers, affine-invariantly, on the labelled images (the labels' raw material)."""
        def evaluate(adapted: bool) -> dict[str, float]:
            head = ["test", "--verbose", "false", "--config", EVALUATE, "--model.model", SOURCE_TEACHER, "--data", DATA]
            weights = ("--model.model.checkpoint", str(self.adapted)) if adapted else ()
            test = cli.main(self.args("teacher_test", head, (*weights, "--data.test_range", self.predict_range())))
            return test_scores(test)

        return {name: self.measured(f"teacher_{name}", lambda adapted=adapted: evaluate(adapted))
                for name, adapted in (("source", False), ("adapted", True))}

    def predict_range(self) -> str:
        """The labelled images' index range (as a command-line value)."""
        return "[{}, {}]".format(*self.ranges["predict_range"])

    def run(self) -> dict[str, Any]:
        """Every step, then the tables; returns the results record."""
        start = time.perf_counter()
        self.adapt()
        for arm in ARMS:
            self.label(arm)
        students = {arm: self.student(arm) for arm in ARMS}
        labels, teachers = self.label_quality(), self.teacher_quality()
        seconds = round(time.perf_counter() - start, 1)
        print(format_comparison_table(labels, COLUMNS, "label sets against ground truth (labelled images)"))
        print(format_comparison_table(teachers, COLUMNS, "relative teachers, affine-invariant (labelled images)"))
        held_out, labelled = (stop - start for start, stop in (self.ranges["test_range"], self.ranges["predict_range"]))
        print(format_comparison_table(students, COLUMNS, f"students on {held_out} held-out target images"))
        return {
            "benchmark": "chain", "machine": MACHINE, "date": datetime.date.today().isoformat(),
            "smoke": self.smoke, "students": students, "labels": labels, "relative_teachers": teachers,
            "held_out_images": held_out, "labelled_images": labelled, "adapted_checkpoint": str(self.adapted),
            "seconds_this_run": seconds, "seconds_by_step": self.seconds,
            "host_load_avg_by_step": self.load,
        }


def markdown_section(result: dict[str, Any]) -> str:
    """The RESULTS.md section of a run: the students' table, the label sets' AbsRel, the teachers' d1."""
    def rows(table: dict[str, dict[str, float]]) -> list[str]:
        return [f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in COLUMNS) + " |" for name, row in table.items()]

    header = ["| | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds_by_step"].items())
    total = sum(result["seconds_by_step"].values()) / 60
    loads = result["host_load_avg_by_step"].values()
    return "\n".join([
        SECTION, "",
        f"Measured {result['date']} on a {result['machine']} machine (load average {min(loads):.1f}-{max(loads):.1f}), "
        f"`make chain` (`benchmarks/chain.py`; raw: `benchmarks/results/chain.json`; discussion: `docs/chain.md`). "
        f"Time of each step in the run that did it ({total:.0f} min in all): {steps}.",
        "",
        f"Students (the tiny metric teacher fine-tuned on each label set) on {result['held_out_images']} held-out "
        "target-style images:", "", *header, *rows(result["students"]), "",
        f"The label sets against the ground truth of the {result['labelled_images']} labelled images:", "", *header,
        *rows(result["labels"]), "",
        "The relative teacher before and after WeSTAR, affine-invariant, on the labelled images:", "", *header,
        *rows(result["relative_teachers"]), "",
    ])


def update_results_md(path: Path, section: str) -> None:
    """Replace this benchmark's section of RESULTS.md (up to the next ``## `` heading), or append it."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_path(path) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chain; ``argv`` as on the command line. Returns the results record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/chain"), help="outputs of every step")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, results into the work folder only (the wiring test)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the configs name the tiny teachers and fragments relative to the repository
    result = Chain(args.workdir, args.smoke).run()
    if args.smoke:
        with atomic_path(args.workdir / "chain.json") as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
    else:
        write_result("chain", [result])
        update_results_md(RESULTS_DIR.parent / "RESULTS.md", markdown_section(result))
    return result


if __name__ == "__main__":
    main()
