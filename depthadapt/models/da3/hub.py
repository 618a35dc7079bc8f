"""The official Depth Anything 3 hub folder: ``config.json`` (``{"model_name": "da3mono-large"}``) and
``model.safetensors``, the state dict of the official ``DepthAnything3`` wrapper (keys ``model.<network key>``),
as huggingface_hub's ``PyTorchModelHubMixin.save_pretrained`` writes it: tensors that two names share (the ray
branch's one LayerNorm under four names) are stored once, under one of the names.

Our `DepthAnything3` has the official network's key names, so loading is a prefix strip. safetensors files hold
tensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from depthadapt.io import atomic_directory
from depthadapt.models.da3.model import DepthAnything3, check_model_name
from depthadapt.models.weights.keys import CheckpointMismatchError, UnreadableCheckpointError, listing

HUB_CONFIG = "config.json"
HUB_WEIGHTS = "model.safetensors"
WRAPPER_PREFIX = "model."  # the official wrapper holds the network as `self.model`


def is_da3_hub_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` naming a ``model_name`` and a ``model.safetensors``."""
    path = Path(path)
    if not (path / HUB_CONFIG).is_file() or not (path / HUB_WEIGHTS).is_file():
        return False
    try:
        return "model_name" in json.loads((path / HUB_CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


def read_da3_hub_model_name(folder: str | os.PathLike) -> str:
    """The supported model name a hub folder's ``config.json`` gives; errors name the file."""
    config_path = Path(folder) / HUB_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: a Depth Anything 3 hub folder holds {HUB_CONFIG} and "
                                f"{HUB_WEIGHTS}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnreadableCheckpointError(f"{config_path} is not valid JSON ({error}); expected "
                                        '{"model_name": "da3mono-large"} or another model name') from error
    if not isinstance(config, dict) or not isinstance(config.get("model_name"), str):
        raise CheckpointMismatchError(f'{config_path} has no "model_name" string; expected e.g. '
                                      '{"model_name": "da3mono-large"}')
    try:
        check_model_name(config["model_name"])
    except ValueError as error:
        raise CheckpointMismatchError(f"{config_path}: {error}") from error
    return config["model_name"]


def _shared_peers(module: nn.Module) -> dict[str, set[str]]:
    """State-dict key -> the other keys naming the same parameter or buffer object (empty set when unshared).

    By object, not by storage address: a model on the meta device has no storage to compare.
    """
    groups: dict[int, set[str]] = {}
    named = (*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False))
    for key, tensor in named:
        groups.setdefault(id(tensor), set()).add(key)
    return {key: group - {key} for group in groups.values() for key in group}


def load_da3_state_dict(model: DepthAnything3, state: dict[str, torch.Tensor], source: str) -> None:
    """Load network-key tensors into ``model`` strictly: a missing or unexpected key or a shape mismatch raises
    `CheckpointMismatchError` naming the keys and ``source``. A key may be absent when a key sharing its tensor
    in the model is present (how the hub file stores shared tensors).

    A model on the meta device (built without initialising its weights) gets the tensors themselves, in its dtypes.
    """
    expected = model.state_dict()
    peers = _shared_peers(model)
    missing = sorted(k for k in expected if k not in state and not peers[k] & state.keys())
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in state.keys() & expected.keys()
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match Depth Anything 3 model {model.model_name!r}:"]
        for title, names in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if names:
                parts.append(listing(title, names))
        raise CheckpointMismatchError("\n".join(parts))
    on_meta = any(t.is_meta for t in expected.values())
    if on_meta:
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=on_meta)


def load_da3_hub(folder: str | os.PathLike, fill_sky: bool = True) -> tuple[DepthAnything3, str]:
    """An official Depth Anything 3 hub folder -> (our model with its weights, in eval mode; the model name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Depth Anything 3 hub folder not found: {folder}")
    model_name = read_da3_hub_model_name(folder)
    weights_path = folder / HUB_WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: a Depth Anything 3 hub folder holds {HUB_CONFIG} and "
                                f"{HUB_WEIGHTS}")
    try:
        file_state = load_file(weights_path)
    except (SafetensorError, OSError) as error:
        raise UnreadableCheckpointError(f"cannot read {weights_path}: {error}; the file is truncated or not a "
                                        "safetensors file, download or export it again") from error
    outside = sorted(k for k in file_state if not k.startswith(WRAPPER_PREFIX))
    if outside:
        raise CheckpointMismatchError(
            f"{weights_path} has keys outside the wrapper's {WRAPPER_PREFIX!r} prefix:\n"
            + listing("unexpected keys", outside)
        )
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = DepthAnything3(model_name, fill_sky=fill_sky)
    state = {k[len(WRAPPER_PREFIX):]: v for k, v in file_state.items()}
    load_da3_state_dict(model, state, str(weights_path))
    return model.eval(), model_name


class _HubWrapper(nn.Module):
    """The official wrapper's layout: the network as ``model``."""

    def __init__(self, model: DepthAnything3) -> None:
        super().__init__()
        self.model = model


def save_da3_hub(model: DepthAnything3, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model``'s weights as an official hub folder (atomically) -> the folder. An earlier hub export there is
    replaced; another non-empty folder is refused unless ``overwrite`` (then only the export's files are replaced).

    The official code loads it (``DepthAnything3.from_pretrained(folder)``) for the four official model names;
    ``da3-tiny`` is ours: only `load_da3_hub` reads it.
    """
    if not isinstance(model, DepthAnything3):
        raise TypeError(f"save_da3_hub takes a DepthAnything3 model, got {type(model).__name__}")
    folder = Path(folder)
    with atomic_directory(folder, "da3-hub", overwrite) as staging:
        # safetensors' own writer: shared tensors stored once under the name it keeps, as save_pretrained does.
        save_model(_HubWrapper(model), str(staging / HUB_WEIGHTS), metadata={"format": "pt"})
        (staging / HUB_CONFIG).write_text(json.dumps({"model_name": model.model_name}, indent=2) + "\n")
    return folder
