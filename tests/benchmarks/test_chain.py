"""The chained pipeline's driver (benchmarks/chain.py, `make chain`) on tiny sizes: its wiring, provenance, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import chain
from depthadapt.io import MANIFEST_NAME, file_sha256, read_depth
from depthadapt.models import build_depth_model
from depthadapt.pseudo_labels import METHODS

pytestmark = pytest.mark.integration
slow = pytest.mark.slow  # the smoke chain: 80 s; runs in make test-all

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "checkpoints/tiny_foundation_140.pth"
SEEDS = ("0", "1")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One smoke run of the whole chain in a temporary work folder: (work folder, results record)."""
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("chain")
    return work, chain.main(["--smoke", "--workdir", str(work), "--seeds", *SEEDS])


def sidecars(folder: Path) -> dict[str, dict]:
    """The label sidecars of a label folder by image name."""
    return {p.relative_to(folder).with_suffix("").as_posix(): json.loads(p.read_text())
            for p in folder.rglob("*.json") if p.name != MANIFEST_NAME}


def finite(row: dict[str, float], columns: tuple[str, ...] = chain.COLUMNS) -> bool:
    """Whether ``row`` has exactly ``columns``, each finite."""
    return set(row) == set(columns) and all(math.isfinite(v) for v in row.values())


@slow
def test_every_table_has_finite_scores(smoke) -> None:
    work, result = smoke
    assert list(result["students"]) == list(chain.ARMS)
    assert all(list(per_seed) == list(SEEDS) and all(map(finite, per_seed.values()))
               for per_seed in result["students"].values())
    for arm, summary in result["student_summary"].items():
        values = [row["abs_rel"] for row in result["students"][arm].values()]
        assert summary["abs_rel"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
        assert summary["abs_rel"]["half_spread"] == pytest.approx(abs(values[0] - values[1]) / 2, abs=1e-4)
    assert list(result["labels"]) == ["source", "adapted"]
    fraction = result["threshold_choice"]["fraction"]
    assert fraction in chain.RANGE_FRACTIONS and set(result["threshold_choice"]["validation"]) == {
        str(f) for f in chain.RANGE_FRACTIONS}
    assert all(list(variants) == ["absolute 0.1", "mad", f"support_range {fraction}"]
               for variants in result["labels"].values())
    for variants in result["labels"].values():
        for methods in variants.values():
            assert list(methods) == list(METHODS) and finite(methods["baseline"])
            assert all(finite(methods[m], (*chain.COLUMNS, "inlier_ratio")) for m in METHODS[1:])
            assert methods["lstsq"]["inlier_ratio"] == methods["masked_lstsq"]["inlier_ratio"] == 1.0
            assert 0 < methods["masked_ransac"]["inlier_ratio"] <= 1
    assert list(result["teachers"]) == ["relative_source", "relative_adapted", "metric"]
    assert all(map(finite, result["teachers"].values()))
    per_image = result["per_image"]
    assert per_image["images"] == 8 and 0 <= per_image["chained_beats_dual_teacher_share"] <= 1
    assert list(per_image["inlier_ratio_mean"]) == ["dual_teacher", "chained"]
    assert result["held_out_images"] == 4 and result["labelled_images"] == 8
    bands = result["labels_by_depth"]
    assert len(bands) == len(chain.DEPTH_BANDS) - 1 and sum(b["pixel_share"] for b in bands.values()) == (
        pytest.approx(1, abs=1e-3))
    assert all(set(b) == {"pixel_share", *chain.ARMS} for b in bands.values())
    assert json.loads((work / "chain.json").read_text())["students"] == result["students"]


@slow
def test_the_report_prints_every_figure_of_the_record(smoke) -> None:
    _, result = smoke
    text = chain.report(result)
    for arm, summary in result["student_summary"].items():
        cells = " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['half_spread']:.4f}" for k in chain.COLUMNS)
        assert f"| {arm} | {cells} |" in text
    per_image = result["per_image"]
    assert f"{per_image['chained_beats_dual_teacher_share']:.1%}" in text
    assert all(f"{arm} {v:.4f}" in text for arm, v in per_image["abs_rel_median"].items())
    assert all(f"{arm} {v:.4f}" in text for arm, v in per_image["inlier_ratio_mean"].items())
    for variant, methods in result["labels"]["adapted"].items():
        row = methods["masked_ransac"]
        assert f"| masked_ransac (adapted, {variant}) | {row['d1']:.4f}" in text
        assert f"{row['inlier_ratio']:.4f}" in text
        gain = methods["masked_lstsq"]["abs_rel"] - row["abs_rel"]
        assert f"masked_ransac vs masked_lstsq (adapted teacher, {variant}): {gain:+.4f}" in text
    assert all(f"| {name} | {row['d1']:.4f}" in text for name, row in result["teachers"].items())
    assert all(f"| {band} | {row['pixel_share']:.4f} | {row['baseline']:.4f}" in text
               for band, row in result["labels_by_depth"].items())
    assert "docs/chain.md" not in chain.markdown_section({**result, "seconds_by_step": {"a": 1.0},
                                                          "host_load_avg_by_step": {"a": 1.0}})


def test_the_verdict_needs_each_gap_beyond_the_seed_ranges() -> None:
    def summary(chained: list[float], dual: list[float], baseline: list[float]) -> dict:
        return {arm: {"abs_rel": chain.spread(values)} for arm, values in
                (("chained", chained), ("dual_teacher", dual), ("baseline", baseline))}

    holds = chain.verdict(summary([0.20, 0.22], [0.25, 0.26], [0.30, 0.31]))
    assert holds["holds"] and holds["chained_vs_dual_teacher"]["gap"] == pytest.approx(0.045)
    assert holds["chained_vs_dual_teacher"]["seed_spread"] == pytest.approx(0.015)
    overlapping = chain.verdict(summary([0.20, 0.26], [0.25, 0.27], [0.30, 0.31]))
    assert not overlapping["holds"] and not overlapping["chained_vs_dual_teacher"]["holds"]
    assert overlapping["dual_teacher_vs_baseline"]["holds"]
    reversed_order = chain.verdict(summary([0.30, 0.31], [0.25, 0.26], [0.20, 0.22]))
    assert not reversed_order["dual_teacher_vs_baseline"]["holds"] and reversed_order["chained_vs_dual_teacher"][
        "gap"] == pytest.approx(-0.05)


@slow
def test_chained_labels_come_from_the_adapted_teacher(smoke) -> None:
    work, _ = smoke
    adapted = work / "westar" / "checkpoints" / "adapted_model.pth"
    labels = {arm: sidecars(work / "labels" / arm) for arm in chain.ARMS}
    assert all(len(per_image) == 8 for per_image in labels.values())
    assert {r["relative_checkpoint"] for r in labels["chained"].values()} == {str(adapted)}
    assert {r["relative_checkpoint"] for r in labels["dual_teacher"].values()} == {SOURCE}
    assert {r["method"] for r in labels["dual_teacher"].values()} == {"masked_ransac"}
    assert {r["method"] for r in labels["baseline"].values()} == {"baseline"}
    manifest = json.loads((work / "labels" / "chained" / MANIFEST_NAME).read_text())
    assert manifest["relative"]["checkpoint_sha256"] == file_sha256(adapted)


@slow
def test_adaptation_changed_the_teacher_and_its_labels(smoke) -> None:
    work, _ = smoke
    adapted = build_depth_model("vitt", checkpoint=work / "westar" / "checkpoints" / "adapted_model.pth")
    source = build_depth_model("vitt", checkpoint=ROOT / SOURCE)
    adapted_state, source_state = adapted.state_dict(), source.state_dict()
    assert adapted_state.keys() == source_state.keys()
    assert any(not torch.equal(adapted_state[k], source_state[k].to(adapted_state[k].dtype)) for k in source_state)
    name = next(iter(sidecars(work / "labels" / "chained")))
    chained, dual = (read_depth(work / "labels" / arm / f"{name}.png", 1 / 256) for arm in ("chained", "dual_teacher"))
    assert chained.shape == dual.shape == (28, 84)
    assert not np.array_equal(chained, dual)


@slow
def test_rerun_skips_finished_steps(smoke) -> None:
    work, result = smoke
    finished = [work / "westar" / "checkpoints" / "adapted_model.pth", *(work / "labels").rglob("*.json"),
                *(work / "students" / arm / f"seed{seed}" / "checkpoints" / "last.ckpt"
                  for arm in chain.ARMS for seed in SEEDS)]
    before = {path: path.stat().st_mtime_ns for path in finished}
    times = (work / "seconds.json").read_text()
    again = chain.main(["--smoke", "--workdir", str(work), "--seeds", *SEEDS])
    assert (work / "seconds.json").read_text() == times  # no step timed again: none did any work
    assert again["students"] == result["students"] and again["labels"] == result["labels"]
    assert {path: path.stat().st_mtime_ns for path in finished} == before  # nothing adapted, labelled or trained again


@pytest.mark.parametrize("smoke_size", [True, False], ids=["smoke", "full"])
def test_labelled_images_are_the_labelers_images_with_ground_truth(tmp_path: Path, smoke_size: bool) -> None:
    """The per-image and by-depth steps read the fragment's datamodule directly (not through the CLI)."""
    dataset = chain.Chain(tmp_path, smoke=smoke_size).labelled_images()
    start, stop = (chain.SMOKE_RANGES if smoke_size else chain.DATA_RANGES)["predict_range"]
    assert len(dataset) == stop - start
    if smoke_size:  # rendering one full-size scene is the slow part
        sample = dataset[0]
        assert sample["depth"].shape == chain.SMOKE_SIZE and bool(sample["valid"].any())


def test_results_section_is_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## GPU\n\ngpu text\n")
    chain.update_results_md(path, f"{chain.SECTION}\n\nfirst")
    path.write_text(path.read_text() + "\n## Later section\n\nlater text\n")
    chain.update_results_md(path, f"{chain.SECTION}\n\nsecond")
    text = path.read_text()
    assert text.count(chain.SECTION) == 1 and "second" in text and "first" not in text
    assert text.index("## GPU") < text.index(chain.SECTION) < text.index("## Later section")
    assert "gpu text" in text and "later text" in text
