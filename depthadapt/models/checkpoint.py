"""Checkpoint I/O: official Depth Anything V2 `.pth` files and this project's Lightning `.ckpt` files."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

MODEL_KEY_ROOTS = ("pretrained.", "depth_head.")
_MAX_LISTED = 20


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not match the model."""


def _listing(title: str, names: list[str]) -> str:
    shown = "\n    ".join(names[:_MAX_LISTED])
    more = f"\n    ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"  {title} ({len(names)}):\n    {shown}{more}"


def _model_state_dict(raw: object, path: Path, prefix: str | None) -> dict[str, torch.Tensor]:
    """Find the model's `pretrained.*` / `depth_head.*` weights in an official or Lightning checkpoint."""
    if not isinstance(raw, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a state dict, found {type(raw).__name__}")
    for wrapper in ("state_dict", "model"):  # Lightning .ckpt, and a common {"model": sd} wrapping
        if wrapper in raw and isinstance(raw[wrapper], Mapping):
            raw = raw[wrapper]
            break
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    prefixes: set[str] = set()
    for key in state:
        for root in MODEL_KEY_ROOTS:
            position = key.find(root)
            if position == 0 or (position > 0 and key[position - 1] == "."):
                prefixes.add(key[:position])
                break
    if prefix is None:
        if len(prefixes) > 1:
            raise CheckpointMismatchError(
                f"{path} holds several models (key prefixes {sorted(prefixes)}); "
                "choose one with checkpoint_prefix"
            )
        prefix = prefixes.pop() if prefixes else ""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = [f"checkpoint {source} does not match the model:"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if wrong_shape:
            parts.append(_listing("wrong shapes", wrong_shape))
        parts.append("  (is `encoder` or `head` set to what the checkpoint was trained with?)")
        raise CheckpointMismatchError("\n".join(parts))


def load_checkpoint(model: nn.Module, path: str | Path, prefix: str | None = None) -> nn.Module:
    """Load an official `.pth` or a Lightning `.ckpt` into `model` strictly; returns the model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # Lightning checkpoints pickle hyper-parameters; only then allow full unpickling
        raw = torch.load(path, map_location="cpu", weights_only=False)
    state = _model_state_dict(raw, path, prefix)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with the official key names (`pretrained.*`, `depth_head.*`), LoRA merged, on the CPU."""
    if hasattr(model, "merge_and_unload"):  # a peft LoRA model (peft is not imported: it loads transformers)
        model = copy.deepcopy(model).merge_and_unload()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    foreign = [k for k in state if not k.startswith(MODEL_KEY_ROOTS)]
    if foreign:
        raise CheckpointMismatchError(_listing("keys with no official name", foreign))
    return state
