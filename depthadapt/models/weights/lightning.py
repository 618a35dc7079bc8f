"""This project's Lightning ``.ckpt`` files: the model's weights among a task's (LoRA merged), its hyper-parameters."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from depthadapt.models.weights.keys import MODEL_KEY_ROOTS, CheckpointMismatchError

__all__ = ["STUDENT_PREFIX", "lightning_state_dict", "merge_lora_weights", "recorded_settings"]

STUDENT_PREFIX = "model."  # the trained model of a Lightning module (`self.model`); a WeSTAR run's student
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<adapter>[^.]+)\.weight$")
_LORA_OTHER = ("lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B")

log = logging.getLogger(__name__)


def merge_lora_weights(
    state: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], source: str
) -> dict[str, torch.Tensor]:
    """Fold peft LoRA weights of a state dict into their layers: W + (alpha / r) B A; other keys unchanged.

    `X.base_layer.weight` / `.bias` become `X.weight` / `.bias`, `X.lora_A|B.<adapter>.weight` disappear.
    The rank `r` and `alpha` come from `hparams`: a WeSTAR run's `lora` settings (`rank`, `alpha`), or the
    `lora_rank` / `lora_alpha` of checkpoints written before those settings were grouped.
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
    recorded_rank, alpha = _recorded_lora(hparams)
    if alpha is None:
        raise CheckpointMismatchError(
            f"{source} has LoRA weights but no LoRA alpha in its hyper_parameters: merge them with peft "
            "(PeftModel(...).merge_and_unload()) and save the result"
        )
    for module, parts in lora.items():
        if set(parts) != {"A", "B"} or f"{module}.weight" not in out:
            raise CheckpointMismatchError(f"{source}: LoRA layer {module} is incomplete (needs lora_A, lora_B, base)")
        rank = parts["A"].shape[0]
        if recorded_rank not in (None, rank):
            raise CheckpointMismatchError(
                f"{source}: {module} has LoRA rank {rank} but hyper_parameters say rank {recorded_rank}"
            )
        base = out[f"{module}.weight"]
        delta = parts["B"].float() @ parts["A"].float() * (float(alpha) / rank)
        out[f"{module}.weight"] = (base.float() + delta).to(base.dtype)
    return out


def _recorded_lora(hparams: Mapping[str, Any]) -> tuple[int | None, float | None]:
    """(rank, alpha) a checkpoint's hyper-parameters record: `lora` settings (an object or a mapping) or the older
    flat `lora_rank` / `lora_alpha`; None where absent."""
    settings = hparams.get("lora")
    if settings is None:
        return hparams.get("lora_rank"), hparams.get("lora_alpha")
    if isinstance(settings, Mapping):
        return settings.get("rank"), settings.get("alpha")
    return getattr(settings, "rank", None), getattr(settings, "alpha", None)


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


def lightning_state_dict(raw: object, path: Path, prefix: str | None) -> tuple[dict[str, torch.Tensor], dict]:
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


def recorded_settings(hparams: Mapping[str, Any]) -> Mapping[str, Any]:
    """encoder / head / max_depth from a Lightning run's hyper-parameters (flat, or its model card `model`)."""
    card = hparams.get("model")
    if hasattr(card, "encoder") and hasattr(card, "head"):
        return vars(card)
    return card if isinstance(card, Mapping) and "encoder" in card else hparams


