"""Depth Anything V2 models: build, load official checkpoints, preprocess, infer."""

from __future__ import annotations

from pathlib import Path

from depthadapt.models.checkpoint import (
    CheckpointMismatchError,
    check_state_dict,
    load_checkpoint,
    to_official_state_dict,
)
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, DepthAnythingV2, EncoderConfig
from depthadapt.models.dinov2 import DINOv2, interpolate_pos_embed
from depthadapt.models.transforms import infer, network_input_size, preprocess


def build_depth_model(
    encoder: str,
    head: str = "relative",
    max_depth: float = 80.0,
    checkpoint: str | Path | None = None,
    checkpoint_prefix: str | None = None,
) -> DepthAnythingV2:
    """Build a Depth Anything V2 model, optionally loading an official `.pth` or a Lightning `.ckpt`."""
    model = DepthAnythingV2(encoder=encoder, head=head, max_depth=max_depth)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, prefix=checkpoint_prefix)
    return model


__all__ = [
    "ENCODER_CONFIGS",
    "HEADS",
    "CheckpointMismatchError",
    "DINOv2",
    "DepthAnythingV2",
    "EncoderConfig",
    "build_depth_model",
    "check_state_dict",
    "infer",
    "interpolate_pos_embed",
    "load_checkpoint",
    "network_input_size",
    "preprocess",
    "to_official_state_dict",
]
