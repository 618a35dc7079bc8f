"""The export command and WeSTAR `.ckpt` loading (a real run of WeSTARAdapter, LoRA merged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from builders import relative_error
from lightning import Trainer
from transformers import DepthAnythingForDepthEstimation

from depthadapt.export import export_all, main
from depthadapt.models import CheckpointMismatchError, build_depth_model, read_checkpoint, save_official
from depthadapt.models.lora import add_lora, save_lora_adapter

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
    from datamodules import SyntheticDataModule
    from depthadapt.models.card import DepthModelCard
    from lightning_modules import WeSTARAdapter

    root = tmp_path_factory.mktemp("westar")
    torch.manual_seed(0)
    module = WeSTARAdapter(model=DepthModelCard(encoder="vitt", input_size=28), lora_rank=4, lora_alpha=12.0,
                           lr=2e-2, ema_decay=0.5)
    data = SyntheticDataModule(family="street", style="target", height=28, width=56, train_range=(0, 4),
                               val_range=(4, 6), test_range=(6, 8), batch_size=2, cache_dir=str(root / "cache"))
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
    adapted = add_lora(base, rank=4, alpha=8.0)
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
