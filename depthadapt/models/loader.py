"""``load_depth_model``: any checkpoint this project reads, its format sniffed, built into the model it describes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthadapt.models.card import DepthModelCard
from depthadapt.models.da3.hub import is_da3_hub_folder, read_da3_hub_model_name
from depthadapt.models.depth_anything import ENCODER_CONFIGS
from depthadapt.models.weights.keys import CheckpointMismatchError, read_checkpoint
from depthadapt.models.weights.lightning import recorded_settings
from depthadapt.models.weights.official import metadata_path, read_sidecar
from depthadapt.models.weights.transformers import hf_card_facts, is_hf_folder

__all__ = ["checkpoint_card", "checkpoint_format", "load_depth_model"]

# Official metric checkpoints are named for the data they were fine-tuned on, which sets their depth range.
_OFFICIAL_METRIC_RANGES = {"hypersim": 20.0, "vkitti": 80.0}


# The official Depth Anything 3 preprocessing resizes the longer side to 504 (``process_res``); a card's input_size
# is the shorter side, so a hub folder's card runs at 504 rows or columns, whichever is shorter.
DA3_INPUT_SIZE = 504


def checkpoint_format(path: str | os.PathLike) -> str:
    """``"da3_hub"`` (a Depth Anything 3 hub folder), ``"transformers"`` (a folder with config.json),
    ``"lightning"`` (a .ckpt of ours) or ``"official"`` (a Depth Anything V2 .pth)."""
    path = Path(path)
    if is_da3_hub_folder(path):
        return "da3_hub"
    if is_hf_folder(path):
        return "transformers"
    if path.is_dir():
        raise CheckpointMismatchError(
            f"{path} is a folder but neither a transformers model nor a Depth Anything 3 hub folder (no config.json): "
            "give an official .pth, a transformers folder, a DA3 hub folder or a Lightning .ckpt"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (an official .pth, a transformers folder or a .ckpt)")
    return "lightning" if path.suffix == ".ckpt" else "official"


def _official_facts(path: Path, state: Any) -> dict[str, Any]:
    """Encoder from the weights' shapes; head and max depth from our sidecar, else from the official file name."""
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    width = state.get("pretrained.cls_token") if isinstance(state, Mapping) else None
    if not isinstance(width, torch.Tensor):
        raise CheckpointMismatchError(f"{path} is not a Depth Anything V2 checkpoint (no pretrained.cls_token)")
    depth = len({key.split(".")[2] for key in state if key.startswith("pretrained.blocks.")})
    encoders = [name for name, c in ENCODER_CONFIGS.items() if (c.embed_dim, c.depth) == (width.shape[-1], depth)]
    if not encoders:
        raise CheckpointMismatchError(
            f"{path}: an encoder {width.shape[-1]} wide with {depth} blocks matches none of {sorted(ENCODER_CONFIGS)}"
        )
    facts: dict[str, Any] = {"encoder": encoders[0]}
    recorded = read_sidecar(metadata_path(path))
    if recorded is not None:
        facts.update({k: recorded[k] for k in ("head", "max_depth", "input_size", "mean", "std") if k in recorded})
    else:
        name = path.name.lower()
        ranges = [depth for key, depth in _OFFICIAL_METRIC_RANGES.items() if key in name]
        if "metric" in name:
            facts.update(head="metric", max_depth=ranges[0] if ranges else 80.0)
    return facts


def _lightning_facts(path: Path, raw: Any) -> dict[str, Any]:
    """The model card a run of ours recorded in its hyper-parameters (with the size it ran at)."""
    hparams = raw.get("hyper_parameters") if isinstance(raw, Mapping) else None
    if not isinstance(hparams, Mapping):
        raise CheckpointMismatchError(f"{path} has no hyper_parameters: it is not a Lightning checkpoint of ours")
    card = hparams.get("model")
    if isinstance(card, DepthModelCard):
        facts = dataclasses.asdict(card)
    else:
        recorded = recorded_settings(hparams)
        facts = {k: recorded[k] for k in ("family", "encoder", "head", "max_depth", "input_size", "mean", "std")
                 if k in recorded}
    if hparams.get("input_size"):
        facts["input_size"] = hparams["input_size"]
    facts.pop("checkpoint", None)
    facts.pop("checkpoint_prefix", None)
    return facts


def checkpoint_card(path: str | os.PathLike, checkpoint_prefix: str | None = None) -> DepthModelCard:
    """The model card a checkpoint describes (see ``load_depth_model``), without building the model."""
    path = Path(path)
    kind = checkpoint_format(path)
    if kind == "da3_hub":
        name = read_da3_hub_model_name(path)
        facts = {"family": "da3", "encoder": name, "head": "metric" if name == "da3metric-large" else "relative",
                 "input_size": DA3_INPUT_SIZE}
    elif kind == "transformers":
        facts = hf_card_facts(path)
    elif kind == "lightning":
        facts = _lightning_facts(path, read_checkpoint(path))
    else:
        facts = _official_facts(path, read_checkpoint(path))
    return DepthModelCard(**facts, checkpoint=str(path), checkpoint_prefix=checkpoint_prefix)


def load_depth_model(path: str | os.PathLike) -> tuple[nn.Module, DepthModelCard]:
    """Load any checkpoint this project reads -> (model in eval mode, its card).

    ``path``: an official Depth Anything 3 hub folder (``config.json`` with ``model_name``, ``model.safetensors``:
    the model it names; ``forward`` returns the official network's ``depth`` output, before any focal scaling),
    an official Depth Anything V2 ``.pth`` (encoder from the weights' shapes; head and max depth from our
    export's sidecar, or from the official file name: ``..._metric_hypersim_...`` is metric to 20 m), a transformers
    Depth Anything folder (its config), or a Lightning ``.ckpt`` of this project (the card it was run with; a WeSTAR
    run's LoRA student, merged). ``model(x)``: ImageNet-normalised B x 3 x H x W, multiples of 14 -> B x H x W.
    """
    card = checkpoint_card(path)
    return card.build().eval(), card
