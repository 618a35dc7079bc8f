"""Depth Anything 3: hub folder errors, the tiny model's outputs, sky fill, metric conversion, camera maths."""

from __future__ import annotations

import json

import pytest
import torch
from depth_anything_3.model.utils.transform import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
)
from safetensors.torch import load_file, save_file

from depthadapt.models import CheckpointMismatchError, UnreadableCheckpointError
from depthadapt.models.da3 import (
    DepthAnything3,
    fill_sky,
    is_da3_hub_folder,
    load_da3_hub,
    metric_depth,
    save_da3_hub,
)
from depthadapt.models.da3.camera import (
    camera_to_pose_encoding,
    matrix_to_quaternion,
    pose_encoding_to_camera,
    quaternion_to_matrix,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = DepthAnything3("da3-tiny").eval()
    folder = save_da3_hub(model, tmp_path_factory.mktemp("hub") / "da3-tiny")
    return model, folder


def _rewrite(folder, tmp_path, edit) -> tuple:
    """A copy of the hub folder whose weights ``edit`` changed (a dict -> dict function)."""
    target = tmp_path / "edited"
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    save_file(edit(load_file(folder / "model.safetensors")), target / "model.safetensors")
    return target, target / "model.safetensors"


def _is_ray_norm(key: str) -> bool:
    """A key of the ray branch's LayerNorm (shared by its four output stacks, at index 2 of each)."""
    return ".head.scratch.output_conv2_aux." in key and key.endswith((".2.weight", ".2.bias"))


def test_hub_round_trip_is_exact_and_stores_shared_tensors_once(tiny_folder) -> None:
    model, folder = tiny_folder
    assert json.loads((folder / "config.json").read_text()) == {"model_name": "da3-tiny"}
    assert is_da3_hub_folder(folder)
    keys = load_file(folder / "model.safetensors").keys()
    assert all(k.startswith("model.") for k in keys)
    shared = [k for k in keys if _is_ray_norm(k)]
    assert len(shared) == 2, "the ray branch's one LayerNorm (weight, bias) is stored once, not four times"
    loaded, name = load_da3_hub(folder)
    assert name == "da3-tiny"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unexpected_key_names_the_key_and_the_file(tiny_folder, tmp_path) -> None:
    _, folder = tiny_folder
    key = "model.head.scratch.layer1_rn.weight"
    renamed = "model.head.scratch.layerX_rn.weight"
    edited, weights = _rewrite(folder, tmp_path, lambda s: {(renamed if k == key else k): v for k, v in s.items()})
    with pytest.raises(CheckpointMismatchError) as error:
        load_da3_hub(edited)
    message = str(error.value)
    assert str(weights) in message
    assert "missing keys (1)" in message and "head.scratch.layer1_rn.weight" in message
    assert "unexpected keys (1)" in message and "head.scratch.layerX_rn.weight" in message


def test_shape_mismatch_names_the_key_the_shapes_and_the_file(tiny_folder, tmp_path) -> None:
    _, folder = tiny_folder
    key = "model.backbone.pretrained.blocks.3.attn.q_norm.weight"

    def widen(state):
        state[key] = torch.ones(128)
        return state

    edited, weights = _rewrite(folder, tmp_path, widen)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as error:
        load_da3_hub(edited)
    assert str(weights) in str(error.value)
    assert "backbone.pretrained.blocks.3.attn.q_norm.weight: file (128,), model (64,)" in str(error.value)


def test_a_shared_tensor_absent_under_every_name_is_missing(tiny_folder, tmp_path) -> None:
    _, folder = tiny_folder
    edited, _ = _rewrite(folder, tmp_path, lambda s: {k: v for k, v in s.items() if not _is_ray_norm(k)})
    with pytest.raises(CheckpointMismatchError, match="missing keys \\(8\\)"):
        load_da3_hub(edited)


def test_keys_outside_the_wrapper_prefix_are_refused(tiny_folder, tmp_path) -> None:
    _, folder = tiny_folder
    edited, weights = _rewrite(folder, tmp_path, lambda s: {k.removeprefix("model."): v for k, v in s.items()})
    with pytest.raises(CheckpointMismatchError, match="outside the wrapper's 'model.' prefix") as error:
        load_da3_hub(edited)
    assert str(weights) in str(error.value)


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"model_name": "da3-giant"}, "CC-BY-NC-4.0: out of scope.*supported: \\['da3-base', 'da3-small'"),
        ({"model_name": "da3nested-giant-large"}, "CC-BY-NC-4.0"),
        ({"model_name": "dav2-small"}, "unknown Depth Anything 3 model 'dav2-small'; supported"),
        ({"name": "da3-small"}, 'no "model_name" string'),
    ],
)
def test_unsupported_config_names_the_file_and_the_supported_models(tiny_folder, tmp_path, config, pattern) -> None:
    _, folder = tiny_folder
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=pattern) as error:
        load_da3_hub(tmp_path)
    assert str(tmp_path / "config.json") in str(error.value)


def test_missing_and_unreadable_files(tiny_folder, tmp_path) -> None:
    _, folder = tiny_folder
    with pytest.raises(FileNotFoundError, match="hub folder not found"):
        load_da3_hub(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_da3_hub(tmp_path)
    assert not is_da3_hub_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(UnreadableCheckpointError, match="model.safetensors"):
        load_da3_hub(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UnreadableCheckpointError, match="config.json is not valid JSON"):
        load_da3_hub(tmp_path)


def test_save_refuses_other_models_and_replaces_only_its_own_files(tiny_folder, tmp_path) -> None:
    model, _ = tiny_folder
    with pytest.raises(TypeError, match="DepthAnything3"):
        save_da3_hub(torch.nn.Linear(2, 2), tmp_path / "x")
    from depthadapt.io import EXPORT_RECORD, ExistingOutputError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("the user's")
    with pytest.raises(ExistingOutputError, match="not an earlier da3-hub export"):
        save_da3_hub(model, tmp_path / "out")  # never deletes what it did not write
    save_da3_hub(model, tmp_path / "out", overwrite=True)
    save_da3_hub(model, tmp_path / "out")  # an earlier export: replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["config.json", "model.safetensors", EXPORT_RECORD, "notes.txt"])


def test_tiny_shapes_and_input_checks() -> None:
    model = DepthAnything3("da3-tiny").eval()
    x = torch.randn(2, 3, 42, 70)
    with torch.no_grad():
        depth = model(x)
        outputs = model.forward_all(x, with_rays=True)
        plain = model.forward_all(x)
    assert depth.shape == (2, 42, 70) and torch.all(depth > 0)
    shapes = {k: tuple(v.shape) for k, v in outputs.items()}
    assert shapes == {"depth": (2, 42, 70), "depth_conf": (2, 42, 70), "ray": (2, 24, 40, 6),
                      "ray_conf": (2, 24, 40), "extrinsics": (2, 3, 4), "intrinsics": (2, 3, 3)}
    assert set(plain) == {"depth", "depth_conf", "extrinsics", "intrinsics"}
    assert torch.all(outputs["depth_conf"] > 1) and torch.all(outputs["ray_conf"] > 1)
    assert torch.allclose(outputs["intrinsics"][:, :2, 2], torch.tensor([35.0, 21.0]).expand(2, 2))
    with pytest.raises(ValueError, match="multiples of 14, got 42 x 50"):
        model(torch.randn(1, 3, 42, 50))
    with pytest.raises(ValueError, match="give both extrinsics and intrinsics"):
        model.forward_all(x, extrinsics=torch.eye(4).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="unknown Depth Anything 3 model 'da3-huge'"):
        DepthAnything3("da3-huge")


def test_tiny_trains(tmp_path) -> None:
    model = DepthAnything3("da3-tiny").train()
    x = torch.randn(2, 3, 28, 28)
    model(x).log().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["backbone.pretrained.blocks.3.attn.q_norm.weight"].abs().sum() > 0
    assert grads["backbone.pretrained.camera_token"].abs().sum() > 0
    assert grads["head.scratch.output_conv2.2.weight"].abs().sum() > 0


def _reference_fill(depth: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """The official rule for one image: sky (>= 0.3) pixels <- 0.99 quantile of the others (> 10 of each)."""
    ground = sky < 0.3
    if ground.sum() <= 10 or (~ground).sum() <= 10:
        return depth
    return torch.where(ground, depth, torch.quantile(depth[ground], 0.99))


def test_fill_sky_is_the_official_rule_per_image() -> None:
    depth = torch.rand(3, 20, 30) * 10
    sky = torch.rand(3, 20, 30)
    sky[1] = 0.0  # no sky: unchanged
    sky[2] = 0.0
    sky[2, 0, :10] = 1.0  # 10 sky pixels: not more than 10, unchanged
    filled = fill_sky(depth, sky)
    for image in range(3):
        assert torch.allclose(filled[image], _reference_fill(depth[image], sky[image]), rtol=1e-6, atol=0)
    assert not torch.equal(filled[0], depth[0])
    assert torch.equal(filled[1:], depth[1:])
    sky[2, 0, :11] = 1.0
    assert torch.allclose(fill_sky(depth, sky)[2], _reference_fill(depth[2], sky[2]))
    assert not torch.equal(fill_sky(depth, sky)[2], depth[2])


def test_metric_depth_is_focal_times_output_over_300() -> None:
    output = torch.full((2, 4, 5), 3.0)
    metres = metric_depth(output, torch.tensor([300.0, 600.0]))
    assert torch.allclose(metres[0], torch.full((4, 5), 3.0)) and torch.allclose(metres[1], torch.full((4, 5), 6.0))
    assert torch.allclose(metric_depth(output, 150.0), torch.full((2, 4, 5), 1.5))


def test_pose_encoding_matches_the_official_conversions() -> None:
    generator = torch.Generator().manual_seed(0)
    quaternions = torch.randn(64, 4, generator=generator)
    rotations = quaternion_to_matrix(quaternions)
    assert torch.allclose(rotations @ rotations.mT, torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(matrix_to_quaternion(rotations), mat_to_quat(rotations), atol=1e-6)
    unit = quaternions / quaternions.norm(dim=-1, keepdim=True)
    standard = unit * unit[:, 3:].sign()
    encoding = torch.cat((torch.randn(64, 3, generator=generator), standard,
                          torch.rand(64, 2, generator=generator) + 0.2), dim=-1)
    assert torch.allclose(matrix_to_quaternion(rotations), standard, atol=1e-5)
    extrinsics, intrinsics = pose_encoding_to_camera(encoding, (42, 70))
    camera_to_world, official_intrinsics = pose_encoding_to_extri_intri(encoding[None], (42, 70))
    official_extrinsics = torch.cat((camera_to_world[0, :, :3, :3].mT,
                                     -camera_to_world[0, :, :3, :3].mT @ camera_to_world[0, :, :3, 3:]), dim=-1)
    assert torch.allclose(extrinsics, official_extrinsics, atol=1e-5)
    assert torch.allclose(intrinsics, official_intrinsics[0])
    back = camera_to_pose_encoding(extrinsics, intrinsics, (42, 70))
    assert torch.allclose(back, encoding, atol=1e-4)
    official_back = extri_intri_to_pose_encoding(camera_to_world, official_intrinsics, (42, 70))[0]
    assert torch.allclose(back, official_back, atol=1e-5)


def test_half_precision_weights_load_into_float32(tiny_folder, tmp_path) -> None:
    model, folder = tiny_folder
    edited, _ = _rewrite(folder, tmp_path, lambda s: {k: v.bfloat16() for k, v in s.items()})
    loaded, _ = load_da3_hub(edited)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    expected = model.state_dict()["head.scratch.output_conv2.0.weight"].bfloat16().float()
    assert torch.equal(loaded.state_dict()["head.scratch.output_conv2.0.weight"], expected)
