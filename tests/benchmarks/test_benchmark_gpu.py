"""`benchmarks/gpu.py --smoke`: every GPU benchmark's code path on the CPU at tiny sizes, and its two outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu

pytestmark = pytest.mark.integration


def test_smoke_run_writes_every_row_kind_and_replaces_its_results_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    old_section = f"{gpu.BEGIN}\nan older GPU section\n{gpu.END}"
    results.write_text(f"# Benchmark results\n\nkept above\n\n{old_section}\n\nkept below\n")
    rows = gpu.main(["--smoke", "--json", str(tmp_path / "gpu.json"), "--results", str(results)])
    assert json.loads((tmp_path / "gpu.json").read_text()) == json.loads(json.dumps(rows))
    kinds = {row.get("benchmark") for row in rows}
    assert {"gpu_inference", "gpu_westar_step", "gpu_pseudo_label", "ransac_speed", "corruption_speed"} <= kinds
    inference = next(r for r in rows if r["benchmark"] == "gpu_inference")
    assert inference["ours_bf16_images_per_s"] > 0 and inference["official_fp32_images_per_s"] > 0
    steps = [r for r in rows if r["benchmark"] == "gpu_westar_step"]
    assert sorted(r["checkpointing"] for r in steps) == [False, True] and all(r["images_per_s"] > 0 for r in steps)
    labeller = next(r for r in rows if r["benchmark"] == "gpu_pseudo_label")
    assert labeller["written"] == labeller["images"] > 0
    assert {r.get("backend") for r in rows if r["benchmark"] == "ransac_speed"} >= {"sklearn", "torch"}
    text = results.read_text()
    assert "an older GPU section" not in text and "kept above" in text and "kept below" in text
    section = text[text.index(gpu.BEGIN): text.index(gpu.END)]
    for label in ("| inference |", "| WeSTAR step |", "| pseudo-labeller |", "| RANSAC mild_outliers |",
                  "| corruptions |"):
        assert label in section, label
