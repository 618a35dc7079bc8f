"""Depth Anything V2 models: build, load and export checkpoints (official, transformers, ONNX), infer."""

from __future__ import annotations

from pathlib import Path

from depthadapt.models.checkpoint import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    check_state_dict,
    load_checkpoint,
    merge_lora_weights,
    read_checkpoint,
    save_official,
    to_official_state_dict,
)
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, DepthAnythingV2, EncoderConfig
from depthadapt.models.dinov2 import DINOv2, interpolate_pos_embed
from depthadapt.models.hf import load_hf, save_hf
from depthadapt.models.lora import merge_lora_adapter
from depthadapt.models.onnx import export_onnx, onnx_relative_error
from depthadapt.models.transforms import infer, infer_flip_tta, network_input_size, preprocess


def build_depth_model(
    encoder: str,
    head: str = "relative",
    max_depth: float = 80.0,
    checkpoint: str | Path | None = None,
    checkpoint_prefix: str | None = None,
) -> DepthAnythingV2:
    """Build a Depth Anything V2 model, optionally loading a checkpoint (see `load_checkpoint`).

    `checkpoint`: an official `.pth`, a transformers Depth Anything folder, or a Lightning `.ckpt` of this
    project (a WeSTAR run: the LoRA student, merged; `checkpoint_prefix="teacher"` for its EMA teacher).
    """
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
    "UnreadableCheckpointError",
    "build_depth_model",
    "check_state_dict",
    "export_onnx",
    "infer",
    "infer_flip_tta",
    "interpolate_pos_embed",
    "load_checkpoint",
    "load_hf",
    "merge_lora_adapter",
    "merge_lora_weights",
    "network_input_size",
    "onnx_relative_error",
    "preprocess",
    "read_checkpoint",
    "save_hf",
    "save_official",
    "to_official_state_dict",
]
