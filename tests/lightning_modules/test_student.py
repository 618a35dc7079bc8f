"""The pseudo-label student (a config of SupervisedDepth): the paper's settings, init, the CLI jobs, the gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from builders import synthetic_batch

import cli
from depthadapt.io import read_depth
from depthadapt.models import build_depth_model, to_official_state_dict
from depthadapt.models.card import DepthModelCard
from lightning_modules import SupervisedDepth
from lightning_modules.supervised import TABLE_COLUMNS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "configs"


def label(output: Path, config: str, method: str, test_range: str, *extra: str) -> Path:
    """Write the `method` labels of the synthetic images `test_range` under output/method (images: output/images)."""
    cli.main(["predict", "--config", config, "--model.method", method, "--data.test_range", test_range,
              "--trainer.callbacks.init_args.output_dir", str(output / method),
              "--trainer.callbacks.init_args.image_dir", str(output / "images"), *extra])
    return output / method


def test_kitti_config_is_the_papers_student(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import yaml

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", "config_yaml/student_kitti.yaml", "--print_config"])
    args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    card = args["model"]
    assert (card["encoder"], card["head"], card["input_size"], card["max_depth"]) == ("vits", "metric", 196, 80.0)
    assert args["init"] == "encoder" and args["lr"] == 5e-6 and args["decoder_lr_factor"] == 10.0
    assert args["silog_lambda"] == 0.5


def test_init_encoder_loads_the_encoder_only(tmp_path: Path) -> None:
    source = build_depth_model("vitt")
    torch.nn.init.normal_(source.depth_head.scratch.output_conv2[0].weight)
    torch.save(to_official_state_dict(source), tmp_path / "relative.pth")
    card = DepthModelCard("vitt", head="metric", checkpoint=str(tmp_path / "relative.pth"))
    full, encoder = SupervisedDepth(card, init="full").model, SupervisedDepth(card, init="encoder").model
    fresh = build_depth_model("vitt", head="metric")
    for key, value in source.state_dict().items():
        if key.startswith("pretrained."):
            assert torch.equal(encoder.state_dict()[key], value), key
        assert torch.equal(full.state_dict()[key], value), key
    head = "depth_head.scratch.output_conv2.0.weight"
    assert not torch.equal(encoder.state_dict()[head], source.state_dict()[head])
    assert encoder.state_dict()[head].std() == pytest.approx(fresh.state_dict()[head].std(), rel=0.5)
    with pytest.raises(ValueError, match="model.init must be one of full, encoder"):
        SupervisedDepth(card, init="head")


def test_cli_fit_on_labels_then_test_on_ground_truth(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    labels = label(tmp_path, str(CONFIGS / "pseudo_label_tiny.yaml"), "masked_ransac", "[4000, 4006]")
    data = ["--data.image_dir", str(tmp_path / "images"), "--data.depth_dir", str(labels)]
    config = ["--config", str(CONFIGS / "student_tiny.yaml")]
    fit = cli.main(["fit", *config, *data, "--trainer.default_root_dir", str(tmp_path / "run")])
    assert fit.trainer.global_step == 2
    lrs = [group["initial_lr"] for group in fit.trainer.optimizers[0].param_groups]
    assert lrs == pytest.approx([1e-4, 1e-3])  # encoder, decoder at 10x
    sample = fit.datamodule.train_dataset.dataset.dataset[0]  # HorizontalFlip(Subset(ImageFolderDataset))
    name = fit.datamodule.train_dataset.dataset.dataset.files[0]
    on_disk = read_depth(labels / name, 1 / 256)
    np.testing.assert_array_equal(sample["depth"].numpy(), on_disk)  # metres: 16-bit labels / 256
    assert 1.0 < float(sample["depth"][sample["valid"]].median()) < 80.0

    checkpoint = next((tmp_path / "run").rglob("*.ckpt"))
    assert SupervisedDepth.load_from_checkpoint(checkpoint).hparams.table_row == "masked_ransac"
    capsys.readouterr()
    test = cli.main(["test", *config, *data, "--config", "config_yaml/student_test.yaml", "--data.height", "56",
                     "--data.width", "182", "--data.test_range", "[3100, 3104]", "--data.num_workers", "0",
                     "--ckpt_path", str(checkpoint)])
    lines = capsys.readouterr().out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("vitt (metric) against ground truth"))
    assert "4 images" in lines[title] and lines[title + 1].split() == list(TABLE_COLUMNS)
    assert lines[title + 2].split()[0] == "masked_ransac"
    assert torch.isfinite(test.trainer.callback_metrics["test/abs_rel"])
    trained = fit.model.model.state_dict()
    for key, value in test.model.model.state_dict().items():  # the test scored the trained weights
        assert torch.equal(value, trained[key]), key


@pytest.mark.slow  # default suite under 10 minutes: runs in make test-all
def test_student_on_masked_ransac_labels_beats_student_on_baseline_labels(tmp_path: Path, monkeypatch) -> None:
    """Both start from the tiny metric teacher (the right scale at once, so a short run shows the labels'
    effect; the baseline labels are that teacher's own output) and train 30 steps of 4 on 32 unseen street
    images, then are scored on 32 held-out images. Measured AbsRel: baseline labels 0.377, masked RANSAC 0.306
    (0.379 / 0.334 on another 32 images)."""
    monkeypatch.chdir(ROOT)
    abs_rel = {}
    cache = ["--data.cache_dir", str(tmp_path / "cache")]  # both methods label and are scored on the same renders
    for method in ("baseline", "masked_ransac"):
        labels = label(tmp_path, "config_yaml/pseudo_label.yaml", method, "[4000, 4032]", "--data.num_workers", "0",
                       *cache)
        data = ["--data.image_dir", str(tmp_path / "images"), "--data.depth_dir", str(labels),
                "--data.num_workers", "0"]
        fit = cli.main(["fit", "--config", "config_yaml/student.yaml", *data, "--data.batch_size", "4",
                        "--trainer.max_steps", "30", "--trainer.logger", "false",
                        "--trainer.enable_checkpointing", "false", "--trainer.enable_model_summary", "false"])
        test = cli.main(["--config", "config_yaml/student.yaml", "--config", "config_yaml/student_test.yaml",
                         "--data.test_range", "[3100, 3132]", "--data.num_workers", "0", *cache], run=False)
        test.trainer.test(fit.model, datamodule=test.datamodule, verbose=False)
        abs_rel[method] = test.trainer.callback_metrics["test/abs_rel"].item()
    assert abs_rel["masked_ransac"] < abs_rel["baseline"] - 0.03, abs_rel


@pytest.mark.parametrize(
    ("config", "expected"),
    [("pseudo_label_kitti.yaml", "datamodules.KITTIDataModule"), ("student.yaml", "tiny_metric_street.pth"),
     ("student_kitti.yaml", "image_size:\n    - 196\n    - 644")],
)
def test_shipped_configs_parse(config: str, expected: str, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", f"config_yaml/{config}", "--print_config"])
    assert expected in capsys.readouterr().out


def test_gradient_matching_and_flip_tta_switches_reach_the_model() -> None:
    from depthadapt.losses import gradient_matching_loss
    from depthadapt.metrics import depth_to_disparity

    card = DepthModelCard("vitt", input_size=28)
    batch = synthetic_batch()
    plain, matched = SupervisedDepth(card), SupervisedDepth(card, gradient_matching_weight=2.0)
    matched.model.load_state_dict(plain.model.state_dict())
    with torch.no_grad():
        pred = plain(batch["image"])
        extra = gradient_matching_loss(pred, depth_to_disparity(batch["depth"], batch["valid"]), batch["valid"])
        assert extra > 0
        difference = matched.training_step(batch, 0) - plain.training_step(batch, 0)
    torch.testing.assert_close(difference, 2.0 * extra)
    flipped = SupervisedDepth(card, flip_tta=True)
    flipped.model.load_state_dict(plain.model.state_dict())
    image = batch["image"]
    with torch.no_grad():
        expected = 0.5 * (plain.predict_depth(image) + plain.predict_depth(image.flip(-1)).flip(-1))
        torch.testing.assert_close(flipped.predict_depth(image), expected)
        assert not torch.allclose(plain.predict_depth(image), expected)
