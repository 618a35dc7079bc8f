"""transformers Depth Anything folders: read and written, checked against transformers' own implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import randomise_lora_b, relative_error
from peft import LoraConfig, get_peft_model
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from depthadapt.models import CheckpointMismatchError, build_depth_model, save_hf, to_official_state_dict
from depthadapt.models.weights.transformers import hf_to_official, official_to_hf

pytestmark = pytest.mark.unit

# Sizes as transformers configs: (hidden, layers, heads, out_indices, neck sizes, fusion size).
SIZES = {
    "vitt": (192, 4, 3, [1, 2, 3, 4], [24, 48, 96, 192], 32),
    "vits": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
}


def random_hf_model(
    encoder: str, head: str = "relative", max_depth: int = 1, out_indices: list[int] | None = None
) -> DepthAnythingForDepthEstimation:
    """A transformers Depth Anything model with seeded random weights (every tensor perturbed)."""
    hidden, layers, heads, indices, neck, fusion = SIZES[encoder]
    backbone = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, image_size=518, patch_size=14,
        out_indices=out_indices or indices, reshape_hidden_states=False, layerscale_value=1.0,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=hidden, neck_hidden_sizes=neck, fusion_hidden_size=fusion,
        depth_estimation_type=head, max_depth=max_depth,
    )
    torch.manual_seed(1)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # layer scales, norms and biases must not sit at their init values
            param.add_(0.05 * torch.randn_like(param))
        model.head.conv3.bias.fill_(1.0)  # keeps most ReLU outputs informative
    return model


def hf_output(model: DepthAnythingForDepthEstimation, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).predicted_depth


@pytest.mark.parametrize(
    ("encoder", "head", "max_depth"),
    [("vitt", "relative", 1), ("vitt", "metric", 20), ("vitt", "relative", 3), ("vits", "relative", 1)],
)
def test_transformers_round_trip(tmp_path: Path, encoder: str, head: str, max_depth: int) -> None:
    reference = random_hf_model(encoder, head, max_depth)
    reference.save_pretrained(tmp_path / "hf")
    ours = build_depth_model(encoder, head, max_depth=max_depth if head == "metric" else 80.0,
                             checkpoint=tmp_path / "hf").eval()
    x = torch.randn(1, 3, 518, 518)
    expected = hf_output(reference, x)
    assert (expected > 0).float().mean() > 0.9
    with torch.no_grad():
        got = ours(x)
    assert relative_error(got, expected) < 1e-4

    save_hf(ours, tmp_path / "out")
    reloaded = DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "out").eval()
    assert reloaded.config.depth_estimation_type == head
    assert relative_error(hf_output(reloaded, x), got) < 1e-4
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()


def test_config_is_checked_against_the_arguments(tmp_path: Path) -> None:
    random_hf_model("vitt", "metric", 20).save_pretrained(tmp_path / "metric")
    with pytest.raises(CheckpointMismatchError, match=r"config\.json.*vitt model, not vits.*encoder='vitt'"):
        build_depth_model("vits", "metric", 20.0, checkpoint=tmp_path / "metric")
    with pytest.raises(CheckpointMismatchError, match="depth_estimation_type is 'metric', not 'relative'"):
        build_depth_model("vitt", "relative", checkpoint=tmp_path / "metric")
    with pytest.raises(CheckpointMismatchError, match="max_depth is 20, not 80.0: pass max_depth=20"):
        build_depth_model("vitt", "metric", 80.0, checkpoint=tmp_path / "metric")
    (tmp_path / "metric" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        build_depth_model("vitt", "metric", 20.0, checkpoint=tmp_path / "metric")


def test_pytorch_model_bin_folder(tmp_path: Path) -> None:
    reference = random_hf_model("vitt")
    reference.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    legacy = official_to_hf(hf_to_official(reference.state_dict(), "memory"))  # the names on the hub
    torch.save(legacy, tmp_path / "hf" / "pytorch_model.bin")
    loaded = build_depth_model("vitt", checkpoint=tmp_path / "hf").eval()
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        assert relative_error(loaded(x), hf_output(reference, x)) < 1e-4


def test_key_table_round_trip_and_transformers_5_names() -> None:
    state = build_depth_model("vitt").state_dict()
    hf = official_to_hf(state)
    assert "backbone.encoder.layer.0.attention.attention.query.weight" in hf
    assert torch.equal(hf["neck.fusion_stage.layers.0.projection.weight"],
                       state["depth_head.scratch.refinenet4.out_conv.weight"])  # fusion order is reversed
    assert torch.equal(hf["neck.convs.0.weight"], state["depth_head.scratch.layer1_rn.weight"])
    assert torch.equal(hf["backbone.encoder.layer.3.layer_scale2.lambda1"], state["pretrained.blocks.3.ls2.gamma"])
    query, key, value = state["pretrained.blocks.1.attn.qkv.weight"].chunk(3)
    assert torch.equal(hf["backbone.encoder.layer.1.attention.attention.key.weight"], key)
    back = hf_to_official(hf, "memory")
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    in_memory = DepthAnythingForDepthEstimation(random_hf_model("vitt").config).state_dict()  # q_proj, o_proj
    assert any(".q_proj." in k for k in in_memory)
    assert hf_to_official(in_memory, "memory").keys() == state.keys()
    with pytest.raises(CheckpointMismatchError, match="not part of a Depth Anything model"):
        hf_to_official({**hf, "backbone.extra.weight": torch.zeros(1)}, "memory")


def test_save_hf_merges_lora(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_depth_model("vitt").eval()
    torch.nn.init.constant_(model.depth_head.scratch.output_conv2[2].bias, 1.0)
    adapted = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"]))
    randomise_lora_b(adapted, std=0.2)
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        expected = adapted(x)
        with adapted.disable_adapter():
            source = adapted(x)
    assert relative_error(source, expected) > 1e-3  # the adapter matters
    save_hf(adapted, tmp_path / "hf")
    reloaded = DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "hf").eval()
    assert relative_error(hf_output(reloaded, x), expected) < 1e-4


def test_depth_anything_v1_layout_reads_other_blocks(tmp_path: Path) -> None:
    reference = random_hf_model("vits", out_indices=[9, 10, 11, 12])  # V1 feeds the head the last four blocks
    reference.save_pretrained(tmp_path / "v1")
    ours = build_depth_model("vits", checkpoint=tmp_path / "v1").eval()
    assert ours.layer_indices == (8, 9, 10, 11)
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        assert relative_error(ours(x), hf_output(reference, x)) < 1e-4
    with pytest.raises(CheckpointMismatchError, match="V1"):
        to_official_state_dict(ours)
    save_hf(ours, tmp_path / "back")
    assert DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "back").config.backbone_config.out_indices == [
        9, 10, 11, 12]
