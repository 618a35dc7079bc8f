"""Depth Anything 3 in every job: load_depth_model on hub folders and runs, predict, evaluate in depth space,
DA3Metric's metres, WeSTAR through the CLI with the tiny DA3 card (adapts, exports a hub folder the official code
loads and an ONNX file onnxruntime agrees with), the dual teacher with a DA3 relative teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from builders import relative_error
from huggingface_hub import PyTorchModelHubMixin
from lightning import Trainer
from test_da3_parity import OfficialDepthAnything3, official_tiny_net, perturb
from torch import nn

import cli
from datamodules import SyntheticDataModule
from depthadapt.export import export_all
from depthadapt.metrics import affine_invariant_metrics
from depthadapt.models import CheckpointMismatchError, checkpoint_format, infer, load_depth_model
from depthadapt.models.card import DepthModelCard
from depthadapt.models.da3 import DepthAnything3, load_da3_hub
from depthadapt.models.lora import LoraSettings, add_lora
from lightning_modules import DepthMapWriter, DualTeacherLabeler, SupervisedDepth

ROOT = Path(__file__).resolve().parents[2]
TINY_CARD = ROOT / "config_yaml" / "models" / "tiny_da3_140.yaml"
SIZE = (28, 56)  # (H, W) of the synthetic images the jobs run on here


def tiny_card(**changes) -> DepthModelCard:
    """The committed tiny DA3 card (its hub folder under checkpoints/), at the tests' input size."""
    values = yaml.safe_load(TINY_CARD.read_text())
    values["checkpoint"] = str(ROOT / values["checkpoint"])
    return DepthModelCard(**{**values, "input_size": SIZE[0], **changes})


class OfficialTinyDA3(nn.Module, PyTorchModelHubMixin):
    """The official modules at da3-tiny's numbers behind the official hub wrapper's loading path
    (``from_pretrained``: config.json's ``model_name`` to the constructor, model.safetensors loaded strictly)."""

    def __init__(self, model_name: str = "da3-tiny") -> None:
        super().__init__()
        assert model_name == "da3-tiny"
        self.model = official_tiny_net()


def official_depth(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official network's depth for one view per image: B x 3 x H x W -> B x H x W."""
    with torch.no_grad():
        return net.eval()(x[:, None])["depth"][:, 0]


# --- load_depth_model ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_load_depth_model_sniffs_the_committed_hub_folder_and_matches_the_official_net() -> None:
    folder = ROOT / "checkpoints" / "tiny_da3_140"
    assert checkpoint_format(folder) == "da3_hub"
    model, card = load_depth_model(folder)
    assert (card.family, card.encoder, card.head, card.output) == ("da3", "da3-tiny", "relative", "depth")
    assert not model.training
    official = OfficialTinyDA3.from_pretrained(folder).model
    x = torch.randn(2, 3, 42, 70, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    assert ours.shape == (2, 42, 70)
    assert relative_error(ours, official_depth(official, x)) < 1e-4


@pytest.mark.unit
def test_load_depth_model_names_what_a_folder_lacks(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointMismatchError, match="DA3 hub folder"):
        load_depth_model(tmp_path)


# --- evaluation in depth space, DA3Metric's metres ------------------------------------------------------------------
@pytest.mark.unit
def test_depth_space_alignment_is_exact_for_an_affine_depth_and_not_for_disparity() -> None:
    gt = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1)) * 20 + 2
    pred = 0.5 * gt + 3.0  # depth up to scale and shift, as DA3 predicts
    depth_space = affine_invariant_metrics(pred, gt, space="depth")
    disparity_space = affine_invariant_metrics(pred, gt, space="disparity")
    assert depth_space["abs_rel"].item() < 1e-6 and depth_space["d1"].item() == 1.0
    assert disparity_space["abs_rel"].item() > 0.01


@pytest.mark.unit
def test_da3_metric_metres_are_focal_times_output_over_300_at_the_network_size() -> None:
    card = DepthModelCard(family="da3", encoder="da3metric-large", head="metric", input_size=140)
    output = torch.full((1, 280, 420), 2.0)
    # 280 x 420 runs at 140 x 210: the focal length halves, 600 px -> 300 px, so metres = 300 * 2 / 300.
    metres = card.to_metres(output, torch.tensor([[600.0, 600.0, 210.0, 140.0]]))
    assert torch.allclose(metres, torch.full_like(output, 2.0))
    fx_only = card.to_metres(output, torch.tensor([[1200.0, 600.0, 210.0, 140.0]]))
    assert torch.allclose(fx_only, torch.full_like(output, 3.0))  # mean of fx, fy: (600 + 300) / 2 = 450 px
    with pytest.raises(ValueError, match="focal length"):
        card.predict(nn.Identity(), torch.rand(1, 3, 28, 28))


def synthetic_data(tmp_path: Path, **changes) -> SyntheticDataModule:
    values = dict(family="street", style="target", height=SIZE[0], width=SIZE[1], train_range=(0, 2),
                  val_range=(2, 4), test_range=(4, 6), batch_size=2, num_workers=0, cache_dir=str(tmp_path / "cache"))
    return SyntheticDataModule(**{**values, **changes})


@pytest.mark.integration
def test_evaluate_scores_da3_depth_aligned_in_depth_space(tmp_path: Path) -> None:
    module = SupervisedDepth(model=tiny_card())
    data = synthetic_data(tmp_path)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    values = trainer.test(module, datamodule=data, verbose=False)[0]
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    model, _ = load_depth_model(ROOT / "checkpoints" / "tiny_da3_140")
    with torch.no_grad():
        output = infer(model, batch["image"], SIZE[0])
    protocol = data.evaluation_protocol
    expected = affine_invariant_metrics(output, batch["depth"], batch["valid"], protocol, space="depth")
    wrong_space = affine_invariant_metrics(output, batch["depth"], batch["valid"], protocol, space="disparity")
    assert values["test/abs_rel"] == pytest.approx(expected["abs_rel"].mean().item(), rel=1e-4)
    assert abs(values["test/abs_rel"] - wrong_space["abs_rel"].mean().item()) > 1e-3


# --- predict ----------------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_predict_writes_the_da3_depth(tmp_path: Path) -> None:
    module = SupervisedDepth(model=tiny_card())
    writer = DepthMapWriter(output_dir=str(tmp_path / "out"), formats=("npy", "color"))
    data = synthetic_data(tmp_path)
    Trainer(logger=False, enable_progress_bar=False, callbacks=[writer]).predict(module, datamodule=data,
                                                                                 return_predictions=False)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    model, _ = load_depth_model(ROOT / "checkpoints" / "tiny_da3_140")
    with torch.no_grad():
        expected = infer(model, batch["image"], SIZE[0])
    written = np.load(tmp_path / "out" / f"{Path(batch['name'][0]).with_suffix('')}.npy")
    assert np.allclose(written, expected[0].numpy(), rtol=1e-5, atol=1e-6)
    manifest = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert manifest["model"]["family"] == "da3"


# --- WeSTAR: the CLI with the tiny DA3 card; export to the hub folder and ONNX -----------------------------------
@pytest.fixture(scope="module")
def westar_da3(tmp_path_factory: pytest.TempPathFactory):
    """`python cli.py fit --config config_yaml/westar.yaml --model.model config_yaml/models/tiny_da3_140.yaml`, cut to
    two steps of two 28 x 56 images, exporting the hub folder, ONNX and the adapter."""
    root = tmp_path_factory.mktemp("westar_da3")
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(root / "checkpoints"), "save_last": True}},
                 {"class_path": "lightning_modules.ExportCallback",
                  "init_args": {"formats": ["official", "onnx", "peft"]}}]
    run = cli.main([
        "fit", "--config", str(ROOT / "config_yaml" / "westar.yaml"), "--model.model", str(TINY_CARD),
        "--model.input_size", str(SIZE[0]), "--model.lr", "0.05", "--model.eval_corruptions", "[]",
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", json.dumps(callbacks), "--trainer.limit_train_batches", "2",
        "--data.height", str(SIZE[0]), "--data.width", str(SIZE[1]), "--data.train_range", "[0, 4]",
        "--data.val_range", "[4, 6]", "--data.batch_size", "2", "--data.num_workers", "0",
        "--data.cache_dir", str(root / "cache"),
    ])
    return run.model, root / "checkpoints"


@pytest.mark.integration
def test_westar_puts_lora_on_the_da3_encoder_attention_only(westar_da3) -> None:
    module, _ = westar_da3
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in module.model.named_parameters() if ".lora_A" in name}
    assert adapted and all(".backbone.pretrained.blocks." in name for name in adapted)
    assert any(name.endswith("attn.qkv") for name in adapted) and any(name.endswith("attn.proj") for name in adapted)
    assert module.objective.output == "depth"
    assert all(metrics.space == "depth" for metrics in module.eval_metrics.values())


@pytest.mark.integration
def test_westar_adapts_the_da3_model(westar_da3) -> None:
    module, _ = westar_da3
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        adapted = module.model(x)
        with module.model.disable_adapter():
            source = module.model(x)
    assert relative_error(adapted, source) > 1e-4
    assert module.last_val_scores["adapted"]["clean"]["images"] == 2


@pytest.mark.integration
def test_westar_da3_exports_load_in_the_official_code_and_onnxruntime(westar_da3) -> None:
    module, folder = westar_da3
    x = torch.randn(2, 3, 42, 70, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        adapted = module.model.eval()(x)
    official = OfficialTinyDA3.from_pretrained(folder / "adapted_model_da3").model
    assert relative_error(official_depth(official, x), adapted) < 1e-4
    session = onnxruntime.InferenceSession(str(folder / "adapted_model.onnx"), providers=["CPUExecutionProvider"])
    onnx_depth = torch.from_numpy(session.run(["depth"], {"image": x.numpy()})[0])
    assert relative_error(onnx_depth, adapted) < 1e-4
    assert (folder / "lora_adapter" / "adapter_config.json").is_file()


@pytest.mark.integration
def test_load_depth_model_merges_a_da3_westar_checkpoint(westar_da3) -> None:
    module, folder = westar_da3
    model, card = load_depth_model(folder / "last.ckpt")
    assert (card.family, card.encoder, card.input_size) == ("da3", "da3-tiny", SIZE[0])
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert relative_error(model(x), module.model.eval()(x)) < 1e-5


@pytest.mark.integration
def test_export_of_an_adapted_official_model_loads_in_the_official_code(tmp_path: Path) -> None:
    """An official model name (da3-small) with LoRA on its attention, adapters perturbed: the hub folder export
    loads through the official wrapper's from_pretrained (its own registry config) with the adapted output."""
    torch.manual_seed(0)
    base = DepthAnything3("da3-small").eval()
    adapted = add_lora(base, LoraSettings(rank=2, targets=("qkv",)), within="backbone.pretrained.")
    perturb(adapted, seed=5)  # LoRA B starts at 0: perturbed, the adapters change the output
    x = torch.randn(1, 3, 28, 42, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = adapted(x)
    (hub,) = export_all(adapted, ["official"], tmp_path)
    official = OfficialDepthAnything3.from_pretrained(hub).model
    assert relative_error(official_depth(official, x), expected) < 1e-4
    ours, name = load_da3_hub(hub)
    assert name == "da3-small"


# --- the dual teacher with DA3 teachers -----------------------------------------------------------------------------
@pytest.mark.integration
def test_dual_teacher_fits_the_inverse_of_a_da3_relative_teacher(tmp_path: Path) -> None:
    relative = tiny_card()
    metric = DepthModelCard(encoder="vitt", head="metric", input_size=SIZE[0],
                            checkpoint=str(ROOT / "checkpoints" / "tiny_metric_street.pth"))
    module = DualTeacherLabeler(relative=relative, metric=metric, method="global_lstsq")
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(7))
    disparity, _ = module.teachers(image)
    model, _ = load_depth_model(ROOT / "checkpoints" / "tiny_da3_140")
    with torch.no_grad():
        depth = infer(model, image, SIZE[0])
    assert torch.allclose(disparity, 1.0 / depth, rtol=1e-5)


class ConstantDepth(nn.Module):
    """A stand-in network: the same output everywhere (B x 3 x H x W -> B x H x W)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], *x.shape[-2:])


@pytest.mark.integration
def test_dual_teacher_turns_a_da3_metric_teacher_into_metres() -> None:
    """DA3Metric as the metric teacher: its card's conversion, with the 334 M-parameter net replaced by a stand-in
    that outputs 5 everywhere; the images' network size equals their size here, so the focal length is unscaled."""
    relative = DepthModelCard(encoder="vitt", checkpoint=str(ROOT / "checkpoints" / "tiny_foundation_140.pth"),
                              input_size=SIZE[0])
    metric = DepthModelCard(encoder="vitt", head="metric", input_size=SIZE[0],
                            checkpoint=str(ROOT / "checkpoints" / "tiny_metric_street.pth"))
    module = DualTeacherLabeler(relative=relative, metric=metric, focal_length=30.0)
    module.cards["metric"] = DepthModelCard(family="da3", encoder="da3metric-large", head="metric", input_size=SIZE[0])
    module.metric = ConstantDepth(5.0)
    image = torch.rand(1, 3, *SIZE)
    _, metres = module.teachers(image)
    assert torch.allclose(metres, torch.full((1, *SIZE), 5.0 * 30.0 / 300.0))
    _, from_intrinsics = module.teachers(image, torch.tensor([[60.0, 60.0, 28.0, 14.0]]))
    assert torch.allclose(from_intrinsics, torch.full((1, *SIZE), 5.0 * 60.0 / 300.0))


@pytest.mark.unit
@pytest.mark.parametrize("form", ["normalised", "disparity"])
def test_westar_ordinal_term_ranks_a_depth_output_nearer_as_smaller(form: str) -> None:
    """Label +1: point 1 is farther. A depth map with point 1 deeper satisfies it (zero loss at margin 0); the same
    map read as disparity (the V2 convention) breaks it."""
    from depthadapt.westar import WeSTARLoss, WeSTARLossSettings

    depth = torch.tensor([[[8.0, 1.0], [2.0, 3.0]]])
    pairs = torch.tensor([[[0.0, 0, 0, 1, 1], [1.0, 1, 1, 0, 1]]])  # (0,0) behind (0,1); (1,1) behind (1,0)
    settings = WeSTARLossSettings(self_training_weight=0.0, regularizer_weight=0.0, ordinal_form=form,
                                  ordinal_margin=0.0)
    terms = {output: WeSTARLoss(settings, output)(depth, depth, ordinal=pairs)["ordinal"]
             for output in ("depth", "disparity")}
    assert terms["depth"].item() == 0.0
    assert terms["disparity"].item() > 0.1
