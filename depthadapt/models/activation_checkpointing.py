"""Activation checkpointing of the DINOv2 encoder blocks: recompute their activations in the backward pass.

A ViT's training memory is mostly the activations its blocks keep for the backward pass (batch x tokens x width
per layer, x 24 blocks for vitl). ``enable_activation_checkpointing`` replaces every block of every DINOv2 encoder
in a model by a wrapper that holds it and runs it under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``
(torch's own ``checkpoint_wrapper``, the one FSDP uses): only each block's input is kept, its inside is recomputed
during the backward pass (one more encoder forward per step). The wrapper hides itself from ``state_dict`` and
``load_state_dict``, so checkpoints, exports and peft adapters keep the official key names; it works on a bare
model, on one wrapped by peft LoRA (before or after ``add_lora``) and inside an EMA teacher's ``AveragedModel``.
"""

from __future__ import annotations

from torch import nn

# The public entry point of torch's activation checkpointing wrapper lives in this (underscored) module.
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    CheckpointWrapper,
    checkpoint_wrapper,
)

from depthadapt.models.dinov2 import DINOv2

__all__ = ["enable_activation_checkpointing"]


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every encoder block of ``model`` (in place); returns how many blocks are now checkpointed.

    Idempotent: blocks already wrapped stay as they are. Outputs and gradients are unchanged (the blocks are
    deterministic: no dropout in Depth Anything V2); ``state_dict()`` keys are unchanged (checked).
    """
    encoders = [module for module in model.modules() if isinstance(module, DINOv2)]
    if not encoders:
        raise ValueError(
            f"enable_activation_checkpointing: {type(model).__name__} holds no DINOv2 encoder (a Depth Anything V2 "
            "model's `pretrained`); pass the depth model, its peft wrapper or a module holding them"
        )
    keys = list(model.state_dict())
    wrapped = 0
    for encoder in encoders:
        for i, block in enumerate(encoder.blocks):
            if not isinstance(block, CheckpointWrapper):
                encoder.blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
            wrapped += 1
    if list(model.state_dict()) != keys:
        raise RuntimeError("enable_activation_checkpointing changed the state-dict keys: a bug, please report it")
    return wrapped
