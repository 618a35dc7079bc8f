"""The official Depth Anything V2 format: a plain state dict (``pretrained.*``, ``depth_head.*``) in a ``.pth``, and our
JSON sidecar that records encoder, head and max depth beside an exported file."""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthadapt.io import ExistingOutputError, atomic_path, check_replaceable_file
from depthadapt.models.depth_anything import ENCODER_CONFIGS
from depthadapt.models.transforms import OFFICIAL_PREPROCESSING, Preprocessing
from depthadapt.models.weights.keys import MODEL_KEY_ROOTS, CheckpointMismatchError, listing

__all__ = ["SIDECAR_FORMAT", "check_official_target", "check_recorded", "metadata_path", "model_metadata",
           "read_sidecar", "save_official", "to_official_state_dict", "warn_on_official_name"]

SIDECAR_FORMAT = "depthadapt-official"  # marks our `<name>.json` next to an exported `<name>.pth`



def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar `<name>.json` that records an exported `<name>.pth`'s encoder, head and max depth."""
    return Path(path).with_suffix(".json")



def model_metadata(model: nn.Module, preprocessing: Preprocessing = OFFICIAL_PREPROCESSING) -> dict[str, Any]:
    """`encoder`, `head`, `max_depth` and `layer_indices` of a DepthAnythingV2 (or a peft model on one), with how
    it is run (`preprocessing`: input size, mean, std)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "format": SIDECAR_FORMAT,
        "encoder": inner.encoder,
        "head": inner.head,
        "max_depth": inner.max_depth,
        "layer_indices": list(inner.layer_indices),
        **preprocessing.describe(),
    }



def check_recorded(model: nn.Module, recorded: Mapping[str, Any], source: str) -> None:
    """Raise when what a checkpoint records (encoder, head, metric max depth) differs from the model."""
    ours = model_metadata(model)
    fields = ["encoder", "head"] + (["max_depth"] if ours["head"] == "metric" == recorded.get("head") else [])
    wrong = [f"{name} {recorded[name]!r} (the model has {ours[name]!r})" for name in fields
             if name in recorded and recorded[name] != ours[name]]
    if wrong:
        raise CheckpointMismatchError(
            f"{source} was saved with " + ", ".join(wrong) + ": build the model with the checkpoint's settings"
        )



def read_sidecar(sidecar: Path) -> dict[str, Any] | None:
    """The settings in an export's sidecar; None when there is none (another JSON file is not ours)."""
    if not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded.get("format") == SIDECAR_FORMAT else None



def warn_on_official_name(model: nn.Module, path: Path) -> None:
    """Official metric files are named `..._metric_...`: warn when the name and the requested head disagree."""
    name, head = path.name.lower(), model_metadata(model)["head"]
    if "metric" in name and head == "relative":
        warnings.warn(f"{path} looks like a metric checkpoint but head='relative' was asked for", stacklevel=3)
    elif head == "metric" and "depth_anything" in name and "metric" not in name:
        warnings.warn(f"{path} looks like a relative checkpoint but head='metric' was asked for", stacklevel=3)



def to_official_state_dict(model: nn.Module, check_layers: bool = True) -> dict[str, torch.Tensor]:
    """The model's weights with the official key names (`pretrained.*`, `depth_head.*`), LoRA merged, on the CPU.

    A model whose head reads other blocks than the official V2 code (a Depth Anything V1 transformers
    checkpoint) is refused unless `check_layers` is False: the official code would compute other outputs.
    """
    if hasattr(model, "merge_and_unload"):  # a peft LoRA model (peft is not imported: it loads transformers)
        model = copy.deepcopy(model).merge_and_unload()
    if check_layers and hasattr(model, "encoder"):
        official = ENCODER_CONFIGS[model.encoder].layer_indices
        if tuple(model.layer_indices) != official:
            raise CheckpointMismatchError(
                f"the model's head reads blocks {tuple(model.layer_indices)}, the official V2 code {official} "
                "(a Depth Anything V1 model): export it to transformers or ONNX instead"
            )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    foreign = [k for k in state if not k.startswith(MODEL_KEY_ROOTS)]
    if foreign:
        raise CheckpointMismatchError(listing("keys with no official name", foreign))
    return state



def check_official_target(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise unless `save_official` may write `path` and its sidecar: the two must differ, and neither may replace
    a file that is not an earlier export (one with our sidecar) unless `overwrite`."""
    path = Path(path)
    sidecar = metadata_path(path)
    if path.suffix == sidecar.suffix:
        raise ExistingOutputError(
            f"{path}: the weights would be overwritten by their {sidecar.suffix} sidecar; name them .pth"
        )
    ours = read_sidecar(sidecar) is not None
    check_replaceable_file(path, "official export (with a depthadapt sidecar)", lambda _: ours, overwrite)
    if sidecar.exists() and not ours and not overwrite:
        raise ExistingOutputError(
            f"{sidecar} is not a depthadapt sidecar and exporting {path.name} would replace it: give another name, "
            "or --overwrite (overwrite=True) to replace it"
        )


def save_official(
    model: nn.Module,
    path: str | os.PathLike,
    overwrite: bool = False,
    preprocessing: Preprocessing = OFFICIAL_PREPROCESSING,
) -> Path:
    """Write the official-format `.pth` (LoRA merged; loads strictly into the official code) and its sidecar.

    The sidecar `<name>.json` records encoder, head and max depth (the official key sets of a relative and
    a metric model are the same), so `build_depth_model` refuses the file with the wrong head, and the input
    size and normalisation the model runs at. Both atomic; `check_official_target` first (`overwrite`).
    """
    path = Path(path)
    check_official_target(path, overwrite)
    state = to_official_state_dict(model)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    with atomic_path(metadata_path(path)) as tmp:
        tmp.write_text(json.dumps(model_metadata(model, preprocessing), indent=2) + "\n")
    return path

