"""What a prediction writer refuses to write as if it were good: non-finite outputs, fallback fits, impossible
cameras; and a run that writes nothing is an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader

from datamodules.base import collate_samples
from depthadapt.io import MANIFEST_NAME, check_intrinsics, depth_to_points, make_intrinsics
from lightning_modules import DepthMapWriter
from lightning_modules.base import DepthTask

H, W = 6, 8


class FixedOutputs(DepthTask):
    """Predicts the given depth maps (and fit records) by image name, whatever the image."""

    def __init__(self, outputs: dict[str, torch.Tensor], kind: str = "metric",
                 records: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.outputs, self.kind, self.records = outputs, kind, records

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        prediction = {"name": batch["name"], "kind": self.kind,
                      "depth": torch.stack([self.outputs[n] for n in batch["name"]])}
        if self.records is not None:
            prediction["records"] = [self.records[n] for n in batch["name"]]
        return prediction


def predict(tmp_path: Path, module: DepthTask, names: list[str], **writer: Any) -> DepthMapWriter:
    samples = [{"image": torch.rand(3, H, W), "name": name, "index": i} for i, name in enumerate(names)]
    callback = DepthMapWriter(output_dir=str(tmp_path / "out"), **writer)
    trainer = Trainer(logger=False, callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu")
    trainer.predict(module, DataLoader(samples, batch_size=2, collate_fn=collate_samples))
    return callback


@pytest.mark.integration
def test_non_finite_outputs_are_named_counted_and_not_written(tmp_path: Path, caplog) -> None:
    good = torch.full((H, W), 3.0)
    partly = good.clone()
    partly[0, 0] = float("inf")
    outputs = {"nan": torch.full((H, W), float("nan")), "good": good, "partly": partly}
    with caplog.at_level(logging.INFO):
        writer = predict(tmp_path, FixedOutputs(outputs), ["nan", "good", "partly"], formats=["npy", "png16", "color"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "good.npy", "good.png", "good_color.png"])
    assert writer.written == 1 and [name for name, _ in writer.skipped] == ["nan", "partly"]
    assert "nan: not written: the model's output has 48 non-finite values (NaN or inf) of 48" in caplog.text
    assert "partly: not written: the model's output has 1 non-finite values" in caplog.text
    assert "wrote 1 items" in caplog.text and "DepthMapWriter skipped 2 items: nan (the model" in caplog.text


@pytest.mark.integration
def test_a_run_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    outputs = {"a": torch.full((H, W), float("nan")), "b": torch.full((H, W), float("nan"))}
    with pytest.raises(ValueError, match=r"DepthMapWriter wrote nothing to .*out: 2 items skipped: a \(the model"):
        predict(tmp_path, FixedOutputs(outputs, kind="relative"), ["a", "b"])


@pytest.mark.integration
def test_fallback_fits_are_skipped_or_written_with_a_sidecar(tmp_path: Path, caplog) -> None:
    outputs = {"fitted": torch.full((H, W), 2.0), "one_point": torch.full((H, W), 5.0)}
    records = {"fitted": {"scale": 0.5, "shift": 0.1, "points": 30, "inliers": 29, "fallback": False},
               "one_point": {"scale": 1.0, "shift": 0.0, "points": 1, "inliers": 0, "fallback": True}}
    with caplog.at_level(logging.WARNING):
        writer = predict(tmp_path / "skip", FixedOutputs(outputs, records=records), ["fitted", "one_point"],
                         formats=["npy"])
    assert sorted(p.name for p in (tmp_path / "skip" / "out").iterdir()) == [MANIFEST_NAME, "fitted.npy"]
    assert writer.skipped == [("one_point", writer.skipped[0][1])] and "fallback fit" in writer.skipped[0][1]
    assert "one_point: not written: fallback fit, its depth is not metric (1 points" in caplog.text

    predict(tmp_path / "write", FixedOutputs(outputs, records=records), ["fitted", "one_point"], formats=["npy"],
            write_fallbacks=True)
    out = tmp_path / "write" / "out"
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "fitted.npy", "one_point.json", "one_point.npy"]
    assert json.loads((out / "one_point.json").read_text()) == records["one_point"]


@pytest.mark.unit
@pytest.mark.parametrize("camera", [dict(intrinsics=[0, 200, 3.5, 2.5]), dict(intrinsics=[200, -1, 3.5, 2.5]),
                                    dict(intrinsics=[200, 200, float("nan"), 2.5]), dict(intrinsics=[200, 200, 3]),
                                    dict(focal_length=0.0), dict(focal_length=-300.0),
                                    dict(focal_length=float("inf"))])
def test_an_impossible_camera_is_refused_when_the_writer_is_built(tmp_path: Path, camera: dict) -> None:
    with pytest.raises(ValueError, match="DepthMapWriter.(intrinsics|focal_length) must be"):
        DepthMapWriter(output_dir=str(tmp_path), formats=["ply"], **camera)
    assert not tmp_path.joinpath(MANIFEST_NAME).exists()


@pytest.mark.unit
def test_a_samples_impossible_camera_is_an_error_naming_it(tmp_path: Path) -> None:
    writer = DepthMapWriter(output_dir=str(tmp_path), formats=["ply"])
    item = {"depth": torch.full((H, W), 2.0), "kind": "metric", "intrinsics": torch.tensor([0.0, 100.0, 3.5, 2.5])}
    with pytest.raises(ValueError, match=r"the intrinsics of sample a/b.png must be \[fx, fy, cx, cy\]"):
        writer.write("a/b.png", item)
    assert not (tmp_path / "a" / "b.ply").exists()


@pytest.mark.unit
def test_point_cloud_functions_check_the_camera() -> None:
    depth = torch.full((H, W), 2.0)
    for bad in ([0.0, 100.0, 3.0, 2.0], [100.0, 100.0, float("inf"), 2.0]):
        with pytest.raises(ValueError, match="intrinsics must be"):
            depth_to_points(depth, bad)
    with pytest.raises(ValueError, match="fx, fy > 0"):
        make_intrinsics(H, W, focal=-5.0)
    points, _ = depth_to_points(depth, make_intrinsics(H, W, focal=100.0))
    assert np.isfinite(points.numpy()).all() and len(points) == H * W
    assert check_intrinsics([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
