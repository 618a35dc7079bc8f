"""Build a Depth Anything 3 model with weights from any of our formats, and warm-start one from Depth Anything V2."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from depthadapt.models.da3.hub import is_da3_hub_folder, load_da3_hub, load_da3_state_dict
from depthadapt.models.da3.model import DepthAnything3
from depthadapt.models.weights.keys import CheckpointMismatchError, read_checkpoint
from depthadapt.models.weights.lightning import merge_lora_weights

log = logging.getLogger(__name__)

# Wrappers between a Lightning module's attribute and the network: an EMA teacher's AveragedModel, a peft model.
_WRAPPER_ROOTS = ("module.", "base_model.model.")
# Depth Anything V2 key roots -> ours for DA3: the same DINOv2 and DPT parts under the DA3 network's names.
DAV2_TO_DA3 = (("pretrained.", "backbone.pretrained."), ("depth_head.", "head."))


def build_da3_model(
    model_name: str,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_prefix: str | None = None,
    fill_sky: bool = True,
) -> DepthAnything3:
    """A DA3 model, random or with the weights of ``checkpoint``: an official hub folder, a ``.pth`` state dict with
    the network's key names (what `DepthAnything3.state_dict()` holds), or one of our Lightning ``.ckpt`` files
    (the trained model ``model.*``, or ``<checkpoint_prefix>.*``, e.g. ``teacher``; a WeSTAR run's LoRA weights
    merged). Strict: errors name the keys and the file."""
    if checkpoint is None:
        return DepthAnything3(model_name, fill_sky=fill_sky)
    path = Path(checkpoint)
    if path.is_dir():
        if not is_da3_hub_folder(path):
            raise CheckpointMismatchError(f"{path} is a folder but not a Depth Anything 3 hub folder (config.json with "
                                          "a model_name, model.safetensors)")
        model, name = load_da3_hub(path, fill_sky=fill_sky)
        if name != model_name:
            raise CheckpointMismatchError(f"{path} holds {name}, the model card says {model_name}")
        return model
    content = read_checkpoint(path)
    if not isinstance(content, Mapping):
        raise CheckpointMismatchError(f"{path} holds no state dict (a {type(content).__name__})")
    state = content
    if isinstance(content.get("state_dict"), Mapping):  # a Lightning checkpoint: the model under its prefix
        root = f"{(checkpoint_prefix or 'model').rstrip('.')}."
        hparams = content.get("hyper_parameters") if isinstance(content.get("hyper_parameters"), Mapping) else {}
        state = {_network_key(k[len(root):]): v for k, v in content["state_dict"].items()
                 if k.startswith(root) and k != f"{root}n_averaged"}  # the EMA's update count is no weight
        if not state:
            raise CheckpointMismatchError(f"{path} has no {root}* weights (a Lightning checkpoint of another task?)")
        state = merge_lora_weights(state, hparams, str(path))
    if any(k.startswith(old) for k in state for old, _ in DAV2_TO_DA3):
        raise CheckpointMismatchError(f"{path} is a Depth Anything V2 checkpoint (pretrained.* / depth_head.* keys), "
                                      f"not a {model_name} one; to start a DA3 model from it use SupervisedDepth's "
                                      "warm_start")
    with torch.device("meta"):
        model = DepthAnything3(model_name, fill_sky=fill_sky)
    load_da3_state_dict(model, dict(state), str(path))
    return model


def _network_key(key: str) -> str:
    """A Lightning module's key below its attribute -> the network's key (wrappers' roots removed)."""
    for root in _WRAPPER_ROOTS:
        if key.startswith(root):
            key = key[len(root):]
    return key


def warm_start_from_dav2(model: DepthAnything3, dav2_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every Depth Anything V2 tensor whose name (``pretrained.*`` -> ``backbone.pretrained.*``,
    ``depth_head.*`` -> ``head.*``) and shape match into ``model``; the model's blocks the file has no weights for
    start as identities (LayerScale 0), so the warm-started encoder begins close to the DAv2 one.

    -> {"loaded": model keys copied, "fresh": model keys left as built, "unused": file keys not used}.
    """
    target = model.state_dict()
    renamed = {}
    for key in dav2_state:
        for old, new in DAV2_TO_DA3:
            if key.startswith(old):
                renamed[new + key[len(old):]] = key
    loaded = sorted(k for k, source in renamed.items() if k in target and target[k].shape == dav2_state[source].shape)
    with torch.no_grad():
        for key in loaded:
            target[key].copy_(dav2_state[renamed[key]])
        blocks = model.backbone.pretrained.blocks
        for index, block in enumerate(blocks):
            if not any(k.startswith(f"backbone.pretrained.blocks.{index}.") for k in loaded):
                block.ls1.gamma.zero_()
                block.ls2.gamma.zero_()
    used = {renamed[k] for k in loaded}
    report = {"loaded": loaded, "fresh": sorted(set(target) - set(loaded)),
              "unused": sorted(k for k in dav2_state if k not in used)}
    log.info("warm start from Depth Anything V2: %d tensors loaded, %d fresh, %d of the file's unused",
             len(report["loaded"]), len(report["fresh"]), len(report["unused"]))
    return report
