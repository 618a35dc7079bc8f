"""Export of a (LoRA-adapted) Depth Anything 3 model: the official hub folder and ONNX."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from torch import nn

from depthadapt.models.da3.hub import save_da3_hub
from depthadapt.models.da3.model import DepthAnything3
from depthadapt.models.weights.onnx import DEFAULT_OPSET, export_onnx

# Format -> what `export_all` appends to its stem: the official layout of DA3 is a hub folder.
DA3_EXPORT_SUFFIXES = {"official": "_da3", "onnx": ".onnx"}


def da3_network(model: nn.Module) -> DepthAnything3 | None:
    """The DepthAnything3 inside ``model`` (itself, or the base of a peft model on one); None for other models."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner if isinstance(inner, DepthAnything3) else None


def merged_da3(model: nn.Module) -> DepthAnything3:
    """A DepthAnything3 with ``model``'s LoRA adapters merged into a copy (``model`` itself when it has none)."""
    if da3_network(model) is None:
        raise TypeError(f"not a Depth Anything 3 model: {type(model).__name__}")
    return copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model


def export_da3(
    model: nn.Module, fmt: str, out: str | os.PathLike, opset: int = DEFAULT_OPSET, overwrite: bool = False
) -> Path:
    """Write a DA3 model (LoRA merged) to ``out``: ``official`` -> an official hub folder (config.json +
    model.safetensors; the official ``DepthAnything3.from_pretrained`` loads it), ``onnx`` -> ``image`` B x 3 x H x W
    -> ``depth`` B x H x W with dynamic batch and size. transformers has no DA3 class: ``hf`` is an error. An existing
    target that is not an earlier export of the same kind is refused unless ``overwrite``."""
    if fmt not in DA3_EXPORT_SUFFIXES:
        raise ValueError(f"a Depth Anything 3 model exports to {', '.join(DA3_EXPORT_SUFFIXES)} (official: the hub "
                         f"folder; transformers has no DA3 class), got {fmt!r}")
    plain = merged_da3(model)
    if fmt == "official":
        return save_da3_hub(plain, out, overwrite)
    facts = {"model_name": plain.model_name, "output": plain.config.output}
    return export_onnx(plain, out, opset=opset, overwrite=overwrite, metadata=facts)
