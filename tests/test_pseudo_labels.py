"""Dual-teacher pseudo-labels: the label maths, the writer, the CLI jobs (1 and 2 processes), the method's gain."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from depthadapt.alignment import ScaleShiftFitOptions
from depthadapt.io import MANIFEST_NAME, read_depth, read_image
from depthadapt.pseudo_labels import METHODS, TABLE_COLUMNS, metric_pseudo_labels
from lightning_modules.writers import PseudoLabelWriter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "configs" / "pseudo_label_tiny.yaml")
FITTED = ("lstsq", "masked_lstsq", "ransac", "masked_ransac")


def scene(batch: int = 2, height: int = 24, width: int = 40) -> torch.Tensor:
    """Metric depth B x H x W in 2..40 m: a ground plane receding upwards plus a box, different per image."""
    rows = torch.linspace(0, 1, height)[:, None].expand(height, width)
    depth = torch.stack([2 + 38 * (1 - rows) ** 2 * (1 - 0.2 * b) for b in range(batch)])
    depth[:, 5:12, 10:20] = 7.0
    return depth.clamp(2.0, 40.0)


def relative_for(depth: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, fit_space: str) -> torch.Tensor:
    """The relative map that the fit ``scale * relative + shift`` maps exactly onto depth in ``fit_space``."""
    target = 1.0 / depth if fit_space == "disparity" else depth
    return (target - shift[:, None, None]) / scale[:, None, None]


@pytest.mark.parametrize("fit_space", ["disparity", "depth"])
@pytest.mark.parametrize("method", FITTED)
def test_known_scale_and_shift_are_recovered(method: str, fit_space: str) -> None:
    depth = scene()
    scale, shift = torch.tensor([0.5, 3.0]), torch.tensor([0.01, -0.02])
    relative = relative_for(depth, scale, shift, fit_space)
    labels = metric_pseudo_labels(relative, depth, method=method, fit_space=fit_space, min_samples=10)
    torch.testing.assert_close(labels.fit.scale, scale, rtol=1e-4, atol=0)
    torch.testing.assert_close(labels.fit.shift, shift, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(labels.depth, depth, rtol=1e-4, atol=0)
    assert not labels.fit.fallback.any()
    records = labels.records()
    assert [r["method"] for r in records] == [method] * 2 and records[0]["fit_space"] == fit_space
    assert records[1]["scale"] == pytest.approx(3.0, rel=1e-4) and records[1]["fallback"] is False


@pytest.mark.parametrize("fit_space", ["disparity", "depth"])
def test_ransac_ignores_a_wrong_metric_teacher_where_least_squares_does_not(fit_space: str) -> None:
    depth = scene(batch=1)
    scale, shift = torch.tensor([2.0]), torch.tensor([0.005])
    relative = relative_for(depth, scale, shift, fit_space)
    wrong = torch.rand(depth.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    metric = torch.where(wrong, depth * 2.0, depth)  # the metric teacher off by 2x on 20 % of the pixels
    threshold = 0.005 if fit_space == "disparity" else 0.5  # below the outliers' residuals in either space
    kwargs = dict(fit_space=fit_space, min_samples=10, residual_threshold=threshold)
    ransac = metric_pseudo_labels(relative, metric, method="ransac", **kwargs)
    lstsq = metric_pseudo_labels(relative, metric, method="lstsq", **kwargs)
    torch.testing.assert_close(ransac.depth, depth, rtol=1e-4, atol=0)
    assert ransac.fit.inlier_ratio.item() == pytest.approx(1 - wrong.float().mean().item(), abs=1e-6)
    assert (lstsq.depth - depth).abs().max() > 1.0


@pytest.mark.parametrize("fit_space", ["disparity", "depth"])
def test_masked_ransac_is_ransac_on_the_support_points_not_least_squares(fit_space: str) -> None:
    depth = scene(batch=2)
    scale, shift = torch.tensor([2.0, 0.7]), torch.tensor([0.005, 0.02])
    relative = relative_for(depth, scale, shift, fit_space)
    wrong = torch.rand(depth.shape, generator=torch.Generator().manual_seed(2)) < 0.15
    metric = torch.where(wrong, depth * 2.0, depth)
    threshold = 0.005 if fit_space == "disparity" else 0.5
    options = ScaleShiftFitOptions(min_samples=10, residual_threshold=threshold, seed=1)
    ransac = metric_pseudo_labels(relative, metric, method="masked_ransac", fit_space=fit_space, options=options)
    lstsq = metric_pseudo_labels(relative, metric, method="masked_lstsq", fit_space=fit_space, options=options)
    torch.testing.assert_close(ransac.depth, depth, rtol=1e-4, atol=0)
    assert (lstsq.depth - depth).abs().max() > 1.0
    support = metric_pseudo_labels(relative, metric, method="masked_lstsq", fit_space=fit_space).fit.inliers
    assert not (ransac.fit.inliers & ~support).any() and not (ransac.fit.inliers & wrong).any()
    assert torch.equal(ransac.fit.inliers, support & ~wrong)
    assert ransac.fit.trials.gt(0).all() and lstsq.fit.trials.eq(0).all()
    keywords = metric_pseudo_labels(relative, metric, method="masked_ransac", fit_space=fit_space, min_samples=10,
                                    residual_threshold=threshold, seed=1)
    assert torch.equal(keywords.depth, ransac.depth) and torch.equal(keywords.confidence, ransac.confidence)


def test_support_points_are_the_metric_depth_extremes_in_both_spaces() -> None:
    metric = torch.exp(torch.randn(2, 30, 50, generator=torch.Generator().manual_seed(1))) * 10
    relative = 1.0 / metric
    flat = metric.flatten(1)
    low, high = torch.quantile(flat, 0.1, dim=1), torch.quantile(flat, 0.9, dim=1)
    expected = (metric < low[:, None, None]) | (metric > high[:, None, None])
    for fit_space in ("disparity", "depth"):
        fit = metric_pseudo_labels(relative, metric, method="masked_lstsq", fit_space=fit_space).fit
        assert torch.equal(fit.inliers, expected), fit_space
        assert fit.support_count.tolist() == expected.flatten(1).sum(1).tolist()


def test_invalid_pixels_get_zero_and_labels_stay_within_max_depth() -> None:
    depth = scene(batch=1)
    scale, shift = torch.tensor([1.0]), torch.tensor([0.0])
    relative = relative_for(depth, scale, shift, "disparity")
    # Pixels at the median depth are outside the support: they do not move the masked fit.
    median = (depth - depth.median()).abs() < 2.0
    ys, xs = median[0].nonzero(as_tuple=True)
    relative[0, ys[0], xs[0]] = -1.0  # calibrated disparity < 0: no depth
    relative[0, ys[1], xs[1]] = 1e-4  # calibrated disparity tiny: beyond max_depth
    relative[0, ys[2], xs[2]] = math.nan
    metric = depth.clone()
    metric[0, 0, 0] = 0.0
    metric[0, 0, 1] = math.inf
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[0, -1, -1] = False
    for method in ("baseline", "masked_lstsq"):
        labels = metric_pseudo_labels(relative, metric, valid, method=method, max_depth=30.0)
        assert labels.depth[0, 0, 0] == 0 and labels.depth[0, 0, 1] == 0 and labels.depth[0, -1, -1] == 0
        assert labels.confidence[0, -1, -1] == 0 and labels.depth.max() <= 30.0
        assert torch.isfinite(labels.depth).all() and (labels.depth >= 0).all()
        if method == "masked_lstsq":
            assert labels.depth[0, ys[0], xs[0]] == 0 and labels.depth[0, ys[2], xs[2]] == 0
            assert labels.depth[0, ys[1], xs[1]] == 30.0
            assert labels.fit.scale.item() == pytest.approx(1.0, rel=1e-4)
    baseline = metric_pseudo_labels(relative, metric, valid, method="baseline", max_depth=30.0)
    assert baseline.fit is None and baseline.records()[0]["scale"] is None
    assert baseline.records()[0]["method"] == "baseline"
    finite = torch.isfinite(relative) & torch.isfinite(metric) & (metric > 0) & valid
    torch.testing.assert_close(baseline.depth[finite], depth[finite].clamp_max(30.0))


def test_confidence_falls_with_the_residual() -> None:
    depth = torch.linspace(2, 60, 400).reshape(1, 20, 20)
    relative = 1.0 / depth  # exact in disparity space with scale 1, shift 0
    middle = ((depth > 20) & (depth < 30)).nonzero(as_tuple=True)  # inside p10..p90: outside the support
    errors = torch.linspace(0, 0.3, middle[0].numel())
    relative[middle] += errors
    labels = metric_pseudo_labels(relative, depth, method="masked_lstsq", residual_threshold=0.1)
    confidence = labels.confidence[middle]
    assert confidence[0] == pytest.approx(1.0)
    assert (confidence.diff() < 0).all()
    torch.testing.assert_close(confidence, torch.exp(-0.5 * (errors / 0.1) ** 2), rtol=1e-4, atol=1e-6)
    assert (labels.confidence[~labels.fit.inliers & (depth < 20)] == 1).all()  # the rest: exact, residual 0


def test_bad_options_name_the_argument() -> None:
    depth = scene()
    with pytest.raises(ValueError, match="method must be one of"):
        metric_pseudo_labels(depth, depth, method="ransac_masked")
    with pytest.raises(ValueError, match="fit_space must be one of"):
        metric_pseudo_labels(depth, depth, fit_space="log")
    with pytest.raises(ValueError, match="support is set by method"):
        metric_pseudo_labels(depth, depth, support="all")
    with pytest.raises(ValueError, match="max_trials must be an int >= 1"):
        metric_pseudo_labels(depth, depth, max_trials=0)


def fake_prediction(names: list[str]) -> tuple[dict, dict]:
    """A predict_step output and its batch for images of 12 x 20, depth 0 (invalid) to 80 m."""
    count = len(names)
    depth = torch.linspace(0, 80, count * 240).reshape(count, 12, 20)
    records = [{"method": "masked_ransac", "fit_space": "disparity", "scale": 0.5 + i, "shift": 0.01,
                "inlier_ratio": 0.9, "support_count": 48, "fallback": i == 1,
                "relative_checkpoint": "rel.pth", "metric_checkpoint": "met.pth"} for i in range(count)]
    prediction = {"name": names, "kind": "metric", "depth": depth, "confidence": torch.rand(count, 12, 20),
                  "records": records}
    batch = {"name": list(names), "image": torch.rand(count, 3, 12, 20), "index": torch.arange(count),
             "skipped": []}
    return prediction, batch


def test_writer_round_trips_labels_sidecars_confidence_and_images(tmp_path: Path) -> None:
    writer = PseudoLabelWriter(str(tmp_path / "labels"), image_dir=str(tmp_path / "images"))
    names = ["a/one.png", "a/b/two.jpg"]
    prediction, batch = fake_prediction(names)
    writer.write_on_batch_end(None, None, prediction, None, batch, 0)
    for i, stem in enumerate(["a/one", "a/b/two"]):
        label = read_depth(tmp_path / "labels" / f"{stem}.png", 1 / 256)
        expected = prediction["depth"][i].numpy()
        np.testing.assert_allclose(label, expected, atol=0.5 / 256 + 1e-6)
        assert (label[expected < 0.5 / 256] == 0).all() and (label[expected >= 0.5 / 256] > 0).all()
        confidence = read_depth(tmp_path / "labels" / f"{stem}_confidence.png", 1 / 65535)
        np.testing.assert_allclose(confidence, prediction["confidence"][i].numpy(), atol=0.5 / 65535 + 1e-6)
        sidecar = json.loads((tmp_path / "labels" / f"{stem}.json").read_text())
        assert sidecar == prediction["records"][i]
        rgb = read_image(tmp_path / "images" / f"{stem}.png")
        expected_rgb = (batch["image"][i].permute(1, 2, 0) * 255).round().byte().numpy()
        np.testing.assert_array_equal(rgb, expected_rgb)
        assert writer.is_done(names[i])
    assert writer.written == 2 and writer.fallbacks == 1
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_writer_failure_leaves_the_image_undone_and_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    writer = PseudoLabelWriter(str(tmp_path / "labels"))
    prediction, batch = fake_prediction(["one", "two"])

    def fail_on_confidence(path, values, scale):
        if scale != 256.0:
            raise OSError("disk full")
        return write_png(path, values, scale)

    import lightning_modules.writers as module

    write_png = module.write_depth_png16
    monkeypatch.setattr(module, "write_depth_png16", fail_on_confidence)
    with pytest.raises(OSError, match="disk full"):
        writer.write_on_batch_end(None, None, prediction, None, batch, 0)
    assert not writer.is_done("one") and not (tmp_path / "labels" / "one.json").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_writer_drops_done_images_from_the_batch_before_the_teachers_run(tmp_path: Path) -> None:
    writer = PseudoLabelWriter(str(tmp_path / "labels"))
    prediction, batch = fake_prediction(["x/0", "x/1", "x/2"])
    one = {k: v if k == "kind" else v[1:2] if k != "confidence" else None for k, v in prediction.items()}
    writer.write_on_batch_end(None, None, one, None, batch, 0)
    writer.on_predict_batch_start(None, None, batch, 0)
    assert batch["name"] == ["x/0", "x/2"] and batch["index"].tolist() == [0, 2]
    assert batch["image"].shape[0] == 2 and writer.already_done == 1
    writer.on_predict_batch_start(None, None, batch, 1)  # nothing done among these: unchanged
    assert batch["name"] == ["x/0", "x/2"] and writer.already_done == 1
    done = {"name": ["x/1"], "image": torch.rand(1, 3, 4, 4), "skipped": [("bad.png", "unreadable")]}
    writer.on_predict_batch_start(None, None, done, 2)
    assert done == {"skipped": [("bad.png", "unreadable")], "name": []}


def label_names(output: Path) -> list[str]:
    """The images with a sidecar (the folder's manifest is not one)."""
    sidecars = [p for p in output.rglob("*.json") if p.name != MANIFEST_NAME]
    return sorted(p.relative_to(output).with_suffix("").as_posix() for p in sidecars)


def test_cli_predict_writes_every_image_and_resumes(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(ROOT)
    output, images = tmp_path / "labels", tmp_path / "images"
    args = ["predict", "--config", TINY, "--trainer.callbacks.init_args.output_dir", str(output),
            "--trainer.callbacks.init_args.image_dir", str(images)]
    with caplog.at_level(logging.INFO):
        run = cli.main(args)
    assert run.trainer.predict_loop.predictions == []  # written, not accumulated in memory
    names = [f"street/source/{i:06d}" for i in range(4000, 4006)]
    assert label_names(output) == names
    for name in names:
        sidecar = json.loads((output / f"{name}.json").read_text())
        assert sidecar["method"] == "masked_ransac" and sidecar["fit_space"] == "disparity"
        assert sidecar["metric_checkpoint"] == "checkpoints/tiny_metric_street.pth"
        assert 0 < sidecar["inlier_ratio"] <= 1 and sidecar["support_count"] > 50 and sidecar["fallback"] is False
        label = read_depth(output / f"{name}.png", 1 / 256)
        assert label.shape == (56, 182) and 1.0 < np.median(label) < 80.0
        assert (output / f"{name}_confidence.png").is_file() and (images / f"{name}.png").is_file()
    assert "PseudoLabelWriter wrote 6 items" in caplog.text

    (output / f"{names[2]}.json").unlink()
    kept = output / f"{names[4]}.png"
    stamp = kept.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cli.main(args)
    assert label_names(output) == names and kept.stat().st_mtime_ns == stamp
    assert "PseudoLabelWriter wrote 1 items" in caplog.text and "(5 already done)" in caplog.text


@pytest.mark.slow  # default suite under 10 minutes: runs in make test-all
def test_two_processes_write_every_image_exactly_once(tmp_path: Path) -> None:
    output = tmp_path / "labels"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "cli.py", "predict", "--config", TINY, "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--data.test_range", "[4000, 4011]", "--trainer.callbacks.init_args.output_dir", str(output),
         "--trainer.callbacks.init_args.image_dir", "null"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = re.findall(r"rank (\d): PseudoLabelWriter wrote (\d+) items", result.stderr)
    assert sorted(rank for rank, _ in counts) == ["0", "1"], result.stderr[-3000:]
    assert [int(n) for _, n in sorted(counts)] == [6, 5]  # 11 images: shards of 6 and 5, none padded
    assert label_names(output) == [f"street/source/{i:06d}" for i in range(4000, 4011)]
    assert len(list(output.rglob("*.png"))) == 2 * 11  # labels and confidence maps, nothing else


def test_cli_test_prints_table_2_and_masked_ransac_beats_the_metric_teacher(monkeypatch, capsys) -> None:
    """The shipped config on 16 unseen street images; measured AbsRel: baseline 0.287, masked RANSAC 0.204."""
    monkeypatch.chdir(ROOT)
    run = cli.main(["test", "--config", "config_yaml/pseudo_label.yaml", "--data.test_range", "[4000, 4016]",
                    "--data.num_workers", "0"])
    lines = capsys.readouterr().out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("pseudo-labels against ground truth"))
    assert "disparity fit space, 16 images" in lines[title]
    assert lines[title + 1].split() == [*TABLE_COLUMNS, "inlier_ratio", "skipped"]
    assert [line.split()[0] for line in lines[title + 2 : title + 7]] == list(METHODS)
    abs_rel = {m: run.trainer.callback_metrics[f"test/{m}/abs_rel"].item() for m in METHODS}
    inliers = {m: run.trainer.callback_metrics[f"test/{m}/inlier_ratio"].item() for m in METHODS[1:]}
    assert "test/baseline/inlier_ratio" not in run.trainer.callback_metrics and lines[title + 2].split()[7] == "nan"
    assert inliers["lstsq"] == inliers["masked_lstsq"] == 1.0 and 0.5 < inliers["masked_ransac"] <= 1.0, inliers
    assert abs_rel["masked_ransac"] < 0.85 * abs_rel["baseline"], abs_rel
    assert abs_rel["masked_ransac"] < abs_rel["ransac"], abs_rel
