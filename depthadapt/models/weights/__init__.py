"""Weights in every format this project reads and writes: official ``.pth``, transformers folders, our Lightning
``.ckpt`` files and ONNX export.

Modules, leaves first: ``keys`` (key roots, errors, checks, safe reading), ``official``, ``transformers``,
``lightning``, ``onnx``, ``load`` (into a given model). ``depthadapt.models.load_depth_model`` sniffs the format
and builds the model a file describes.
"""

from depthadapt.models.weights.keys import (
    MODEL_KEY_ROOTS,
    CheckpointMismatchError,
    UnreadableCheckpointError,
    allow_in_checkpoints,
    check_state_dict,
    read_checkpoint,
)
from depthadapt.models.weights.lightning import STUDENT_PREFIX, merge_lora_weights
from depthadapt.models.weights.load import load_checkpoint
from depthadapt.models.weights.official import metadata_path, model_metadata, save_official, to_official_state_dict
from depthadapt.models.weights.onnx import export_onnx, onnx_relative_error
from depthadapt.models.weights.transformers import is_hf_folder, load_hf, save_hf

__all__ = [
    "MODEL_KEY_ROOTS",
    "STUDENT_PREFIX",
    "CheckpointMismatchError",
    "UnreadableCheckpointError",
    "allow_in_checkpoints",
    "check_state_dict",
    "export_onnx",
    "is_hf_folder",
    "load_checkpoint",
    "load_hf",
    "merge_lora_weights",
    "metadata_path",
    "model_metadata",
    "onnx_relative_error",
    "read_checkpoint",
    "save_hf",
    "save_official",
    "to_official_state_dict",
]
