"""The export command and WeSTAR `.ckpt` loading (a real run of WeSTARAdapter, LoRA merged)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from builders import relative_error
from lightning import Trainer
from transformers import DepthAnythingForDepthEstimation

from depthadapt.export import export_all, main
from depthadapt.models import CheckpointMismatchError, build_depth_model, read_checkpoint, save_official
from depthadapt.models.lora import LoraSettings, add_lora, save_lora_adapter

pytestmark = pytest.mark.integration

INPUT = torch.Generator().manual_seed(3)


@dataclass
class WeSTARRun:
    ckpt: Path
    x: torch.Tensor
    student: torch.Tensor  # the LoRA student's output on x
    teacher: torch.Tensor  # the EMA teacher's
    source: torch.Tensor  # the student with its adapters off


@pytest.fixture(scope="module")
def westar_run(tmp_path_factory) -> WeSTARRun:
    """Two WeSTAR steps on the synthetic target domain (vitt, LoRA rank 4, alpha 12), saved by the Trainer."""
    from datamodules import SyntheticDataModule, WeakLabelSources
    from depthadapt.models.card import DepthModelCard
    from depthadapt.westar import EXACT_LABELS
    from lightning_modules import WeSTARAdapter

    root = tmp_path_factory.mktemp("westar")
    torch.manual_seed(0)
    module = WeSTARAdapter(model=DepthModelCard(encoder="vitt", input_size=28), lora=LoraSettings(rank=4, alpha=12.0),
                           lr=2e-2, ema_decay=0.5)
    data = SyntheticDataModule(family="street", style="target", height=28, width=56, train_range=(0, 4),
                               val_range=(4, 6), test_range=(6, 8), batch_size=2, cache_dir=str(root / "cache"),
                               weak_labels=WeakLabelSources("ground_truth", ordinal_simulation=EXACT_LABELS))
    trainer = Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=root)
    trainer.fit(module, data)
    trainer.save_checkpoint(root / "last.ckpt")
    x = torch.randn(1, 3, 56, 84, generator=INPUT)
    student, teacher = module.model.eval(), module.teacher.module.eval()
    with torch.no_grad():
        outputs = student(x), teacher(x)
        with student.disable_adapter():
            source = student(x)
    return WeSTARRun(root / "last.ckpt", x, *outputs, source)


def output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_westar_ckpt_loads_student_or_teacher_merged(westar_run: WeSTARRun) -> None:
    keys = read_checkpoint(westar_run.ckpt)["state_dict"]
    assert any(k.startswith("model.base_model.model.") and "lora_A" in k for k in keys)
    assert any(k.startswith("teacher.module.") for k in keys)
    assert relative_error(westar_run.student, westar_run.source) > 1e-4  # LoRA changed the student
    assert relative_error(westar_run.student, westar_run.teacher) > 1e-5
    student = build_depth_model("vitt", checkpoint=westar_run.ckpt)
    assert relative_error(output(student, westar_run.x), westar_run.student) < 1e-5
    teacher = build_depth_model("vitt", checkpoint=westar_run.ckpt, checkpoint_prefix="teacher")
    assert relative_error(output(teacher, westar_run.x), westar_run.teacher) < 1e-5
    with pytest.raises(CheckpointMismatchError, match="head 'relative'"):
        build_depth_model("vitt", head="metric", checkpoint=westar_run.ckpt)
    with pytest.raises(CheckpointMismatchError, match="checkpoint_prefix 'ema'"):
        build_depth_model("vitt", checkpoint=westar_run.ckpt, checkpoint_prefix="ema")


def test_export_command_from_westar_ckpt(tmp_path: Path, westar_run: WeSTARRun, capsys) -> None:
    assert main([str(westar_run.ckpt), str(tmp_path / "model.pth"), "--encoder", "vitt", "--to", "official"]) == 0
    exported = build_depth_model("vitt", checkpoint=tmp_path / "model.pth")
    assert relative_error(output(exported, westar_run.x), westar_run.student) < 1e-5
    assert main([str(westar_run.ckpt), str(tmp_path / "hf"), "--encoder", "vitt", "--to", "hf",
                 "--checkpoint-prefix", "teacher"]) == 0
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 28, "width": 28}  # the size the run recorded, with --encoder given too
    hf = DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        hf_out = hf(pixel_values=westar_run.x).predicted_depth
    # not 518 x 518: transformers resamples the position embeddings slightly differently (see save_hf)
    assert relative_error(hf_out, westar_run.teacher) < 0.05
    assert main([str(westar_run.ckpt), str(tmp_path / "m.onnx"), "--encoder", "vitt", "--to", "onnx"]) == 0
    assert "max relative difference" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file()


def test_export_command_from_adapter_folder_on_base(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = build_depth_model("vitt")
    torch.nn.init.constant_(base.depth_head.scratch.output_conv2[2].bias, 1.0)
    save_official(base, tmp_path / "base.pth")
    adapted = add_lora(base, LoraSettings(rank=4, alpha=8.0))
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    save_lora_adapter(adapted, tmp_path / "adapter")
    x = torch.randn(1, 3, 42, 70)
    args = [str(tmp_path / "adapter"), str(tmp_path / "merged.pth"), "--encoder", "vitt", "--to", "official"]
    assert main([*args, "--base", str(tmp_path / "base.pth")]) == 0
    merged = build_depth_model("vitt", checkpoint=tmp_path / "merged.pth")
    assert relative_error(output(merged, x), output(adapted, x)) < 1e-5
    unmerged = build_depth_model("vitt", checkpoint=tmp_path / "base.pth")
    assert relative_error(output(merged, x), output(unmerged, x)) > 1e-3


def test_export_command_errors_name_the_problem(tmp_path: Path, capsys) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert main([str(tmp_path / "adapter"), str(tmp_path / "o.pth"), "--encoder", "vitt", "--to", "official"]) == 2
    assert "--base" in capsys.readouterr().err
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main([str(tmp_path / "bad.pth"), str(tmp_path / "o.pth"), "--encoder", "vitt", "--to", "hf"]) == 2
    assert "bad.pth" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()


def test_export_all_writes_each_format(tmp_path: Path) -> None:
    model = build_depth_model("vitt", head="metric", max_depth=10.0)
    paths = export_all(model, ["official", "hf"], tmp_path)
    assert paths == [tmp_path / "adapted_model.pth", tmp_path / "adapted_model_hf"]
    assert (tmp_path / "adapted_model.json").is_file() and (tmp_path / "adapted_model_hf" / "config.json").is_file()
    build_depth_model("vitt", head="metric", max_depth=10.0, checkpoint=paths[1])
    with pytest.raises(ValueError, match="export formats must be among"):
        export_all(model, ["tflite"], tmp_path)


def test_export_replaces_only_its_own_files(tmp_path: Path, capsys) -> None:
    """A folder with the user's files gets the export only with --overwrite and keeps them; a rerun of the same
    export replaces it (a file it no longer writes is removed); an official export never replaces a foreign file."""
    from depthadapt.io import EXPORT_RECORD

    tiny = str(Path(__file__).resolve().parents[1] / "checkpoints" / "tiny_foundation_140.pth")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_text("the user's checkpoint")
    assert main([tiny, str(run), "--to", "hf"]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]
    assert f"{run} is not empty and not an earlier hf export" in capsys.readouterr().err
    assert main([tiny, str(run), "--to", "hf", "--overwrite"]) == 0
    written = {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert {p.name for p in run.iterdir()} == {"last.ckpt", EXPORT_RECORD, *written}
    (run / "stale.bin").write_text("an earlier export's file")
    record = json.loads((run / EXPORT_RECORD).read_text())
    (run / EXPORT_RECORD).write_text(json.dumps({**record, "files": [*record["files"], "stale.bin"]}))
    assert main([tiny, str(run), "--to", "hf"]) == 0  # an earlier hf export: no --overwrite needed
    assert {p.name for p in run.iterdir()} == {"last.ckpt", EXPORT_RECORD, *written}
    assert (run / "last.ckpt").read_text() == "the user's checkpoint"
    build_depth_model("vitt", checkpoint=run)

    (tmp_path / "model.json").write_text('{"unrelated": true}')
    assert main([tiny, str(tmp_path / "model.pth"), "--to", "official"]) == 2
    assert not (tmp_path / "model.pth").exists() and "unrelated" in (tmp_path / "model.json").read_text()
    assert main([tiny, str(tmp_path / "model.pth"), "--to", "official", "--overwrite"]) == 0
    assert main([tiny, str(tmp_path / "model.pth"), "--to", "official"]) == 0  # an earlier export: replaced
    assert json.loads((tmp_path / "model.json").read_text())["input_size"] == 518  # a bare .pth: the official size
    assert main([tiny, str(tmp_path / "x.json"), "--to", "official", "--overwrite"]) == 2  # even with --overwrite
    assert not (tmp_path / "x.json").exists()


def test_pipeline_on_an_exported_card_runs_it_as_predict_does(tmp_path: Path, monkeypatch) -> None:
    """`python -m depthadapt.export CARD OUT --to hf` for the committed 140-row card: transformers'
    `pipeline("depth-estimation")` on the folder gives what `cli.py predict` gives (`card.infer`, SupervisedDepth's
    predict_depth) for rendered images of several sizes. At the old fixed 518 x 518 processor it gave 0.19 - 0.91."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from depthadapt import export
    from depthadapt.models.card import DepthModelCard
    from depthadapt.synth import render_sample

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the card names its checkpoint from the repository root
    card_path = "config_yaml/models/tiny_foundation_140.yaml"
    assert export.main([card_path, str(tmp_path / "hf"), "--to", "hf"]) == 0
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 140, "width": 140}
    card = DepthModelCard.from_yaml(card_path)
    assert card.input_size == 140
    model = card.build().eval()
    depth_pipeline = pipeline("depth-estimation", model=str(tmp_path / "hf"), device="cpu")
    for family, style, height, width in [("room", "target", 168, 280), ("street", "target", 140, 462),
                                         ("room", "source", 210, 280)]:
        image = render_sample(family, style, 0, 3, height, width)["image"]
        rgb = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        theirs = depth_pipeline(rgb)["predicted_depth"].squeeze()
        ours = card.infer(model, image[None])[0]
        assert theirs.shape == ours.shape == (height, width)
        assert np.corrcoef(theirs.flatten().numpy(), ours.flatten().numpy())[0, 1] >= 0.99


def test_onnx_from_a_card_records_how_to_run_and_resizes_like_infer(tmp_path: Path, monkeypatch) -> None:
    """`python -m depthadapt.export CARD OUT --to onnx`: the metadata says input size and normalisation; an input
    whose sides are not multiples of 14 (143 x 213) gives what `infer` gives (resized to 140 x 210 and back)."""
    import onnx
    import onnxruntime

    from depthadapt import export
    from depthadapt.models import onnx_relative_error
    from depthadapt.models.card import DepthModelCard
    from depthadapt.synth import render_sample

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the card names its checkpoint from the repository root
    card_path = "config_yaml/models/tiny_foundation_140.yaml"
    assert export.main([card_path, str(tmp_path / "m.onnx"), "--to", "onnx", "--skip-check"]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    card = DepthModelCard.from_yaml(card_path)
    assert props["depthadapt.input_size"] == "140"
    assert json.loads(props["depthadapt.mean"]) == list(card.mean)
    assert json.loads(props["depthadapt.std"]) == list(card.std)
    image = render_sample("room", "target", 0, 5, 143, 213)["image"][None]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["depth"], {"image": card.normalise(image).numpy()})[0])
    model = card.build().eval()
    expected = card.infer(model, image)
    assert got.shape == expected.shape == (1, 143, 213)
    assert relative_error(got, expected) < 1e-3
    assert onnx_relative_error(model, tmp_path / "m.onnx", [(518, 518), (196, 644), (70, 98)], batch=2) < 1e-3
    graph = onnx.load(tmp_path / "m.onnx").graph
    image_dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert image_dims[1] == 3 and all(isinstance(d, str) for d in (image_dims[0], image_dims[2], image_dims[3]))
    assert props["depthadapt.head"] == "relative" and props["depthadapt.encoder"] == "vitt"
