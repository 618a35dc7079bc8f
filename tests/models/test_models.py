"""Depth Anything V2: architecture facts, official-code parity, checkpoint I/O, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from builders import randomise_lora_b

# The official implementation, verbatim (PyPI `jkp-depth-anything-v2`, installed by `make install`).
from depth_anything_v2.dpt import DepthAnythingV2 as OfficialDepthAnythingV2
from peft import LoraConfig, get_peft_model
from timm.layers import resample_abs_pos_embed

from depthadapt.models import (
    CheckpointMismatchError,
    build_depth_model,
    infer,
    interpolate_pos_embed,
    load_checkpoint,
    network_input_size,
    preprocess,
    to_official_state_dict,
)
from depthadapt.models.lora import LoraSettings, add_lora

pytestmark = pytest.mark.unit

OFFICIAL_ARGS = {
    "vits": dict(features=64, out_channels=[48, 96, 192, 384]),
    "vitb": dict(features=128, out_channels=[96, 192, 384, 768]),
    "vitl": dict(features=256, out_channels=[256, 512, 1024, 1024]),
}


def official_model(encoder: str, head: str = "relative", max_depth: float = 80.0) -> torch.nn.Module:
    """The official model; the metric variant differs only by a sigmoid output scaled by max_depth."""
    model = OfficialDepthAnythingV2(encoder=encoder, **OFFICIAL_ARGS[encoder]).eval()
    if head == "relative":
        return model
    model.depth_head.scratch.output_conv2[3] = torch.nn.Sigmoid()

    class Metric(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            patch_h, patch_w = x.shape[-2] // 14, x.shape[-1] // 14
            feats = model.pretrained.get_intermediate_layers(
                x, model.intermediate_layer_idx[encoder], return_class_token=True
            )
            return model.depth_head(feats, patch_h, patch_w).squeeze(1) * max_depth

    return Metric().eval()


@pytest.fixture(scope="module")
def vits_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    reference = official_model("vits")
    # Random DPT weights leave most ReLU outputs at 0; a positive output bias keeps every pixel informative.
    torch.nn.init.constant_(reference.depth_head.scratch.output_conv2[2].bias, 1.0)
    ours = build_depth_model("vits").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


@pytest.mark.parametrize(
    ("encoder", "keys", "params"),
    [("vits", 239, 24_785_089), ("vitb", None, 97_470_785), ("vitl", 407, 335_315_649)],
)
def test_official_sizes(encoder: str, keys: int | None, params: int) -> None:
    with torch.device("meta"):
        model = build_depth_model(encoder)
    state = model.state_dict()
    if keys is not None:
        assert len(state) == keys
    assert sum(p.numel() for p in model.parameters()) == params


def test_official_key_names_and_shapes() -> None:
    with torch.device("meta"):
        state = build_depth_model("vits").state_dict()
    expected = {
        "depth_head.projects.0.weight": (48, 384, 1, 1),
        "depth_head.resize_layers.3.weight": (384, 384, 3, 3),
        "depth_head.scratch.layer1_rn.weight": (64, 48, 3, 3),
        "depth_head.scratch.output_conv2.2.weight": (1, 32, 1, 1),
        "pretrained.pos_embed": (1, 1370, 384),
        "pretrained.mask_token": (1, 384),
        "pretrained.blocks.0.attn.qkv.weight": (1152, 384),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    for key in ("pretrained.cls_token", "pretrained.blocks.0.ls1.gamma",
                "depth_head.scratch.refinenet1.resConfUnit1.conv1.weight"):
        assert key in state


@pytest.mark.parametrize("encoder", ["vits", "vitl"])
def test_state_dict_keys_equal_official(encoder: str) -> None:
    with torch.device("meta"):
        ours = build_depth_model(encoder).state_dict()
    reference = official_model(encoder).state_dict()  # its constructor cannot run on the meta device
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference.items()}


@pytest.mark.parametrize("size", [(518, 518), (196, 644), (280, 364), (532, 518), (140, 700)])
def test_relative_output_matches_official(vits_pair, size: tuple[int, int]) -> None:
    reference, ours = vits_pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, *size)
    assert (expected > 0).float().mean() > 0.9
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_metric_output_matches_official() -> None:
    reference = official_model("vits", head="metric", max_depth=20.0)
    ours = build_depth_model("vits", head="metric", max_depth=20.0).eval()
    ours.load_state_dict(reference.inner.state_dict(), strict=True)
    x = torch.randn(1, 3, 196, 644)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert 0 < got.min() and got.max() < 20.0
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_pos_embed_interpolation_is_official_not_timm() -> None:
    pos_embed = torch.randn(1, 1370, 8)
    assert interpolate_pos_embed(pos_embed, 37, 37) is pos_embed
    got = interpolate_pos_embed(pos_embed, 14, 46)
    patches = pos_embed[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    by_scale = F.interpolate(patches, scale_factor=(14.1 / 37, 46.1 / 37), mode="bicubic", antialias=False)
    assert torch.equal(got[:, 1:], by_scale.permute(0, 2, 3, 1).reshape(1, -1, 8))
    assert torch.equal(got[:, :1], pos_embed[:, :1])
    by_size = resample_abs_pos_embed(pos_embed, new_size=(14, 46), old_size=(37, 37), num_prefix_tokens=1)
    assert (by_size - got).abs().max() > 1e-3  # timm's size-based resampling is not the official one
    assert interpolate_pos_embed(pos_embed.bfloat16(), 14, 46).dtype == torch.bfloat16


def test_input_must_be_multiple_of_14() -> None:
    with pytest.raises(ValueError, match="multiples of 14"):
        build_depth_model("vitt")(torch.randn(1, 3, 100, 140))


def test_bad_encoder_and_head_names() -> None:
    with pytest.raises(ValueError, match="encoder must be one of"):
        build_depth_model("vitx")
    with pytest.raises(ValueError, match="head must be one of"):
        build_depth_model("vitt", head="absolute")


def test_official_checkpoint_round_trip(tmp_path, vits_pair) -> None:
    reference, _ = vits_pair
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_depth_model("vits", checkpoint=path).eval()
    x = torch.randn(1, 3, 140, 182)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference(x), rtol=1e-4, atol=1e-5)
    exported = to_official_state_dict(loaded)
    fresh = official_model("vits")
    fresh.load_state_dict(exported, strict=True)  # goes back to the official code


def test_lightning_checkpoint_with_prefix(tmp_path) -> None:
    model = build_depth_model("vitt", head="metric", max_depth=10.0)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    loaded = build_depth_model("vitt", head="metric", max_depth=10.0, checkpoint=path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    two = {f"{p}.{k}": v for p in ("teacher", "student") for k, v in model.state_dict().items()}
    torch.save({"state_dict": two}, path)
    with pytest.raises(CheckpointMismatchError, match="several models"):
        build_depth_model("vitt", checkpoint=path)
    build_depth_model("vitt", checkpoint=path, checkpoint_prefix="teacher.")


def test_checkpoint_errors_list_keys(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_depth_model("vitt", checkpoint=tmp_path / "nope.pth")
    state = build_depth_model("vitt").state_dict()
    state.pop("pretrained.mask_token")
    state["depth_head.extra.weight"] = torch.zeros(1)
    state["pretrained.pos_embed"] = torch.zeros(1, 10, 192)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(build_depth_model("vitt"), path)
    message = str(error.value)
    assert "bad.pth" in message
    assert "missing keys (1)" in message and "pretrained.mask_token" in message
    assert "unexpected keys (1)" in message and "depth_head.extra.weight" in message
    assert "pretrained.pos_embed: checkpoint (1, 10, 192) vs model (1, 1370, 192)" in message
    with torch.device("meta"):
        vits = build_depth_model("vits")
    torch.save(vits.state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="wrong shapes"):
        load_checkpoint(build_depth_model("vitt"), path)


def test_lora_is_merged_into_official_state_dict() -> None:
    model = build_depth_model("vitt").eval()
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["qkv"]))
    randomise_lora_b(peft_model, std=0.1)
    x = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        adapted = peft_model(x)
    merged = build_depth_model("vitt").eval()
    merged.load_state_dict(to_official_state_dict(peft_model), strict=True)
    with torch.no_grad():
        assert torch.allclose(merged(x), adapted, rtol=1e-4, atol=1e-5)
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())  # the original stays adapted


@pytest.mark.parametrize("hparams", [
    {"lora": LoraSettings(rank=4, alpha=12.0)},
    {"lora": {"rank": 4, "alpha": 12.0}},
    {"lora_rank": 4, "lora_alpha": 12.0},  # checkpoints written before the settings were grouped
], ids=["settings", "mapping", "flat"])
def test_lightning_lora_weights_merge_with_the_recorded_alpha(hparams: dict) -> None:
    from depthadapt.models.weights.lightning import merge_lora_weights

    peft_model = add_lora(build_depth_model("vitt").eval(), LoraSettings(rank=4, alpha=12.0))
    randomise_lora_b(peft_model, std=0.1)
    state = {k.removeprefix("base_model.model."): v for k, v in peft_model.state_dict().items()}
    expected = to_official_state_dict(peft_model)
    merged = merge_lora_weights(state, hparams, "run.ckpt")
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in expected)
    halved = merge_lora_weights(state, {"lora": LoraSettings(rank=4, alpha=6.0)}, "run.ckpt")
    assert not torch.allclose(halved["pretrained.blocks.0.attn.qkv.weight"],
                              expected["pretrained.blocks.0.attn.qkv.weight"], atol=1e-4)
    with pytest.raises(CheckpointMismatchError, match="rank 4 but hyper_parameters say rank 8"):
        merge_lora_weights(state, {"lora": LoraSettings(rank=8, alpha=12.0)}, "run.ckpt")
    with pytest.raises(CheckpointMismatchError, match="no LoRA alpha"):
        merge_lora_weights(state, {}, "run.ckpt")


def test_preprocess_matches_official(official_image=None) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(120, 250, 3), dtype=np.uint8)
    reference = OfficialDepthAnythingV2(encoder="vits", **OFFICIAL_ARGS["vits"])
    expected, (h, w) = reference.image2tensor(rgb[:, :, ::-1].copy(), 518)  # official takes BGR
    got = preprocess(rgb)
    assert got.shape == expected.shape == (1, 3, 518, 1078)
    assert torch.equal(got, expected.cpu())
    assert network_input_size(480, 640) == (518, 686)
    assert network_input_size(375, 1242) == (518, 1722)


def test_preprocess_tensor_close_to_array() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    from_array = preprocess(rgb, input_size=140)
    from_tensor = preprocess(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, input_size=140)
    assert from_array.shape == from_tensor.shape == (1, 3, 140, 210)
    assert (from_array - from_tensor).abs().mean() < 0.05


def test_infer_matches_official(vits_pair) -> None:
    reference, ours = vits_pair
    rgb = np.random.default_rng(2).integers(0, 256, size=(50, 80, 3), dtype=np.uint8)
    expected = reference.infer_image(rgb[:, :, ::-1].copy(), input_size=140)
    got = infer(ours, rgb, input_size=140)
    assert got.shape == (50, 80)
    assert np.abs(got.numpy() - expected).max() / np.abs(expected).max() < 1e-4
    batch = torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2).float() / 255
    assert infer(ours, batch, input_size=140).shape == (2, 50, 80)


def test_bf16_autocast_runs_close_to_fp32() -> None:
    model = build_depth_model("vitt").eval()
    torch.nn.init.constant_(model.depth_head.scratch.output_conv2[2].bias, 1.0)
    x = torch.randn(1, 3, 140, 196)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x)
    assert half.dtype == torch.bfloat16
    assert ((half.float() - full).abs().mean() / full.abs().mean()).item() < 0.05


def test_flip_tta_is_the_mean_of_both_passes_and_flip_equivariant() -> None:
    model = build_depth_model("vitt").eval()
    torch.nn.init.constant_(model.depth_head.scratch.output_conv2[2].bias, 1.0)
    images = torch.rand(2, 3, 40, 60)
    got = infer(model, images, input_size=56, flip_tta=True)
    expected = 0.5 * (infer(model, images, 56) + infer(model, images.flip(-1), 56).flip(-1))
    assert got.shape == (2, 40, 60)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    mirrored = infer(model, images.flip(-1), input_size=56, flip_tta=True)
    torch.testing.assert_close(mirrored, got.flip(-1), rtol=1e-4, atol=1e-5)
    plain = infer(model, images, 56)
    assert (infer(model, images.flip(-1), 56) - plain.flip(-1)).abs().max() > 1e-3  # the model alone is not
    rgb = (images[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    array = infer(model, rgb, input_size=56, flip_tta=True)
    torch.testing.assert_close(infer(model, np.ascontiguousarray(rgb[:, ::-1]), 56, flip_tta=True), array.flip(-1),
                               rtol=1e-4, atol=1e-5)


def test_official_code_runs_the_merged_lora_export_with_the_adapted_outputs(vits_pair) -> None:
    """What README promises of adapted_model.pth: it loads into the official code and gives the adapted outputs."""
    reference, _ = vits_pair
    ours = build_depth_model("vits").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    adapted = add_lora(ours, LoraSettings(rank=8, alpha=16.0, targets=("qkv",)))
    randomise_lora_b(adapted, std=0.5)
    official = official_model("vits")
    official.load_state_dict(to_official_state_dict(adapted), strict=True)
    x = torch.randn(1, 3, 196, 280)
    with torch.no_grad():
        expected, got = adapted(x), official(x)
        with adapted.disable_adapter():
            source = adapted(x)
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
    assert ((source - expected).abs().max() / expected.abs().max()).item() > 1e-3  # the adapters do change it


def test_extreme_aspect_ratios_are_warned_about() -> None:
    from depthadapt.models import network_input_size

    with pytest.warns(UserWarning, match=r"a 50 x 3000 image becomes a 518 x 31080 network input"):
        assert network_input_size(50, 3000, 518) == (518, 31080)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network_input_size(375, 1242, 518)  # KITTI: no warning
