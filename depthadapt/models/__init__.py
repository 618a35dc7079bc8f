"""Depth Anything V2 models: build, load any checkpoint format (``load_depth_model``), export, infer.

Modules: ``dinov2`` and ``dpt_head`` (the network's parts), ``depth_anything`` (the network), ``factory``
(``build_depth_model``), ``card`` (a checkpoint with how to run it), ``transforms`` (the official preprocessing),
``lora`` (peft adapters), ``weights`` (every checkpoint format), ``loader`` (``load_depth_model``: any checkpoint,
its format sniffed).
"""

from depthadapt.models.card import DepthModelCard
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, DepthAnythingV2, EncoderConfig
from depthadapt.models.dinov2 import DINOv2, interpolate_pos_embed
from depthadapt.models.factory import build_depth_model
from depthadapt.models.loader import checkpoint_format, load_depth_model
from depthadapt.models.lora import merge_lora_adapter
from depthadapt.models.transforms import Preprocessing, infer, network_input_size, preprocess
from depthadapt.models.weights import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    check_state_dict,
    export_onnx,
    load_checkpoint,
    load_hf,
    merge_lora_weights,
    onnx_relative_error,
    read_checkpoint,
    save_hf,
    save_official,
    to_official_state_dict,
)

__all__ = [
    "ENCODER_CONFIGS",
    "HEADS",
    "CheckpointMismatchError",
    "DINOv2",
    "DepthAnythingV2",
    "DepthModelCard",
    "EncoderConfig",
    "UnreadableCheckpointError",
    "Preprocessing",
    "build_depth_model",
    "checkpoint_format",
    "check_state_dict",
    "export_onnx",
    "infer",
    "interpolate_pos_embed",
    "load_checkpoint",
    "load_depth_model",
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
