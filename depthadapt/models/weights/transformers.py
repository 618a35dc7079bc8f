"""The transformers Depth Anything format (`config.json` + `model.safetensors`), read and written.

One key table maps the official names (`pretrained.*`, `depth_head.*`) to transformers' names
(`backbone.*`, `neck.*`, `head.*`) and back: the attention `qkv` is split into query / key / value, the
fusion blocks run in the opposite order (`refinenet4` is transformers' fusion layer 0), layer scales are
`lambda1`, and the DINOv2 blocks that feed the head are `out_indices` (block index + 1).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthadapt.io import atomic_directory, check_export_directory
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, DepthAnythingV2
from depthadapt.models.dinov2 import PATCH_SIZE, PRETRAIN_SIZE
from depthadapt.models.transforms import OFFICIAL_PREPROCESSING, Preprocessing
from depthadapt.models.weights.keys import CheckpointMismatchError, check_state_dict, describe_checkpoint_error
from depthadapt.models.weights.official import to_official_state_dict

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX_NAME = "model.safetensors.index.json"
HF_EXPORT_KIND = "hf"  # the kind an exported transformers folder records (depthadapt.io.atomic_directory)
REASSEMBLE_FACTORS = (4, 2, 1, 0.5)
HEAD_HIDDEN_SIZE = 32


def _same(i: int) -> int:
    return i


# (official name, transformers name, official index -> transformers index, and back). `{i}` is an index;
# entries ending in "." are module prefixes (any parameter below them), the others whole names.
KEY_TABLE: tuple[tuple[str, str, Callable[[int], int], Callable[[int], int]], ...] = (
    ("pretrained.cls_token", "backbone.embeddings.cls_token", _same, _same),
    ("pretrained.mask_token", "backbone.embeddings.mask_token", _same, _same),
    ("pretrained.pos_embed", "backbone.embeddings.position_embeddings", _same, _same),
    ("pretrained.patch_embed.proj.", "backbone.embeddings.patch_embeddings.projection.", _same, _same),
    ("pretrained.norm.", "backbone.layernorm.", _same, _same),
    ("pretrained.blocks.{i}.norm1.", "backbone.encoder.layer.{i}.norm1.", _same, _same),
    ("pretrained.blocks.{i}.attn.proj.", "backbone.encoder.layer.{i}.attention.output.dense.", _same, _same),
    ("pretrained.blocks.{i}.ls1.gamma", "backbone.encoder.layer.{i}.layer_scale1.lambda1", _same, _same),
    ("pretrained.blocks.{i}.norm2.", "backbone.encoder.layer.{i}.norm2.", _same, _same),
    ("pretrained.blocks.{i}.mlp.fc1.", "backbone.encoder.layer.{i}.mlp.fc1.", _same, _same),
    ("pretrained.blocks.{i}.mlp.fc2.", "backbone.encoder.layer.{i}.mlp.fc2.", _same, _same),
    ("pretrained.blocks.{i}.ls2.gamma", "backbone.encoder.layer.{i}.layer_scale2.lambda1", _same, _same),
    ("depth_head.projects.{i}.", "neck.reassemble_stage.layers.{i}.projection.", _same, _same),
    ("depth_head.resize_layers.{i}.", "neck.reassemble_stage.layers.{i}.resize.", _same, _same),
    ("depth_head.scratch.layer{i}_rn.", "neck.convs.{i}.", lambda i: i - 1, lambda i: i + 1),
    ("depth_head.scratch.refinenet{i}.out_conv.", "neck.fusion_stage.layers.{i}.projection.",
     lambda i: 4 - i, lambda i: 4 - i),
    ("depth_head.scratch.refinenet{i}.resConfUnit1.conv1.",
     "neck.fusion_stage.layers.{i}.residual_layer1.convolution1.", lambda i: 4 - i, lambda i: 4 - i),
    ("depth_head.scratch.refinenet{i}.resConfUnit1.conv2.",
     "neck.fusion_stage.layers.{i}.residual_layer1.convolution2.", lambda i: 4 - i, lambda i: 4 - i),
    ("depth_head.scratch.refinenet{i}.resConfUnit2.conv1.",
     "neck.fusion_stage.layers.{i}.residual_layer2.convolution1.", lambda i: 4 - i, lambda i: 4 - i),
    ("depth_head.scratch.refinenet{i}.resConfUnit2.conv2.",
     "neck.fusion_stage.layers.{i}.residual_layer2.convolution2.", lambda i: 4 - i, lambda i: 4 - i),
    ("depth_head.scratch.output_conv1.", "head.conv1.", _same, _same),
    ("depth_head.scratch.output_conv2.0.", "head.conv2.", _same, _same),
    ("depth_head.scratch.output_conv2.2.", "head.conv3.", _same, _same),
)
QKV = ("pretrained.blocks.{i}.attn.qkv.", "backbone.encoder.layer.{i}.attention.attention.{part}.")
QKV_PARTS = ("query", "key", "value")
# transformers 5 names its DINOv2 modules differently in memory (it still saves and reads the names above).
V5_NAMES = (
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
)
HEAD_CONV3 = "depth_head.scratch.output_conv2.2."


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(re.escape("{i}"), r"(\d+)").replace(re.escape("{part}"), r"(\w+)")
    return re.compile(body + (r"(.+)$" if template.endswith(".") else "$"))


def _rename(key: str, table: tuple[tuple[str, str, Callable[[int], int]], ...]) -> str | None:
    """`key` renamed by the first matching (source template, target template, index map), or None."""
    for source, target, index_map in table:
        match = _pattern(source).match(key)
        if match is None:
            continue
        groups = match.groups()
        name = target.replace("{i}", str(index_map(int(groups[0])))) if "{i}" in source else target
        return name + (groups[-1] if source.endswith(".") else "")
    return None


_TO_HF = tuple((official, hf, forward) for official, hf, forward, _ in KEY_TABLE)
_TO_OFFICIAL = tuple((hf, official, backward) for official, hf, _, backward in KEY_TABLE)


def _rename_all(
    items: list[tuple[str, torch.Tensor]], table: tuple[tuple[str, str, Callable[[int], int]], ...]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(key, tensor) pairs renamed by ``table`` -> (renamed state dict, the keys without a name)."""
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in items:
        name = _rename(key, table)
        if name is None:
            unmapped.append(key)
        else:
            out[name] = value
    return out, unmapped


def official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Depth Anything V2 state dict -> transformers `DepthAnythingForDepthEstimation` state dict."""
    qkv = _pattern(QKV[0])
    split: dict[str, torch.Tensor] = {}
    rest = []
    for key, value in state.items():
        match = qkv.match(key)
        if match is None:
            rest.append((key, value))
            continue
        block, suffix = match.groups()
        for part, chunk in zip(QKV_PARTS, value.chunk(3, dim=0), strict=True):
            split[QKV[1].format(i=block, part=part) + suffix] = chunk.contiguous()
    out, unmapped = _rename_all(rest, _TO_HF)
    if unmapped:
        raise CheckpointMismatchError(f"no transformers name for {len(unmapped)} keys: {unmapped[:10]}")
    return split | out


def hf_to_official(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """transformers Depth Anything state dict (saved or in-memory names) -> official state dict."""
    qkv = _pattern(QKV[1])
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = []
    for key, value in state.items():
        for new, saved in V5_NAMES:
            key = key.replace(new, saved)
        match = qkv.match(key)
        if match is not None and match.group(2) in QKV_PARTS:
            block, part, suffix = match.groups()
            parts.setdefault((block, suffix), {})[part] = value
        else:
            rest.append((key, value))
    out, unmapped = _rename_all(rest, _TO_OFFICIAL)
    for (block, suffix), tensors in parts.items():
        if set(tensors) != set(QKV_PARTS):
            unmapped.extend(f"backbone.encoder.layer.{block}.attention.attention.{p}.{suffix}" for p in tensors)
            continue
        out[QKV[0].format(i=block) + suffix] = torch.cat([tensors[p] for p in QKV_PARTS], dim=0)
    if unmapped:
        raise CheckpointMismatchError(
            f"{source}: {len(unmapped)} keys are not part of a Depth Anything model: {sorted(unmapped)[:10]}"
        )
    return out


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a transformers model folder (holds `config.json`)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def _shard_index(index: Path) -> dict[str, str]:
    """The `weight_map` (parameter -> shard file) of a sharded checkpoint's index; errors name the file."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (ValueError, AttributeError) as error:
        raise CheckpointMismatchError(f"{index} is not a JSON object: {error}") from error
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointMismatchError(f"{index} has no weight_map (parameter -> shard file): copy it again")
    return weight_map


def read_hf_config(directory: Path) -> Any:
    """The folder's `DepthAnythingConfig`; an unreadable or foreign `config.json` is an error naming it."""
    from transformers import DepthAnythingConfig

    try:
        return DepthAnythingConfig.from_pretrained(directory)
    except Exception as error:  # transformers raises OSError, ValueError, TypeError, ... for a bad config
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointMismatchError(
            f"{directory / CONFIG_NAME} is not a transformers Depth Anything config ({reason})"
        ) from error


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / SHARD_INDEX_NAME
    files = sorted(set(_shard_index(index).values())) if index.is_file() else []
    if not files:
        files = [name for name in WEIGHT_NAMES if (directory / name).is_file()][:1]
    if not files:
        raise FileNotFoundError(
            f"{directory}: no weights ({' or '.join(WEIGHT_NAMES)}) next to {CONFIG_NAME}; copy the whole "
            "transformers model folder"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = directory / name
        try:
            if name.endswith(".safetensors"):
                state.update(load_file(path))
            else:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:
            raise describe_checkpoint_error(path, error) from error
    return state


def _config_layout(config: Any, path: Path) -> tuple[str, tuple[int, ...]]:
    """The encoder name and the head's block indices a transformers config describes; errors name the field."""
    backbone = config.backbone_config
    if backbone is None or getattr(backbone, "model_type", None) != "dinov2":
        raise CheckpointMismatchError(f"{path}: backbone_config must be a dinov2 config, got {backbone}")
    if getattr(backbone, "use_swiglu_ffn", False) or backbone.patch_size != PATCH_SIZE:
        raise CheckpointMismatchError(f"{path}: a DINOv2 giant (SwiGLU) or non-/14 backbone is not supported")
    size = (backbone.hidden_size, backbone.num_hidden_layers, backbone.num_attention_heads)
    encoders = [name for name, c in ENCODER_CONFIGS.items() if (c.embed_dim, c.depth, c.num_heads) == size]
    if not encoders:
        raise CheckpointMismatchError(
            f"{path}: backbone hidden_size / num_hidden_layers / num_attention_heads {size} match no encoder "
            f"({', '.join(ENCODER_CONFIGS)})"
        )
    encoder = encoders[0]
    expected = ENCODER_CONFIGS[encoder]
    layout = {
        "fusion_hidden_size": (config.fusion_hidden_size, expected.features),
        "neck_hidden_sizes": (tuple(config.neck_hidden_sizes), expected.out_channels),
        "reassemble_hidden_size": (config.reassemble_hidden_size, expected.embed_dim),
        "reassemble_factors": (tuple(config.reassemble_factors), REASSEMBLE_FACTORS),
        "head_hidden_size": (config.head_hidden_size, HEAD_HIDDEN_SIZE),
        "head_in_index": (config.head_in_index, -1),
    }
    wrong = {field: got for field, (got, want) in layout.items() if got != want}
    if wrong:
        raise CheckpointMismatchError(f"{path}: {wrong} differ from the Depth Anything {encoder} layout")
    return encoder, tuple(i - 1 for i in backbone.out_indices)


def hf_card_facts(directory: str | os.PathLike) -> dict[str, Any]:
    """Encoder, head, max depth and input size of a transformers Depth Anything folder (its config files)."""
    path = Path(directory)
    config = read_hf_config(path)
    encoder, _ = _config_layout(config, path / CONFIG_NAME)
    facts: dict[str, Any] = {"encoder": encoder, "head": config.depth_estimation_type}
    if config.depth_estimation_type == "metric":
        facts["max_depth"] = float(config.max_depth)
    processor = path / PREPROCESSOR_NAME
    if processor.is_file():
        try:
            settings = json.loads(processor.read_text())
        except ValueError as error:
            raise CheckpointMismatchError(f"{processor} is not valid JSON: {error}") from error
        if not isinstance(settings, Mapping):
            raise CheckpointMismatchError(f"{processor} must be a JSON object, got {type(settings).__name__}")
        size = settings.get("size") or {}
        if isinstance(size, Mapping) and isinstance(size.get("height"), int):
            facts["input_size"] = min(size["height"], size.get("width", size["height"]))
        if settings.get("image_mean") and settings.get("image_std"):
            facts.update(mean=tuple(settings["image_mean"]), std=tuple(settings["image_std"]))
    return facts


def load_hf(model: DepthAnythingV2, directory: str | os.PathLike) -> DepthAnythingV2:
    """Load a transformers Depth Anything folder (V1 or V2) into `model`, checking its config first.

    The config's size must be the model's encoder, its `depth_estimation_type` the model's head and, for a
    metric model, its `max_depth` the model's. transformers' relative head multiplies the ReLU output by
    `max_depth` (1 in the released models); another value is folded into the last convolution.
    """
    path = Path(directory)
    encoder, head, max_depth = model.encoder, model.head, model.max_depth
    config = read_hf_config(path)
    found, layer_indices = _config_layout(config, path / CONFIG_NAME)
    kind = config.depth_estimation_type
    problems = []
    if found != encoder:
        problems.append(f"it is a {found} model, not {encoder}: pass encoder={found!r}")
    if kind != head:
        problems.append(f"its depth_estimation_type is {kind!r}, not {head!r}: pass head={kind!r}")
    elif head == "metric" and float(config.max_depth) != float(max_depth):
        problems.append(f"its max_depth is {config.max_depth}, not {max_depth}: pass max_depth={config.max_depth}")
    if problems:
        raise CheckpointMismatchError(f"{path / CONFIG_NAME}: " + "; ".join(problems))
    state = hf_to_official(_read_weights(path), str(path))
    if head == "relative" and config.max_depth not in (None, 1):
        scale = float(config.max_depth)  # ReLU(x) * m == ReLU(m x) for m > 0
        for name in ("weight", "bias"):
            state[HEAD_CONV3 + name] = state[HEAD_CONV3 + name] * scale
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    if layer_indices != model.layer_indices:  # Depth Anything V1 reads the last four blocks
        model.layer_indices = layer_indices
    return model


def hf_config(model: DepthAnythingV2) -> Any:
    """The transformers `DepthAnythingConfig` describing `model` (its size, head, max depth and blocks)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    encoder = ENCODER_CONFIGS[model.encoder]
    backbone = Dinov2Config(
        hidden_size=encoder.embed_dim,
        num_hidden_layers=encoder.depth,
        num_attention_heads=encoder.num_heads,
        image_size=PRETRAIN_SIZE,
        patch_size=PATCH_SIZE,
        layerscale_value=1.0,
        out_indices=[i + 1 for i in model.layer_indices],
        reshape_hidden_states=False,
    )
    if model.head == "metric" and not float(model.max_depth).is_integer():
        raise ValueError(f"transformers stores max_depth as a whole number of metres; {model.max_depth} is not")
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=encoder.embed_dim,
        reassemble_factors=list(REASSEMBLE_FACTORS),
        neck_hidden_sizes=list(encoder.out_channels),
        fusion_hidden_size=encoder.features,
        head_hidden_size=HEAD_HIDDEN_SIZE,
        depth_estimation_type=model.head,
        max_depth=int(model.max_depth) if model.head == "metric" else 1,
    )
    config.architectures = ["DepthAnythingForDepthEstimation"]
    return config


def save_hf(
    model: nn.Module,
    directory: str | os.PathLike,
    overwrite: bool = False,
    preprocessing: Preprocessing = OFFICIAL_PREPROCESSING,
) -> Path:
    """Write `model` (a DepthAnythingV2, or a peft LoRA model on one: merged) as a transformers folder.

    `transformers.DepthAnythingForDepthEstimation.from_pretrained(directory)` loads it; its
    `predicted_depth` equals this model's output to 1e-4 relative at 518 x 518. At other sizes the two
    differ slightly because transformers resamples the position embeddings by output size (ours, like the
    official code, by the scale factor (grid + 0.1) / 37), and transformers' image processor resizes
    differently from the official preprocessing (`depthadapt.models.preprocess`). The folder gets
    `config.json`, `model.safetensors` and a `preprocessor_config.json` that resizes to `input_size` (the size
    the model runs at) and normalises with `mean` / `std`, so `pipeline("depth-estimation", model=directory)`
    runs it as depthadapt does. Written by `atomic_directory` (kind `hf`, `overwrite`): files of another kind
    of folder are never removed.
    """
    from safetensors.torch import save_file

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(inner, DepthAnythingV2):
        raise TypeError(f"save_hf needs a DepthAnythingV2 model (or a peft model on one), got {type(inner).__name__}")
    if inner.head not in HEADS:
        raise ValueError(f"unknown head {inner.head!r}")
    check_export_directory(directory, HF_EXPORT_KIND, overwrite)
    state = official_to_hf(to_official_state_dict(model, check_layers=False))
    with atomic_directory(directory, HF_EXPORT_KIND, overwrite) as staging:
        hf_config(inner).save_pretrained(staging)
        save_file({k: v.contiguous() for k, v in state.items()}, staging / WEIGHT_NAMES[0], metadata={"format": "pt"})
        _preprocessor_config(staging, preprocessing)
    return Path(directory)


def _preprocessor_config(directory: Path, preprocessing: Preprocessing) -> None:
    """The image-processor settings of the released Depth Anything V2 transformers models, with `preprocessing`."""
    from transformers import DPTImageProcessor

    DPTImageProcessor(
        size={"height": preprocessing.input_size, "width": preprocessing.input_size},
        keep_aspect_ratio=True,
        ensure_multiple_of=PATCH_SIZE,
        resample=3,  # bicubic
        do_pad=False,
        image_mean=[float(v) for v in preprocessing.mean],
        image_std=[float(v) for v in preprocessing.std],
    ).save_pretrained(directory)
