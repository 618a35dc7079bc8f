"""Depth Anything 3: our single-view models against the official network (PyPI `depth-anything-3`, its model package
only), weights written by the official hub wrapper's saving path and read by our loader, every parameter perturbed."""

from __future__ import annotations

import pytest
import torch
from builders import relative_error
from depth_anything_3.cfg import create_object, load_config
from depth_anything_3.model.cam_dec import CameraDec
from depth_anything_3.model.cam_enc import CameraEnc
from depth_anything_3.model.da3 import DepthAnything3Net
from depth_anything_3.model.dinov2.dinov2 import DinoV2
from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
from depth_anything_3.model.dualdpt import DualDPT
from depth_anything_3.registry import MODEL_REGISTRY
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from depthadapt.models.da3 import DA3_CONFIGS, DepthAnything3, load_da3_hub, save_da3_hub
from depthadapt.models.da3.camera import quaternion_to_matrix

pytestmark = pytest.mark.unit

SIZES = [(28, 42), (70, 42)]  # (H, W): wide and tall, neither the 518 x 518 pretraining grid
TOLERANCE = 1e-4


class OfficialDepthAnything3(nn.Module, PyTorchModelHubMixin):
    """The official hub wrapper (`depth_anything_3.api.DepthAnything3`) reduced to what builds, saves and loads the
    network: the config by name, the net as ``model``; the api module itself imports the export stack (moviepy...)."""

    def __init__(self, model_name: str = "da3-small") -> None:
        super().__init__()
        self.model = create_object(load_config(MODEL_REGISTRY[model_name]))


def perturb(module: nn.Module, seed: int) -> None:
    """Add noise to every parameter (LayerScale, zero-init tokens and position embeddings included); make the
    camera's field of view and the sky score informative (their ReLU outputs would often be 0 or all below 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
        for name, parameter in module.named_parameters():
            if name.endswith("cam_dec.fc_fov.0.weight"):
                parameter.mul_(1e-3)  # with the bias below, fov ~ 1 rad (ReLU'd, it would often be 0)
            if name.endswith("cam_dec.fc_fov.0.bias"):
                parameter.fill_(1.0)
            if name.endswith("sky_output_conv2.2.bias"):
                parameter.fill_(0.3)  # about half the pixels are sky: the sky fill runs
    module.eval()


def official_tiny_net() -> nn.Module:
    """The official modules at our da3-tiny's numbers (the official registry has no such config)."""
    config = DA3_CONFIGS["da3-tiny"]
    backbone = DinoV2("vits", out_layers=list(config.out_layers), alt_start=config.alt_start,
                      qknorm_start=config.alt_start, rope_start=config.alt_start, cat_token=True)
    backbone.pretrained = DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
        mlp_ratio=4, alt_start=config.alt_start, qknorm_start=config.alt_start, rope_start=config.alt_start,
        cat_token=True,
    )
    head = DualDPT(dim_in=2 * config.embed_dim, output_dim=2, features=config.features,
                   out_channels=list(config.out_channels))
    return DepthAnything3Net(backbone, head, cam_dec=CameraDec(2 * config.embed_dim),
                             cam_enc=CameraEnc(dim_out=config.embed_dim))


@pytest.fixture(scope="module")
def hub_pair(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[nn.Module, DepthAnything3]:
    """(perturbed official net, our model loaded from the hub folder the official wrapper saved) of the model named
    by the test's indirect parameter."""
    name = request.param
    torch.manual_seed(0)
    official = OfficialDepthAnything3(name)
    perturb(official, seed=1)
    folder = tmp_path_factory.mktemp(name)
    official.save_pretrained(folder)
    ours, model_name = load_da3_hub(folder)
    assert model_name == name and not ours.training
    return official.model, ours


def hub_model(name: str) -> pytest.MarkDecorator:
    """Run the test on ``hub_pair`` of the model ``name``."""
    return pytest.mark.parametrize("hub_pair", [name], indirect=True)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    torch.manual_seed(0)
    official = official_tiny_net()
    perturb(official, seed=1)
    ours = DepthAnything3("da3-tiny").eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def official_outputs(official: nn.Module, x: torch.Tensor, **cameras: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official net's outputs for one view per image (N = 1), its head's ray outputs included (the net drops
    them once its camera decoder has run)."""
    head_outputs = {}
    hook = official.head.register_forward_hook(
        lambda module, inputs, output: head_outputs.update({k: v.clone() for k, v in output.items()})
    )
    try:
        with torch.no_grad():
            outputs = official(x[:, None], **{k: v[:, None] for k, v in cameras.items()})
    finally:
        hook.remove()
    result = {k: v[:, 0] for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    result.update({k: head_outputs[k][:, 0] for k in ("ray", "ray_conf") if k in head_outputs})
    result["head_depth"] = head_outputs["depth"][:, 0]
    return result


def check_any_view(official: nn.Module, ours: DepthAnything3, size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    expected = official_outputs(official, x)
    with torch.no_grad():
        got = ours.forward_all(x, with_rays=True)
        depth = ours(x)
    assert set(got) == {"depth", "depth_conf", "ray", "ray_conf", "extrinsics", "intrinsics"}
    for key, value in got.items():
        assert relative_error(value, expected[key]) < TOLERANCE, key
    assert relative_error(depth, expected["depth"]) < TOLERANCE
    focal = got["intrinsics"][:, 0, 0]
    assert torch.all(focal < 1e3), "the field of view is informative (not clamped to 0)"


def check_sky_model(official: nn.Module, ours: DepthAnything3, size: tuple[int, int]) -> None:
    x = torch.randn(1, 3, *size)  # one image: the official sky fill pools the images of a batch, ours does not
    expected = official_outputs(official, x)
    with torch.no_grad():
        got = ours.forward_all(x)
        depth = ours(x)
    sky = expected["sky"] >= 0.3
    assert 0.1 < sky.float().mean() < 0.9, "both sky and ground pixels: the fill runs"
    assert not torch.allclose(expected["depth"], expected["head_depth"]), "the official fill changed the sky"
    assert set(got) == {"depth", "sky"}
    for key, value in got.items():
        assert relative_error(value, expected[key]) < TOLERANCE, key
    assert relative_error(depth, expected["depth"]) < TOLERANCE
    ours.fill_sky = False
    try:
        with torch.no_grad():
            raw = ours(x)
    finally:
        ours.fill_sky = True
    assert relative_error(raw, expected["head_depth"]) < TOLERANCE, "fill_sky=False: the head's depth as it is"


@hub_model("da3-small")
@pytest.mark.parametrize("size", SIZES)
def test_da3_small_matches_official(hub_pair, size) -> None:
    check_any_view(*hub_pair, size)


@pytest.mark.slow  # the architecture of da3-small at other numbers
@hub_model("da3-base")
@pytest.mark.parametrize("size", SIZES)
def test_da3_base_matches_official(hub_pair, size) -> None:
    check_any_view(*hub_pair, size)


@pytest.mark.parametrize("size", SIZES)
def test_da3_tiny_matches_the_official_modules(tiny_pair, size) -> None:
    check_any_view(*tiny_pair, size)


# A large model costs ~15-30 s to build, save and load on a 2-core VM: one size in the default suite.
@hub_model("da3mono-large")
@pytest.mark.parametrize("size", [SIZES[0], pytest.param(SIZES[1], marks=pytest.mark.slow)])
def test_da3mono_large_matches_official(hub_pair, size) -> None:
    check_sky_model(*hub_pair, size)


@pytest.mark.slow  # the same architecture as da3mono-large (the same official config but for its weights)
@hub_model("da3metric-large")
@pytest.mark.parametrize("size", SIZES)
def test_da3metric_large_matches_official(hub_pair, size) -> None:
    check_sky_model(*hub_pair, size)


@hub_model("da3-small")
def test_a_known_camera_conditions_like_the_official_encoder(hub_pair) -> None:
    official, ours = hub_pair
    x = torch.randn(2, 3, 42, 56)
    rotation = quaternion_to_matrix(torch.tensor([[0.1, -0.3, 0.2, 0.9], [-0.5, 0.1, 0.4, -0.6]]))
    extrinsics = torch.eye(4).repeat(2, 1, 1)
    extrinsics[:, :3, :3], extrinsics[:, :3, 3] = rotation, torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    intrinsics = torch.tensor([[[60.0, 0, 28], [0, 50.0, 21], [0, 0, 1]], [[30.0, 0, 28], [0, 35.0, 21], [0, 0, 1]]])
    expected = official_outputs(official, x, extrinsics=extrinsics, intrinsics=intrinsics)
    with torch.no_grad():
        got = ours.forward_all(x, extrinsics=extrinsics, intrinsics=intrinsics)
        unconditioned = ours.forward_all(x)
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        assert relative_error(got[key], expected[key]) < TOLERANCE, key
    assert relative_error(got["depth"], unconditioned["depth"]) > 1e-3, "the camera changes the prediction"


@hub_model("da3-small")
def test_saved_hub_folder_loads_in_the_official_code(hub_pair, tmp_path) -> None:
    _, ours = hub_pair
    save_da3_hub(ours, tmp_path / "export")
    official = OfficialDepthAnything3.from_pretrained(tmp_path / "export", strict=True).eval()
    x = torch.randn(1, 3, 42, 28)
    expected = official_outputs(official.model, x)
    with torch.no_grad():
        got = ours.forward_all(x)
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        assert relative_error(got[key], expected[key]) < TOLERANCE, key
