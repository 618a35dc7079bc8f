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

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "checkpoints/tiny_relative_street.pth"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One smoke run of the whole chain in a temporary work folder: (work folder, results record)."""
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("chain")
    return work, chain.main(["--smoke", "--workdir", str(work)])


def sidecars(folder: Path) -> dict[str, dict]:
    """The label sidecars of a label folder by image name."""
    return {p.relative_to(folder).with_suffix("").as_posix(): json.loads(p.read_text())
            for p in folder.rglob("*.json") if p.name != MANIFEST_NAME}


def test_three_rows_of_finite_scores(smoke) -> None:
    work, result = smoke
    for table in ("students", "labels"):
        assert list(result[table]) == list(chain.ARMS), table
        for arm, row in result[table].items():
            assert set(row) == set(chain.COLUMNS) and all(math.isfinite(v) for v in row.values()), (table, arm)
    assert list(result["relative_teachers"]) == ["source", "adapted"]
    assert result["held_out_images"] == 4 and result["labelled_images"] == 8
    assert json.loads((work / "chain.json").read_text())["students"] == result["students"]


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


def test_rerun_skips_finished_steps(smoke) -> None:
    work, result = smoke
    finished = [work / "westar" / "checkpoints" / "adapted_model.pth", *(work / "labels").rglob("*.json"),
                *(work / "students" / arm / "checkpoints" / "last.ckpt" for arm in chain.ARMS)]
    before = {path: path.stat().st_mtime_ns for path in finished}
    times = (work / "seconds.json").read_text()
    again = chain.main(["--smoke", "--workdir", str(work)])
    assert (work / "seconds.json").read_text() == times  # no step timed again: none did any work
    assert again["students"] == result["students"] and again["labels"] == result["labels"]
    assert {path: path.stat().st_mtime_ns for path in finished} == before  # nothing adapted, labelled or trained again


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
