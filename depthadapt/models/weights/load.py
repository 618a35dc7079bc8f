"""Loading any checkpoint this project reads into a model: the format dispatcher on top of the package."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from depthadapt.models.weights.keys import CheckpointMismatchError, check_state_dict, read_checkpoint
from depthadapt.models.weights.lightning import lightning_state_dict, recorded_settings
from depthadapt.models.weights.official import check_recorded, metadata_path, read_sidecar, warn_on_official_name
from depthadapt.models.weights.transformers import is_hf_folder, load_hf

__all__ = ["load_checkpoint"]

def load_checkpoint(model: nn.Module, path: str | os.PathLike, prefix: str | None = None) -> nn.Module:
    """Load a checkpoint into `model` strictly; returns the model.

    `path`: an official `.pth`, a transformers Depth Anything folder, or a Lightning `.ckpt` of this
    project. Several models in one `.ckpt` (a WeSTAR run: the LoRA student `model.*` and its EMA teacher
    `teacher.module.*`): the student by default, `prefix` (e.g. `"teacher"`) chooses another; LoRA
    weights are merged. The encoder / head / max depth recorded with the weights (a Lightning run's
    hyper-parameters, an export's JSON sidecar, a transformers config) must equal the model's.
    """
    path = Path(path)
    if is_hf_folder(path):
        return load_hf(model, path)
    if path.is_dir():
        hint = (
            " It is a peft LoRA adapter: merge it onto its base with depthadapt.models.merge_lora_adapter"
            if (path / "adapter_config.json").is_file() else ""
        )
        raise CheckpointMismatchError(f"{path} is a folder but not a transformers model (no config.json).{hint}")
    state, hparams = lightning_state_dict(read_checkpoint(path), path, prefix)
    sidecar = metadata_path(path)
    if hparams:
        check_recorded(model, recorded_settings(hparams), str(path))
    elif (recorded := read_sidecar(sidecar)) is not None:
        check_recorded(model, recorded, f"{path} (per {sidecar.name})")
    else:
        warn_on_official_name(model, path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model

