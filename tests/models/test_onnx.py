"""ONNX export: LoRA merged, equal to torch in onnxruntime, official pos-embed maths (dynamic batch / height / width,
any size and the metadata: tests/test_export.py, one export from the committed 140-row card)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from builders import randomise_lora_b
from peft import LoraConfig, get_peft_model

from depthadapt.models import build_depth_model, export_onnx, interpolate_pos_embed, onnx_relative_error
from depthadapt.models.dinov2 import _traceable_interpolate_pos_embed

pytestmark = pytest.mark.unit


def informative(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights leave most ReLU outputs at 0; a positive output bias keeps every pixel informative."""
    torch.nn.init.constant_(model.depth_head.scratch.output_conv2[2].bias, 1.0)
    return model.eval()


@pytest.mark.slow  # default suite under 10 minutes: runs in make test-all
def test_onnx_metric_head_with_lora_merged(tmp_path: Path) -> None:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"])
    adapted = get_peft_model(informative(build_depth_model("vitt", head="metric", max_depth=20.0)), config)
    randomise_lora_b(adapted, std=0.2)
    path = export_onnx(adapted, tmp_path / "adapted.onnx")
    error = onnx_relative_error(adapted, path, [(140, 182), (266, 350)])
    assert error < 1e-3
    assert any("lora_A" in n for n, _ in adapted.named_parameters())  # the model itself stays adapted
    with adapted.disable_adapter():  # the adapter is in the graph: the source model is far from it
        assert onnx_relative_error(adapted.get_base_model(), path, [(140, 182)]) > max(100 * error, 1e-5)
    assert {p.key: p.value for p in onnx.load(path).metadata_props}["depthadapt.max_depth"] == "20.0"


@pytest.mark.parametrize("grid", [(37, 37), (37, 38), (38, 37), (5, 7), (14, 46), (74, 74), (3, 3)])
def test_traceable_pos_embed_equals_official(grid: tuple[int, int]) -> None:
    pos_embed = torch.randn(1, 1370, 8)
    expected = interpolate_pos_embed(pos_embed, *grid)
    got = _traceable_interpolate_pos_embed(pos_embed, *grid)
    assert got.shape == expected.shape == (1, 1 + grid[0] * grid[1], 8)
    if grid == (37, 37):
        assert torch.equal(got, pos_embed)  # the official code does not interpolate at 518 x 518
    assert (got - expected).abs().max() < 1e-4
