"""The chained pipeline of the two papers (`make chain`): adapt -> label -> distil, on a held-out synthetic domain.

1. WeSTAR (the WeSTAR paper) adapts the foundation-like relative model `tiny_foundation_140.pth` to unlabelled images of
   the held-out street style `sintel` with the default experiment's settings (`config_yaml/westar.yaml` +
   `config_yaml/chain_westar.yaml`); the fit exports `adapted_model.pth` (LoRA merged).
2. The dual teacher (the dual-teacher paper) labels other `sintel` images three ways
   (`config_yaml/chain_pseudo_label.yaml`, the foundation-like metric teacher `tiny_foundation_metric.pth`):
   `baseline` (the metric teacher's own output), `dual_teacher` (masked RANSAC with the unadapted relative model)
   and `chained` (masked RANSAC with the adapted one).
3. One student per label set and seed (`config_yaml/chain_student.yaml`: from the metric teacher, same schedule;
   seeds 0, 1, 2 by default).
4. Each student is scored on the test images (ground truth, held out from every step). Also measured, to explain
   the table, on the labelled images: every labelling method against ground truth with each relative teacher (the
   labeler's test, Table 2), the per-image label errors (share of images where the chained label beats the
   dual-teacher one, medians), the RANSAC inlier ratios of the written labels, and the teachers' own scores.

Everything runs through the real entry point (`cli.main`); outputs go to `outputs/chain/` (`--workdir`). A rerun
skips finished steps: the export exists, the label writer resumes per image, a student with scores is done (an
unfinished one resumes from its `last.ckpt`), measured scores are kept as JSON in the work folder. The full run
writes its record to `benchmarks/rows/chain.json` (committed) and its section of `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

import cli
from datamodules.synthetic import synthetic_datamodule
from depthadapt.io import atomic_path, read_depth
from depthadapt.metrics import depth_metrics
from depthadapt.pseudo_labels import METHODS

ROOT = Path(__file__).resolve().parents[1]
WESTAR = ("config_yaml/westar.yaml", "config_yaml/chain_westar.yaml")
WESTAR_TRAIN_RANGE = "[0, 400]"  # WeSTAR's images (config_yaml/chain_westar.yaml): 3 epochs of 100 steps of 4
LABELER = "config_yaml/chain_pseudo_label.yaml"
STUDENT = "config_yaml/chain_student.yaml"
DATA = "config_yaml/data/chain_target.yaml"
EVALUATE = "config_yaml/evaluate.yaml"
SOURCE_TEACHER = "config_yaml/models/tiny_foundation_140.yaml"
METRIC_TEACHER = "config_yaml/models/tiny_foundation_metric.yaml"
ARMS = ("baseline", "dual_teacher", "chained")
SEEDS = (0, 1, 2)
COLUMNS = ("d1", "abs_rel", "rmse", "rmse_log")
LABEL_METHOD = {"baseline": "baseline", "dual_teacher": "masked_ransac", "chained": "masked_ransac"}
MACHINE = "2-core CPU, shared"
SECTION = "## Chained pipeline (`make chain`)"
ROWS = ROOT / "benchmarks" / "rows" / "chain.json"
DEPTH_BANDS = (0, 10, 20, 40, 81)  # m: the bands of true depth of the labels' ratio to the truth
RANGE_FRACTIONS = (0.02, 0.05, 0.1)  # threshold_unit support_range: the fractions tried on the validation images
# --smoke: the wiring on tiny sizes (tests/benchmarks/test_chain.py): 28 x 84 images, 2 WeSTAR steps, 8 labelled images,
# 1 student epoch, 4 test images; the networks run at 28 px.
DATA_ARGS = yaml.safe_load((ROOT / DATA).read_text())["init_args"]
DATA_RANGES = {k: tuple(v) for k, v in DATA_ARGS.items() if k.endswith("_range")}
SMOKE_RANGES = {"train_range": (0, 8), "val_range": (3000, 3004), "test_range": (3100, 3104),
                "predict_range": (4000, 4008)}
SMOKE_SIZE = (28, 84)
SMOKE_DATA = ["--data.height", str(SMOKE_SIZE[0]), "--data.width", str(SMOKE_SIZE[1]), "--data.cache_dir", "null"]
SMOKE_DATA += [a for k, (start, stop) in SMOKE_RANGES.items() for a in (f"--data.{k}", f"[{start}, {stop}]")]
SMOKE = {
    "westar": [*SMOKE_DATA, "--model.model.input_size", "28", "--trainer.limit_train_batches", "2",
               "--trainer.max_epochs", "1"],
    "labeler": [*SMOKE_DATA, "--model.relative.input_size", "28", "--model.metric.input_size", "28",
                "--model.fit.max_trials", "20", "--model.fit.min_samples", "10"],
    "student": ["--model.input_size", "28", "--trainer.max_epochs", "1"],
    "student_test": [*SMOKE_DATA, "--model.input_size", "28"],
    "teacher_test": [*SMOKE_DATA, "--model.model.input_size", "28"],
}


def test_scores(run: cli.DepthAdaptCLI, prefix: str = "test/", columns: Sequence[str] = COLUMNS) -> dict[str, float]:
    """The table's columns from a test run's logged metrics ``<prefix><name>``."""
    return {name: round(float(run.trainer.callback_metrics[prefix + name]), 4) for name in columns}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, half the spread (max - min) / 2, min and max of one score over seeds."""
    return {"mean": round(statistics.fmean(values), 4), "half_spread": round((max(values) - min(values)) / 2, 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}


class Chain:
    """The chain's steps in one work folder; ``smoke`` runs them on tiny sizes."""

    def __init__(self, workdir: Path, smoke: bool, seeds: Sequence[int] = SEEDS) -> None:
        self.work, self.smoke, self.seeds = workdir, smoke, tuple(seeds)
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
        """WeSTAR on the target's unlabelled images, unless the export exists (resumes an unfinished fit)."""
        if self.adapted.is_file():
            print(f"adapt: {self.adapted} exists, skipped")
            return
        last = self.adapted.with_name("last.ckpt")
        resume = ["--ckpt_path", str(last)] if last.is_file() else []
        configs = [a for path in WESTAR for a in ("--config", path)]
        head = ["fit", *configs, "--data.train_range", WESTAR_TRAIN_RANGE]
        tail = ("--trainer.default_root_dir", str(self.work / "westar"), *resume)
        self.timed("adapt", lambda: cli.main(self.args("westar", head, tail)))

    def label(self, arm: str) -> None:
        """The arm's labels of the predict range (the writer skips images labelled by an earlier run and checks
        that they came from the same teachers)."""
        tail = ("--model.method", LABEL_METHOD[arm], *self.relative_teacher(arm),
                "--trainer.callbacks.init_args.output_dir", str(self.labels(arm)),
                "--trainer.callbacks.init_args.image_dir", str(self.images))
        self.timed(f"label_{arm}", lambda: cli.main(self.args("labeler", ["predict", "--config", LABELER], tail)),
                   did_work=lambda run: any(getattr(c, "written", 0) for c in run.trainer.callbacks))

    def student(self, arm: str, seed: int) -> dict[str, float]:
        """Train the arm's student with ``seed`` (resuming from its last.ckpt), then score it on the test images."""
        root = self.work / "students" / arm / f"seed{seed}"
        last = root / "checkpoints" / "last.ckpt"

        def fit_and_test() -> dict[str, float]:
            resume = ["--ckpt_path", str(last)] if last.is_file() else []
            cli.main(self.args("student", ["fit", "--config", STUDENT], (
                "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
                "--data.image_dir", str(self.images), "--data.depth_dir", str(self.labels(arm)),
                "--model.table_row", arm, *resume)))
            head = ["test", "--verbose", "false", "--config", STUDENT, "--data", DATA]
            test = cli.main(self.args("student_test", head, ("--model.table_row", f"{arm} (seed {seed})",
                                                             "--ckpt_path", str(last))))
            return test_scores(test)

        return self.measured(f"student_{arm}_seed{seed}", fit_and_test)

    def labeler_test(self, arm: str, image_range: str, extra: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
        """The labeler's test (every labelling method against ground truth, with ``arm``'s relative teacher) on
        ``image_range``: method -> the table's columns and, for the fitted methods, the mean inlier ratio."""
        tail = (*self.relative_teacher(arm), "--data.test_range", image_range, *extra)
        metrics = cli.main(self.args("labeler", ["test", "--verbose", "false", "--config", LABELER],
                                     tail)).trainer.callback_metrics
        return {method: {k: round(float(metrics[f"test/{method}/{k}"]), 4) for k in (*COLUMNS, "inlier_ratio")
                         if f"test/{method}/{k}" in metrics} for method in METHODS}

    def range_fraction(self) -> dict[str, Any]:
        """The ``support_range`` threshold fraction of Table 2, chosen on the validation images with the unadapted
        relative teacher (so that the choice does not depend on WeSTAR): the one whose masked-RANSAC labels have the
        lowest AbsRel."""
        val = "[{}, {}]".format(*self.ranges["val_range"])
        scores = {str(f): self.measured(f"val_source_support_range_{f}", lambda f=f: self.labeler_test(
            "dual_teacher", val, support_range(f))["masked_ransac"]) for f in RANGE_FRACTIONS}
        return {"fraction": float(min(scores, key=lambda f: scores[f]["abs_rel"])), "validation": scores}

    def label_quality(self, fraction: float, teachers: Sequence[str] = ("source", "adapted")) -> dict[str, Any]:
        """Table 2 on the labelled images: every labelling method against ground truth, with the unadapted
        (``source``) and the adapted relative teacher, at the paper's absolute threshold, ``mad`` and the
        ``support_range`` ``fraction``."""
        variants = {"absolute 0.1": (), "mad": ("--model.fit.residual_threshold", "mad"),
                    f"support_range {fraction}": support_range(fraction)}
        arms = {"source": "dual_teacher", "adapted": "chained"}
        return {teacher: {name: self.measured(f"table2_{teacher}_{name.replace(' ', '_')}", lambda arm=arms[teacher],
                                              extra=extra: self.labeler_test(arm, self.predict_range(), extra))
                          for name, extra in variants.items()} for teacher in teachers}

    def teacher_quality(self) -> dict[str, dict[str, float]]:
        """Both relative teachers (affine-invariant) and the metric teacher (as is) on the labelled images: the
        labels' raw material."""
        def evaluate(card: str, adapted: bool = False) -> dict[str, float]:
            head = ["test", "--verbose", "false", "--config", EVALUATE, "--model.model", card, "--data", DATA]
            weights = ("--model.model.checkpoint", str(self.adapted)) if adapted else ()
            test = cli.main(self.args("teacher_test", head, (*weights, "--data.test_range", self.predict_range())))
            return test_scores(test)

        return {"relative_source": self.measured("teacher_source", lambda: evaluate(SOURCE_TEACHER)),
                "relative_adapted": self.measured("teacher_adapted", lambda: evaluate(SOURCE_TEACHER, True)),
                "metric": self.measured("teacher_metric", lambda: evaluate(METRIC_TEACHER))}

    def per_image(self) -> dict[str, Any]:
        """Per labelled image: each label set's AbsRel against ground truth and its sidecar's RANSAC inlier ratio;
        summarised as medians, means and the share of images where the chained label beats the dual-teacher one."""
        def measure() -> dict[str, Any]:
            dataset = self.labelled_images()
            abs_rel: dict[str, list[float]] = {arm: [] for arm in ARMS}
            inliers: dict[str, list[float]] = {arm: [] for arm in ARMS if LABEL_METHOD[arm] != "baseline"}
            for i in range(len(dataset)):
                sample = dataset[i]
                for arm in ARMS:
                    label = torch.from_numpy(read_depth(self.labels(arm) / f"{sample['name']}.png", 1 / 256))
                    score = depth_metrics(label[None], sample["depth"][None], sample["valid"][None])["abs_rel"]
                    abs_rel[arm].append(round(float(score), 5))
                    if arm in inliers:
                        sidecar = json.loads((self.labels(arm) / f"{sample['name']}.json").read_text())
                        inliers[arm].append(sidecar["inlier_ratio"])
            return {"abs_rel": abs_rel, "inlier_ratio": inliers}

        rows = self.measured("per_image", measure)
        chained, dual = rows["abs_rel"]["chained"], rows["abs_rel"]["dual_teacher"]
        return {
            "images": len(chained),
            "chained_beats_dual_teacher_share": round(sum(c < d for c, d in zip(chained, dual, strict=True))
                                                      / len(chained), 4),
            "abs_rel_median": {arm: round(statistics.median(v), 4) for arm, v in rows["abs_rel"].items()},
            "inlier_ratio_mean": {arm: round(statistics.fmean(v), 4) for arm, v in rows["inlier_ratio"].items()},
            "inlier_ratio_min": {arm: round(min(v), 4) for arm, v in rows["inlier_ratio"].items()},
        }

    def labelled_images(self) -> torch.utils.data.Dataset:
        """The labelled images with their ground truth (the target's predict range, as the labeler saw them)."""
        data = synthetic_datamodule({**DATA_ARGS, **self.ranges, "cache_dir": None if self.smoke else
                                     DATA_ARGS["cache_dir"], **self.smoke_size()})
        return data.dataset(self.ranges["predict_range"])

    def by_depth(self) -> dict[str, dict[str, float]]:
        """Each label set's median ratio label / truth over the labelled images' pixels in each band of true depth
        (``DEPTH_BANDS``): where the metric teacher (``baseline``) saturates at far range, and what the fits make
        of it."""
        def measure() -> dict[str, dict[str, float]]:
            dataset = self.labelled_images()
            ratios: dict[str, list[torch.Tensor]] = {arm: [] for arm in ARMS}
            depths = []
            for i in range(len(dataset)):
                sample = dataset[i]
                usable = sample["valid"] & (sample["depth"] > 0)
                depths.append(sample["depth"][usable])
                for arm in ARMS:
                    label = torch.from_numpy(read_depth(self.labels(arm) / f"{sample['name']}.png", 1 / 256))
                    ratios[arm].append(label[usable] / sample["depth"][usable])
            depth = torch.cat(depths)
            out = {}
            for low, high in itertools.pairwise(DEPTH_BANDS):
                band = (depth >= low) & (depth < high)
                out[f"{low}-{high} m"] = {"pixel_share": round(float(band.float().mean()), 4), **{
                    arm: round(float(torch.cat(r)[band].median()), 4) if band.any() else float("nan")
                    for arm, r in ratios.items()}}
            return out

        return self.measured("labels_by_depth", measure)

    def smoke_size(self) -> dict[str, int]:
        """The image size overrides of the smoke run (none otherwise)."""
        return dict(zip(("height", "width"), SMOKE_SIZE, strict=True)) if self.smoke else {}

    def predict_range(self) -> str:
        """The labelled images' index range (as a command-line value)."""
        return "[{}, {}]".format(*self.ranges["predict_range"])

    def run(self) -> dict[str, Any]:
        """Every step, then the tables; returns the results record."""
        start = time.perf_counter()
        self.adapt()
        for arm in ARMS:
            self.label(arm)
        students = {arm: {str(seed): self.student(arm, seed) for seed in self.seeds} for arm in ARMS}
        summary = {arm: {k: spread([row[k] for row in per_seed.values()]) for k in COLUMNS}
                   for arm, per_seed in students.items()}
        threshold_choice = self.range_fraction()
        labels = self.label_quality(threshold_choice["fraction"])
        teachers, per_image, by_depth = self.teacher_quality(), self.per_image(), self.by_depth()
        seconds = round(time.perf_counter() - start, 1)
        held_out, labelled = (stop - start for start, stop in (self.ranges["test_range"], self.ranges["predict_range"]))
        result = {
            "benchmark": "chain", "machine": MACHINE, "torch_threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat(), "smoke": self.smoke, "seeds": list(self.seeds),
            "students": students, "student_summary": summary, "verdict": verdict(summary),
            "labels": labels, "threshold_choice": threshold_choice, "teachers": teachers, "per_image": per_image,
            "labels_by_depth": by_depth,
            "held_out_images": held_out, "labelled_images": labelled, "adapted_checkpoint": str(self.adapted),
            "seconds_this_run": seconds, "seconds_by_step": self.seconds, "host_load_avg_by_step": self.load,
        }
        print(report(result))
        return result


def support_range(fraction: float) -> tuple[str, ...]:
    """The labeler's arguments of a residual threshold of ``fraction`` x each image's support range."""
    return ("--model.fit.residual_threshold", str(fraction), "--model.fit.threshold_unit", "support_range")


def verdict(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Whether student AbsRel ranks chained < dual_teacher < baseline with each gap above the seed spread: the
    gap of two means against the sum of their half spreads (their ranges do not overlap)."""
    out: dict[str, Any] = {}
    for better, worse in (("chained", "dual_teacher"), ("dual_teacher", "baseline")):
        a, b = summary[better]["abs_rel"], summary[worse]["abs_rel"]
        gap = round(b["mean"] - a["mean"], 4)
        out[f"{better}_vs_{worse}"] = {"gap": gap, "seed_spread": round(a["half_spread"] + b["half_spread"], 4),
                                       "holds": a["max"] < b["min"]}
    out["holds"] = all(v["holds"] for v in out.values())
    return out


def _table(rows: dict[str, dict[str, float]], columns: Sequence[str] = COLUMNS) -> list[str]:
    header = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    return [*header, *(f"| {name} | " + " | ".join(f"{row[k]:.4f}" if k in row else "-" for k in columns) + " |"
                       for name, row in rows.items())]


def report(result: dict[str, Any]) -> str:
    """Every figure of the run as text (what `make chain` prints; also the body of its RESULTS.md section)."""
    seeds = ", ".join(map(str, result["seeds"]))
    summary = {arm: {k: f"{v['mean']:.4f} ± {v['half_spread']:.4f}" for k, v in row.items()}
               for arm, row in result["student_summary"].items()}
    students = ["| | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    students += [f"| {arm} | " + " | ".join(row[k] for k in COLUMNS) + " |" for arm, row in summary.items()]
    per_seed = {f"{arm} seed {seed}": row for arm, rows in result["students"].items() for seed, row in rows.items()}
    gaps = [f"- {name.replace('_vs_', ' vs ')}: AbsRel gap {v['gap']:+.4f}, seed spread (sum of half spreads) "
            f"{v['seed_spread']:.4f}, ranges apart: {'yes' if v['holds'] else 'no'}"
            for name, v in result["verdict"].items() if name != "holds"]
    holds = "holds" if result["verdict"]["holds"] else "does NOT hold"
    per_image = result["per_image"]
    medians = ", ".join(f"{arm} {v:.4f}" for arm, v in per_image["abs_rel_median"].items())
    inliers = ", ".join(f"{arm} {mean:.4f} (min {per_image['inlier_ratio_min'][arm]:.4f})"
                        for arm, mean in per_image["inlier_ratio_mean"].items())
    methods, gains = table_2(result["labels"])
    choice = result["threshold_choice"]
    tried = ", ".join(f"{f}: {row['abs_rel']:.4f}" for f, row in choice["validation"].items())
    return "\n".join([
        f"Students on {result['held_out_images']} test images (mean ± half the spread over seeds {seeds}):", "",
        *students, "",
        f"Goal (AbsRel chained < dual_teacher < baseline, each gap above the seed spread): {holds}.", *gaps, "",
        "Per seed:", "", *_table(per_seed), "",
        f"Every labelling method against the ground truth of the {result['labelled_images']} labelled images "
        "(Table 2 of the dual-teacher paper on the target domain; baseline = the metric teacher; the least-squares "
        "rows do not depend on the threshold; inlier_ratio: mean over images of the fit's):", "",
        *_table(methods, TABLE_2_COLUMNS), "",
        "RANSAC against least squares (AbsRel of least squares minus RANSAC's; > 0: RANSAC's rejection helps):",
        *gains, "",
        f"The support_range fraction, chosen on the validation images (masked-RANSAC AbsRel, unadapted teacher): "
        f"{tried}; "
        f"chosen {choice['fraction']}.", "",
        f"Per labelled image ({per_image['images']} images): the chained label has the lower AbsRel than the "
        f"dual-teacher label on {per_image['chained_beats_dual_teacher_share']:.1%} of them; median per-image "
        f"AbsRel {medians}. RANSAC inlier ratio of the written labels, mean over images: {inliers}.", "",
        "Labels by true depth (median over the labelled images' pixels of label / truth; 1: right in scale):", "",
        *_table(result["labels_by_depth"], ("pixel_share", *ARMS)), "",
        "Teachers on the labelled images (relative: affine-invariant, per-image least squares to ground truth in "
        "disparity; metric: as is):", "", *_table(result["teachers"]), "",
    ])


TABLE_2_COLUMNS = (*COLUMNS, "inlier_ratio")


def table_2(labels: dict[str, dict[str, dict[str, dict[str, float]]]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Table 2's rows (label sets by method, teacher and threshold; least squares and the baseline once per teacher)
    and one line per teacher and threshold: how much RANSAC's rejection changes AbsRel against least squares."""
    first = next(iter(labels.values()))
    rows = {"baseline": next(iter(first.values()))["baseline"]}
    gains = []
    for teacher, variants in labels.items():
        least_squares = next(iter(variants.values()))  # the same fit at every threshold
        rows.update({f"{method} ({teacher})": {**least_squares[method], "inlier_ratio": 1.0}
                     for method in ("lstsq", "masked_lstsq")})
        for variant, methods in variants.items():
            rows.update({f"{method} ({teacher}, {variant})": methods[method] for method in ("ransac", "masked_ransac")})
            for masked in ("", "masked_"):
                lstsq, ransac = methods[f"{masked}lstsq"], methods[f"{masked}ransac"]
                gains.append(f"- {masked}ransac vs {masked}lstsq ({teacher} teacher, {variant}): "
                             f"{lstsq['abs_rel'] - ransac['abs_rel']:+.4f} (inlier ratio {ransac['inlier_ratio']:.4f})")
    return rows, gains


def markdown_section(result: dict[str, Any]) -> str:
    """The RESULTS.md section of a run: when and how it was measured, then ``report``."""
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds_by_step"].items())
    total = sum(result["seconds_by_step"].values()) / 60
    loads = result["host_load_avg_by_step"].values()
    return "\n".join([
        SECTION, "",
        f"Measured {result['date']} on a {result['machine']} machine, {result['torch_threads']} torch thread(s), "
        f"load average {min(loads):.1f}-{max(loads):.1f}, by `make chain` (`benchmarks/chain.py`; raw record: "
        f"`benchmarks/rows/chain.json`). Time of each step in the run that did it ({total:.0f} min in all): "
        f"{steps}.", "",
        report(result),
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
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="student seeds (default 0 1 2)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, results into the work folder only (the wiring test)")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    os.chdir(ROOT)  # the configs name the models and fragments relative to the repository
    result = Chain(workdir, args.smoke, args.seeds).run()
    record = json.dumps(result, indent=1) + "\n"
    with atomic_path(workdir / "chain.json" if args.smoke else ROWS) as tmp:
        tmp.write_text(record)
    if not args.smoke:
        update_results_md(ROOT / "benchmarks" / "RESULTS.md", markdown_section(result))
    return result


if __name__ == "__main__":
    main()
