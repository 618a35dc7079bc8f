"""Activation checkpointing of the encoder blocks: same loss and gradients, same state-dict keys, really recomputes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from depthadapt.losses import ssi_loss
from depthadapt.models import build_depth_model
from depthadapt.models.activation_checkpointing import enable_activation_checkpointing
from depthadapt.models.lora import add_lora

pytestmark = pytest.mark.unit

# The trained tiny relative model: a random one outputs ReLU(<0) = 0 almost everywhere, and no gradient at all.
TINY = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny_relative_street.pth"


def _loss_and_grads(model: nn.Module, image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """SSI loss of one forward + backward, and every parameter gradient (by state-dict name) it produced."""
    model.zero_grad(set_to_none=True)
    loss = ssi_loss(model(image), target, torch.ones_like(target, dtype=torch.bool))
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    return loss.detach(), {names[id(p)].replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
                           for p in model.parameters() if p.grad is not None}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 56, 70, generator=g), torch.rand(2, 56, 70, generator=g) + 0.1


def test_same_loss_and_gradients_and_state_dict_keys_on_vitt() -> None:
    plain = build_depth_model("vitt", checkpoint=TINY)
    checkpointed = copy.deepcopy(plain)
    keys = list(plain.state_dict())
    assert enable_activation_checkpointing(checkpointed) == 4
    assert enable_activation_checkpointing(checkpointed) == 4  # idempotent: no wrapper around a wrapper
    assert list(checkpointed.state_dict()) == keys
    plain.load_state_dict(checkpointed.state_dict(), strict=True)  # an official-format round trip
    image, target = _inputs()
    loss, grads = _loss_and_grads(plain, image, target)
    loss_c, grads_c = _loss_and_grads(checkpointed, image, target)
    torch.testing.assert_close(loss_c, loss)
    assert grads_c.keys() == grads.keys() and len(grads) > 100
    assert sum(grad.abs().sum() > 0 for grad in grads.values()) > 0.9 * len(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_blocks_are_recomputed_in_the_backward_pass() -> None:
    model = build_depth_model("vitt", checkpoint=TINY)
    calls = []
    model.pretrained.blocks[1].mlp.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    enable_activation_checkpointing(model)
    image, target = _inputs()
    loss = ssi_loss(model(image), target, torch.ones_like(target, dtype=torch.bool))
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # the block ran again during backward: its activations were not kept


@pytest.mark.parametrize("order", ["lora_first", "checkpointing_first"])
def test_works_under_peft_lora(order: str) -> None:
    torch.manual_seed(1)
    base = build_depth_model("vitt", checkpoint=TINY)
    plain = add_lora(copy.deepcopy(base))
    for name, param in plain.named_parameters():  # B = 0 at init would leave A without a gradient
        if "lora_B" in name:
            nn.init.normal_(param, std=0.02)
    if order == "lora_first":
        checkpointed = copy.deepcopy(plain)
        enable_activation_checkpointing(checkpointed)
    else:
        wrapped = copy.deepcopy(base)
        enable_activation_checkpointing(wrapped)
        checkpointed = add_lora(wrapped)
        checkpointed.load_state_dict(plain.state_dict(), strict=True)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    image, target = _inputs()
    loss, grads = _loss_and_grads(plain, image, target)
    loss_c, grads_c = _loss_and_grads(checkpointed, image, target)
    torch.testing.assert_close(loss_c, loss)
    assert grads.keys() == grads_c.keys() and all("lora_" in n for n in grads) and len(grads) == 8  # 4 qkv x A, B
    assert all(grad.abs().sum() > 0 for grad in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_a_model_without_an_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no DINOv2 encoder"):
        enable_activation_checkpointing(nn.Linear(2, 2))
