"""Depth Anything 3 cards and training: building from every format, the warm start from Depth Anything V2, and
SupervisedDepth on a da3 card (SSI in depth space)."""

from __future__ import annotations

import pytest
import torch
from builders import synthetic_batch

from depthadapt.losses import ssi_loss
from depthadapt.metrics import depth_to_disparity
from depthadapt.models import CheckpointMismatchError, build_depth_model, to_official_state_dict
from depthadapt.models.card import DepthModelCard
from depthadapt.models.da3 import DepthAnything3, save_da3_hub
from depthadapt.models.da3.build import build_da3_model, warm_start_from_dav2
from lightning_modules import SupervisedDepth

pytestmark = pytest.mark.integration


def tiny_card(**changes) -> DepthModelCard:
    return DepthModelCard(**({"encoder": "da3-tiny", "family": "da3", "input_size": 28} | changes))


def test_da3_cards_name_a_model_and_their_output() -> None:
    card = tiny_card()
    assert isinstance(card.build(), DepthAnything3) and card.build().model_name == "da3-tiny"
    assert card.output == "depth"
    assert DepthModelCard("vitt").output == "disparity" and DepthModelCard("vitt", head="metric").output == "metric"
    assert tiny_card(encoder="da3metric-large", head="metric").output == "metric"
    with pytest.raises(ValueError, match="a da3 card's encoder names the model, one of \\['da3-base'"):
        tiny_card(encoder="vitt")
    with pytest.raises(ValueError, match="head is metric for da3metric-large"):
        tiny_card(head="metric")
    with pytest.raises(ValueError, match="family must be one of \\('dav2', 'da3'\\)"):
        DepthModelCard("vitt", family="dav3")


def test_build_from_a_hub_folder_a_pth_and_a_lightning_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = DepthAnything3("da3-tiny").eval()
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        expected = model(x)
    save_da3_hub(model, tmp_path / "hub")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "weights.pth")
    torch.save({"state_dict": {f"teacher.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "run.ckpt")
    built = {
        "hub": tiny_card(checkpoint=str(tmp_path / "hub")).build(),
        "pth": tiny_card(checkpoint=str(tmp_path / "weights.pth")).build(),
        "ckpt": build_da3_model("da3-tiny", tmp_path / "run.ckpt", checkpoint_prefix="teacher"),
    }
    for name, loaded in built.items():
        with torch.no_grad():
            got = loaded.eval()(x)
        tolerance = 1e-2 if name == "pth" else 0.0  # float16 weights
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= tolerance, name
    with pytest.raises(CheckpointMismatchError, match="run.ckpt has no model.\\* weights"):
        build_da3_model("da3-tiny", tmp_path / "run.ckpt")
    with pytest.raises(CheckpointMismatchError, match="holds da3-tiny, the model card says da3-small"):
        build_da3_model("da3-small", tmp_path / "hub")
    torch.save(to_official_state_dict(build_depth_model("vitt")), tmp_path / "dav2.pth")
    with pytest.raises(CheckpointMismatchError, match="dav2.pth is a Depth Anything V2 checkpoint.*warm_start"):
        build_da3_model("da3-tiny", tmp_path / "dav2.pth")


def test_warm_start_copies_the_shared_dinov2_and_dpt_tensors() -> None:
    torch.manual_seed(0)
    dav2 = to_official_state_dict(build_depth_model("vitt"))
    model = DepthAnything3("da3-tiny")
    report = warm_start_from_dav2(model, dav2)
    state = model.state_dict()
    for key in ("pretrained.blocks.3.attn.qkv.weight", "pretrained.patch_embed.proj.weight", "pretrained.pos_embed"):
        assert torch.equal(state[f"backbone.{key}"], dav2[key])
    fusion = "scratch.refinenet2.out_conv.weight"
    assert torch.equal(state[f"head.{fusion}"], dav2[f"depth_head.{fusion}"])
    # Shapes differ (DualDPT projects 2 x 192 channels, predicts depth and confidence) or DA3 has no such tensor.
    assert {"pretrained.mask_token", "depth_head.projects.0.weight", "depth_head.scratch.output_conv2.2.weight",
            "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight"} <= set(report["unused"])
    assert "backbone.pretrained.blocks.3.attn.q_norm.weight" in report["fresh"]
    assert len(report["loaded"]) + len(report["fresh"]) == len(state)
    blocks = model.backbone.pretrained.blocks
    assert all(torch.all(blocks[i].ls1.gamma == 0) and torch.all(blocks[i].ls2.gamma == 0) for i in (4, 5))
    assert torch.all(blocks[3].ls1.gamma == dav2["pretrained.blocks.3.ls1.gamma"])


def test_supervised_depth_trains_a_da3_card_in_depth_space(tmp_path) -> None:
    torch.manual_seed(0)
    torch.save(to_official_state_dict(build_depth_model("vitt")), tmp_path / "dav2.pth")
    task = SupervisedDepth(tiny_card(), lr=1e-4, warm_start=str(tmp_path / "dav2.pth"))
    assert torch.equal(task.model.state_dict()["backbone.pretrained.cls_token"],
                       torch.load(tmp_path / "dav2.pth")["pretrained.cls_token"])
    batch = synthetic_batch()
    loss = task.training_step(batch, 0)
    pred = task(batch["image"])
    loss = loss.item()
    assert loss == pytest.approx(ssi_loss(pred, batch["depth"], batch["valid"]).item(), rel=1e-5)
    assert loss != pytest.approx(ssi_loss(pred, depth_to_disparity(batch["depth"]), batch["valid"]).item(), rel=1e-2)
    encoder, decoder = (group["params"] for group in task.parameter_groups())
    assert len(encoder) == len(list(task.model.backbone.parameters()))
    assert len(encoder) + len(decoder) == len(list(task.model.parameters()))
    assert task.val_metrics.space == task.test_metrics.space == "depth"  # scored aligned in depth space
    with pytest.raises(ValueError, match="init: full"):
        SupervisedDepth(tiny_card(), init="encoder")
    with pytest.raises(ValueError, match="warm_start initialises a Depth Anything 3 model"):
        SupervisedDepth(DepthModelCard("vitt", input_size=28), warm_start=str(tmp_path / "dav2.pth"))


def test_activation_checkpointing_wraps_the_da3_blocks_without_changing_gradients() -> None:
    from depthadapt.models.activation_checkpointing import enable_activation_checkpointing

    torch.manual_seed(0)
    plain = DepthAnything3("da3-tiny")
    checkpointed = DepthAnything3("da3-tiny")
    checkpointed.load_state_dict(plain.state_dict())
    assert enable_activation_checkpointing(checkpointed) == 6
    x = torch.randn(1, 3, 28, 42)
    for model in (plain, checkpointed):
        model(x).log().mean().backward()
    names = [name for name, _ in plain.named_parameters()]
    assert "backbone.pretrained.blocks.4.attn.q_norm.weight" in names
    for name, a, b in zip(names, plain.parameters(), checkpointed.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), name
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
