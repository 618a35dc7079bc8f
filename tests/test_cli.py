"""The real `cli.py` entry point (fit / test / predict) on tiny YAMLs and generated data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import make_dataset

import cli
from depthadapt.io import read_depth, write_depth_npy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "configs"


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)  # default logger and outputs land under tmp_path
    return make_dataset(tmp_path)


def test_fit_then_test_from_checkpoint(dataset, tmp_path: Path, capsys, caplog, recwarn) -> None:
    images, depths = dataset
    data = ["--data.image_dir", str(images), "--data.depth_dir", str(depths)]
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # Lightning's own handler does not propagate
    tips.addHandler(caplog.handler)
    threads = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            run = cli.main(["fit", "--config", str(CONFIGS / "fit.yaml"), *data, "--num_threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        tips.removeHandler(caplog.handler)
        torch.set_num_threads(threads)
    assert run.trainer.global_step == 2
    assert run.trainer.precision == "32-true"
    assert "GPU available" in caplog.text  # the capture sees Lightning's messages ...
    assert "litmodels" not in caplog.text and "litlogger" not in caplog.text  # ... but not its tips
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]
    assert "torch CPU threads: 1" in caplog.text
    checkpoints = sorted(Path("outputs").rglob("*.ckpt"))
    assert len(checkpoints) == 1
    saved_config = next(Path("outputs").rglob("config.yaml"))
    assert "vitt" in saved_config.read_text() and "num_threads: 1" in saved_config.read_text()
    with pytest.raises(ValueError, match="written by lightning_modules.SupervisedDepth but the config runs "
                                         "lightning_modules.WeSTARAdapter"):
        cli.main(["test", "--config", str(CONFIGS / "westar.yaml"), "--ckpt_path", str(checkpoints[0])])
    with pytest.raises(ValueError, match="another model card .*encoder 'vitt' vs 'vits'"):
        cli.main(["test", "--config", str(CONFIGS / "fit.yaml"), *data, "--ckpt_path", str(checkpoints[0]),
                  "--model.model.encoder", "vits"])
    same_version = ["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "outputs",
                    "--trainer.logger.version", "0"]
    for _ in range(2):  # a rerun into an existing version folder works
        cli.main(["fit", "--config", str(CONFIGS / "fit.yaml"), *data, *same_version])

    trained = run.model.model.state_dict()
    tested = cli.main(
        ["test", "--config", str(CONFIGS / "fit.yaml"), *data, "--ckpt_path", str(checkpoints[0]),
         "--data.val_fraction", "0"]
    )
    for key, value in tested.model.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    out = capsys.readouterr().out
    assert "affine-invariant" in out and "abs_rel" in out


def test_test_prints_table_and_counts_unreadable(dataset, capsys, caplog) -> None:
    images, depths = dataset
    (images / "broken.png").write_bytes(b"not a png")
    write_depth_npy(depths / "broken.npy", np.ones((48, 64), np.float32))
    with caplog.at_level(logging.WARNING):
        run = cli.main(
            ["test", "--config", str(CONFIGS / "test.yaml"), "--data.image_dir", str(images),
             "--data.depth_dir", str(depths)]
        )
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "abs_rel" in line)
    for name in ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert name in header
    assert "metric" in out
    assert run.trainer.callback_metrics["test/d1"] >= 0
    assert "test: 1 samples skipped: broken.png (cannot read" in caplog.text


def test_predict_writes_every_image_atomically_and_resumes(dataset, caplog) -> None:
    images, _ = dataset
    (images / "broken.png").write_bytes(b"\x89PNG garbage")
    output = Path("predictions")
    args = ["predict", "--config", str(CONFIGS / "predict.yaml"), "--data.image_dir", str(images),
            "--trainer.callbacks.init_args.output_dir", str(output)]
    with caplog.at_level(logging.INFO):
        cli.main(args)
    names = sorted(p.relative_to(images).with_suffix("").as_posix() for p in images.rglob("frame_*.png"))
    assert len(names) == 4
    for name in names:
        raw = np.load(output / f"{name}.npy")
        assert raw.shape == (48, 64) and raw.dtype == np.float32
        png = read_depth(output / f"{name}.png")
        assert png.shape == (48, 64) and png.max() == 65535  # relative model: min-max normalised 16 bit
        assert (output / f"{name}_color.png").is_file()
    assert not list(output.rglob("*tmp*"))
    assert not (output / "broken.npy").exists()
    assert "predict: 1 samples skipped: broken.png (cannot read" in caplog.text

    first = output / f"{names[0]}.npy"
    first.unlink()
    stamp = (output / f"{names[1]}.npy").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cli.main(args)
    assert first.is_file()
    assert (output / f"{names[1]}.npy").stat().st_mtime_ns == stamp
    assert "wrote 1 items to predictions (3 already done)" in caplog.text


def test_explicit_precision_is_kept(dataset) -> None:
    images, depths = dataset
    run = cli.main(
        ["--config", str(CONFIGS / "test.yaml"), "--data.image_dir", str(images), "--trainer.precision", "bf16-mixed"],
        run=False,
    )
    assert run.trainer.precision == "bf16-mixed"


def test_predict_print_config_shows_the_task_and_the_writer(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # in process (tests/test_bad_inputs_table.py runs `python cli.py` itself from the shell)
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        cli.run_from_shell(["predict", "--config", "config_yaml/predict.yaml", "--print_config"])
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lightning_modules.SupervisedDepth" in printed
    assert "output_dir: outputs/predictions" in printed


def test_missing_checkpoint_names_the_file(dataset) -> None:
    images, _ = dataset
    # jsonargparse re-raises the model's FileNotFoundError as a ValueError with the same message
    with pytest.raises((FileNotFoundError, ValueError), match="checkpoint not found: checkpoints/depth_anything"):
        cli.main(["predict", "--config", str(ROOT / "config_yaml" / "predict.yaml"), "--data.image_dir", str(images)])


def test_default_precision_follows_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.default_precision() == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert cli.default_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert cli.default_precision() == "32-true"


def test_bf16_mixed_fit_runs_under_cpu_autocast(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_modules import SupervisedDepth

    images, depths = dataset
    seen: dict = {}
    step = SupervisedDepth.training_step

    def spy(self, batch, batch_idx):
        seen["autocast"] = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        seen["output"] = self(batch["image"]).dtype
        loss = step(self, batch, batch_idx)
        seen["loss"] = float(loss)
        return loss

    monkeypatch.setattr(SupervisedDepth, "training_step", spy)
    run = cli.main(["fit", "--config", str(CONFIGS / "fit.yaml"), "--data.image_dir", str(images),
                    "--data.depth_dir", str(depths), "--trainer.precision", "bf16-mixed"])
    assert run.trainer.global_step == 2
    assert seen["autocast"] and seen["output"] == torch.bfloat16 and np.isfinite(seen["loss"])


def test_another_model_into_the_same_folder_is_refused_and_outputs_are_never_inputs(dataset, caplog) -> None:
    from depthadapt.io import MANIFEST_NAME, OutputManifestError

    images, _ = dataset
    output = images / "predictions"  # inside the image folder: must not be read back as input
    args = ["predict", "--config", str(CONFIGS / "predict.yaml"), "--data.image_dir", str(images),
            "--trainer.callbacks.init_args.output_dir", str(output)]
    cli.main(args)
    assert (output / MANIFEST_NAME).is_file() and len(list(output.rglob("*.npy"))) == 4
    with caplog.at_level(logging.INFO):
        cli.main(args)  # same job: a resume, nothing redone, the outputs are not inputs
    assert "wrote 0 items to" in caplog.text and "(4 already done)" in caplog.text
    other = ["--model.model", "{encoder: vitt, head: metric, checkpoint: null, input_size: 70}"]
    with pytest.raises(OutputManifestError, match=r"holds outputs written with other settings \(model:"):
        cli.main([*args, *other])
    stamp = (output / "seq0" / "frame_000.npy").stat().st_mtime_ns
    cli.main([*args, *other, "--trainer.callbacks.init_args.overwrite", "true"])
    assert (output / "seq0" / "frame_000.npy").stat().st_mtime_ns != stamp  # written anew by the other model
    assert '"head": "metric"' in (output / MANIFEST_NAME).read_text()


def test_bad_input_size_fails_when_the_card_is_built() -> None:
    from depthadapt.models.card import DepthModelCard

    for size in (0, -14, 13):
        with pytest.raises(ValueError, match="input_size must be an integer >= 14"):
            DepthModelCard("vitt", input_size=size)
