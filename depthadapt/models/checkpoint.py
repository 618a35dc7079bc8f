"""Checkpoint I/O: official Depth Anything V2 `.pth` files and this project's Lightning `.ckpt` files.

Every file is read with `torch.load(weights_only=True)`: a checkpoint can hold tensors and plain
containers (plus the few harmless classes Lightning stores in its hyper-parameters), never code to run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import pathlib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthadapt.io import atomic_path

MODEL_KEY_ROOTS = ("pretrained.", "depth_head.")
SIDECAR_FORMAT = "depthadapt-official"  # marks our `<name>.json` next to an exported `<name>.pth`
STUDENT_PREFIX = "model."  # the trained model of a Lightning module (`self.model`); a WeSTAR run's student
_MAX_LISTED = 20
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<adapter>[^.]+)\.weight$")
_LORA_OTHER = ("lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B")

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys, shapes or recorded settings do not match the model."""


class UnreadableCheckpointError(ValueError):
    """A checkpoint file that cannot be read safely: corrupt, truncated, or holding pickled code."""


def _listing(title: str, names: list[str]) -> str:
    shown = "\n    ".join(names[:_MAX_LISTED])
    more = f"\n    ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"  {title} ({len(names)}):\n    {shown}{more}"


def _safe_globals() -> list[Any]:
    """Classes Lightning may pickle into a `.ckpt`'s hyper-parameters that carry data only."""
    allowed: list[Any] = [
        argparse.Namespace,
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.WindowsPath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
    ]
    with contextlib.suppress(ImportError):
        from jsonargparse import Namespace

        allowed.append(Namespace)
    from depthadapt.alignment import ScaleShiftFitOptions  # dataclasses of settings (this project's tasks store them)
    from depthadapt.models.card import DepthModelCard

    return [*allowed, DepthModelCard, ScaleShiftFitOptions]


def describe_checkpoint_error(path: Path, error: BaseException) -> UnreadableCheckpointError:
    """A clear error for a checkpoint `torch.load` could not read: names the file and what to do."""
    unsupported = re.search(r"Unsupported (global|operand)[^\n]*", str(error))
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = unsupported.group(0) if unsupported else lines[0] if lines else repr(error)
    if reason.startswith("Unsupported global"):
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or reason
        except Exception:  # a plain pickle, not a torch.save zip file
            names = reason
        return UnreadableCheckpointError(
            f"{path} holds pickled Python objects, not only weights ({names}). depthadapt loads checkpoints "
            "with torch.load(weights_only=True) and never runs code from a file. If the file comes from a "
            "source you trust, re-save its tensors alone: torch.save(torch.load(PATH, weights_only=False)"
            "['state_dict'], 'weights.pth')"
        )
    return UnreadableCheckpointError(
        f"cannot read checkpoint {path}: {reason}. The file is truncated, corrupt or not written by torch.save "
        "(depthadapt reads checkpoints with torch.load(weights_only=True)); download or export it again"
    )


def read_checkpoint(path: str | os.PathLike) -> Any:
    """`torch.load` a `.pth` / `.ckpt` on the CPU safely (`weights_only=True`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (an official .pth, a Lightning .ckpt or a transformers folder)"
        )
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise describe_checkpoint_error(path, error) from error


def merge_lora_weights(
    state: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], source: str
) -> dict[str, torch.Tensor]:
    """Fold peft LoRA weights of a state dict into their layers: W + (alpha / r) B A; other keys unchanged.

    `X.base_layer.weight` / `.bias` become `X.weight` / `.bias`, `X.lora_A|B.<adapter>.weight` disappear.
    The rank `r` and `alpha` come from `hparams` (`lora_rank`, `lora_alpha`: a WeSTAR run's hyper-parameters).
    """
    lora: dict[str, dict[str, torch.Tensor]] = {}
    adapters = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match is not None:
            lora.setdefault(match["module"], {})[match["part"]] = value
            adapters.add(match["adapter"])
        elif any(f".{name}" in key for name in _LORA_OTHER):
            raise CheckpointMismatchError(f"{source}: {key} is a LoRA variant (DoRA / embedding) not supported here")
        else:
            out[key.replace(".base_layer.", ".")] = value
    if not lora:
        return out
    if len(adapters) > 1:
        raise CheckpointMismatchError(f"{source} holds several LoRA adapters {sorted(adapters)}; merge one with peft")
    if "lora_alpha" not in hparams:
        raise CheckpointMismatchError(
            f"{source} has LoRA weights but no `lora_alpha` in its hyper_parameters: merge them with peft "
            "(PeftModel(...).merge_and_unload()) and save the result"
        )
    for module, parts in lora.items():
        if set(parts) != {"A", "B"} or f"{module}.weight" not in out:
            raise CheckpointMismatchError(f"{source}: LoRA layer {module} is incomplete (needs lora_A, lora_B, base)")
        rank = parts["A"].shape[0]
        if hparams.get("lora_rank", rank) != rank:
            raise CheckpointMismatchError(
                f"{source}: {module} has LoRA rank {rank} but hyper_parameters say lora_rank={hparams['lora_rank']}"
            )
        base = out[f"{module}.weight"]
        delta = parts["B"].float() @ parts["A"].float() * (float(hparams["lora_alpha"]) / rank)
        out[f"{module}.weight"] = (base.float() + delta).to(base.dtype)
    return out


def _choose_prefix(prefixes: set[str], prefix: str | None, path: Path) -> str:
    """The key prefix of the model to load among those found in a checkpoint (see `load_checkpoint`)."""
    found = sorted(prefixes) or [""]
    if prefix is not None:
        if prefix in prefixes or (prefix == "" and not prefixes):
            return prefix
        stem = prefix if prefix.endswith(".") else f"{prefix}."
        matches = [p for p in found if p.startswith(stem)]
        if len(matches) == 1:
            return matches[0]
        raise CheckpointMismatchError(f"{path}: checkpoint_prefix {prefix!r} matches {matches or 'none'} of {found}")
    if len(found) == 1:
        return found[0]
    students = [p for p in found if p.startswith(STUDENT_PREFIX)]
    if len(students) == 1:
        log.info("%s holds %s; loading %s (checkpoint_prefix chooses another, e.g. 'teacher')", path, found,
                 students[0])
        return students[0]
    raise CheckpointMismatchError(
        f"{path} holds several models (key prefixes {found}); choose one with checkpoint_prefix"
    )


def _model_state_dict(raw: object, path: Path, prefix: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    """The model's `pretrained.*` / `depth_head.*` weights (LoRA merged) and the hyper-parameters, if any."""
    if not isinstance(raw, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a state dict, found {type(raw).__name__}")
    hparams = raw.get("hyper_parameters") if isinstance(raw.get("hyper_parameters"), Mapping) else {}
    for wrapper in ("state_dict", "model"):  # Lightning .ckpt, and a common {"model": sd} wrapping
        if wrapper in raw and isinstance(raw[wrapper], Mapping):
            raw = raw[wrapper]
            break
    state = merge_lora_weights({k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}, hparams, str(path))
    prefixes: set[str] = set()
    for key in state:
        for root in MODEL_KEY_ROOTS:
            position = key.find(root)
            if position == 0 or (position > 0 and key[position - 1] == "."):
                prefixes.add(key[:position])
                break
    chosen = _choose_prefix(prefixes, prefix, path)
    return {k[len(chosen) :]: v for k, v in state.items() if k.startswith(chosen)}, dict(hparams)


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


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar `<name>.json` that records an exported `<name>.pth`'s encoder, head and max depth."""
    return Path(path).with_suffix(".json")


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """`encoder`, `head`, `max_depth` and `layer_indices` of a DepthAnythingV2 (or a peft model on one)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "format": SIDECAR_FORMAT,
        "encoder": inner.encoder,
        "head": inner.head,
        "max_depth": inner.max_depth,
        "layer_indices": list(inner.layer_indices),
    }


def _recorded_settings(hparams: Mapping[str, Any]) -> Mapping[str, Any]:
    """encoder / head / max_depth from a Lightning run's hyper-parameters (flat, or its model card `model`)."""
    card = hparams.get("model")
    if hasattr(card, "encoder") and hasattr(card, "head"):
        return vars(card)
    return card if isinstance(card, Mapping) and "encoder" in card else hparams


def _check_recorded(model: nn.Module, recorded: Mapping[str, Any], source: str) -> None:
    """Raise when what a checkpoint records (encoder, head, metric max depth) differs from the model."""
    ours = model_metadata(model)
    fields = ["encoder", "head"] + (["max_depth"] if ours["head"] == "metric" == recorded.get("head") else [])
    wrong = [f"{name} {recorded[name]!r} (the model has {ours[name]!r})" for name in fields
             if name in recorded and recorded[name] != ours[name]]
    if wrong:
        raise CheckpointMismatchError(
            f"{source} was saved with " + ", ".join(wrong) + ": build the model with the checkpoint's settings"
        )


def _read_sidecar(sidecar: Path) -> dict[str, Any] | None:
    """The settings in an export's sidecar; None when there is none (another JSON file is not ours)."""
    if not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded.get("format") == SIDECAR_FORMAT else None


def _warn_on_official_name(model: nn.Module, path: Path) -> None:
    """Official metric files are named `..._metric_...`: warn when the name and the requested head disagree."""
    name, head = path.name.lower(), model_metadata(model)["head"]
    if "metric" in name and head == "relative":
        warnings.warn(f"{path} looks like a metric checkpoint but head='relative' was asked for", stacklevel=3)
    elif head == "metric" and "depth_anything" in name and "metric" not in name:
        warnings.warn(f"{path} looks like a relative checkpoint but head='metric' was asked for", stacklevel=3)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, prefix: str | None = None) -> nn.Module:
    """Load a checkpoint into `model` strictly; returns the model.

    `path`: an official `.pth`, a transformers Depth Anything folder, or a Lightning `.ckpt` of this
    project. Several models in one `.ckpt` (a WeSTAR run: the LoRA student `model.*` and its EMA teacher
    `teacher.module.*`): the student by default, `prefix` (e.g. `"teacher"`) chooses another; LoRA
    weights are merged. The encoder / head / max depth recorded with the weights (a Lightning run's
    hyper-parameters, an export's JSON sidecar, a transformers config) must equal the model's.
    """
    path = Path(path)
    from depthadapt.models.hf import is_hf_folder, load_hf

    if is_hf_folder(path):
        return load_hf(model, path)
    if path.is_dir():
        hint = (
            " It is a peft LoRA adapter: merge it onto its base with depthadapt.models.merge_lora_adapter"
            if (path / "adapter_config.json").is_file() else ""
        )
        raise CheckpointMismatchError(f"{path} is a folder but not a transformers model (no config.json).{hint}")
    state, hparams = _model_state_dict(read_checkpoint(path), path, prefix)
    sidecar = metadata_path(path)
    if hparams:
        _check_recorded(model, _recorded_settings(hparams), str(path))
    elif (recorded := _read_sidecar(sidecar)) is not None:
        _check_recorded(model, recorded, f"{path} (per {sidecar.name})")
    else:
        _warn_on_official_name(model, path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model


def to_official_state_dict(model: nn.Module, check_layers: bool = True) -> dict[str, torch.Tensor]:
    """The model's weights with the official key names (`pretrained.*`, `depth_head.*`), LoRA merged, on the CPU.

    A model whose head reads other blocks than the official V2 code (a Depth Anything V1 transformers
    checkpoint) is refused unless `check_layers` is False: the official code would compute other outputs.
    """
    if hasattr(model, "merge_and_unload"):  # a peft LoRA model (peft is not imported: it loads transformers)
        model = copy.deepcopy(model).merge_and_unload()
    if check_layers and hasattr(model, "encoder"):
        from depthadapt.models.depth_anything import ENCODER_CONFIGS

        official = ENCODER_CONFIGS[model.encoder].layer_indices
        if tuple(model.layer_indices) != official:
            raise CheckpointMismatchError(
                f"the model's head reads blocks {tuple(model.layer_indices)}, the official V2 code {official} "
                "(a Depth Anything V1 model): export it to transformers or ONNX instead"
            )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    foreign = [k for k in state if not k.startswith(MODEL_KEY_ROOTS)]
    if foreign:
        raise CheckpointMismatchError(_listing("keys with no official name", foreign))
    return state


def save_official(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the official-format `.pth` (LoRA merged; loads strictly into the official code) and its sidecar.

    The sidecar `<name>.json` records encoder, head and max depth (the official key sets of a relative and
    a metric model are the same), so `build_depth_model` refuses the file with the wrong head. Both atomic.
    """
    path = Path(path)
    state = to_official_state_dict(model)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    with atomic_path(metadata_path(path)) as tmp:
        tmp.write_text(json.dumps(model_metadata(model), indent=2) + "\n")
    return path
