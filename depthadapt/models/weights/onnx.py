"""ONNX export of Depth Anything V2 models (dynamic batch, height and width) and its check in onnxruntime."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthadapt.io import atomic_path, check_replaceable_file
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.transforms import OFFICIAL_PREPROCESSING, Preprocessing
from depthadapt.models.weights.official import model_metadata

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
DEFAULT_OPSET = 18
MIN_GRID = 3  # patches per side: smaller grids would make the head's stride-2 convolution output 1 x 1
MAX_GRID = 1024
EXAMPLE_SIZE = (75, 101)  # not multiples of 14, non-square, not 518: no size is special-cased while tracing
METADATA_PREFIX = "depthadapt."


class AnySizeDepth(nn.Module):
    """The graph ONNX users get: any B x 3 x H x W (H, W >= 42) -> B x H x W.

    Sides that are not multiples of 14 are resized to the nearest multiple (bicubic) and the output back to
    H x W (bilinear, align_corners=True), as `infer` resizes; at multiples of 14 both resizes are the identity.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W normalised image -> B x H x W depth output."""
        height, width = x.shape[-2:]
        grid_h = (height + PATCH_SIZE // 2) // PATCH_SIZE
        grid_w = (width + PATCH_SIZE // 2) // PATCH_SIZE
        x = F.interpolate(x, size=(grid_h * PATCH_SIZE, grid_w * PATCH_SIZE), mode="bicubic", align_corners=False)
        out = self.model(x)
        return F.interpolate(out[:, None], size=(height, width), mode="bilinear", align_corners=True)[:, 0]


def _plain_model(model: nn.Module) -> AnySizeDepth:
    """The model without LoRA layers (merged into a copy), in eval mode, taking any input size."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return AnySizeDepth(model).eval()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    preprocessing: Preprocessing = OFFICIAL_PREPROCESSING,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` (LoRA merged) as ONNX: `image` B x 3 x H x W (normalised) -> `depth` B x H x W.

    Batch, height and width are dynamic (H, W >= 42; sides that are not multiples of 14 are resized inside the
    graph, see `AnySizeDepth`); the official position embedding interpolation (bicubic by the scale factor
    (grid + 0.1) / 37, unchanged at 518 x 518) is computed in the graph for every size. The metadata
    (`depthadapt.*`) holds encoder, head, max depth (or `metadata`: another model's facts, e.g. a Depth Anything 3
    model's name) and how to run the model: `input_size` (the shorter side to resize images to), `mean` and `std`.
    Written atomically; an existing file that is not an earlier export of ours is refused unless `overwrite`.
    """
    check_replaceable_file(path, "ONNX export of depthadapt", is_onnx_export, overwrite)
    was_training = model.training
    plain = _plain_model(model)
    facts = model_metadata(model, preprocessing) if metadata is None else {**metadata, **preprocessing.describe()}
    metadata = {key: json.dumps(value) if isinstance(value, list) else str(value)
                for key, value in facts.items() if key != "format"}
    example = torch.randn(2, 3, *EXAMPLE_SIZE)
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=MIN_GRID * PATCH_SIZE, max=MAX_GRID * PATCH_SIZE)
    width = torch.export.Dim("width", min=MIN_GRID * PATCH_SIZE, max=MAX_GRID * PATCH_SIZE)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                plain,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.model.metadata_props.update({METADATA_PREFIX + key: value for key, value in metadata.items()})
    with atomic_path(path) as tmp:
        program.save(tmp)
    return Path(path)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `depthadapt.*` metadata of an ONNX file (keys without the prefix); {} for another ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def is_onnx_export(path: Path) -> bool:
    """Whether `path` is an ONNX file this project exported (it carries `depthadapt.*` metadata)."""
    try:
        return bool(onnx_metadata(path))
    except Exception:  # not an ONNX file at all: onnx raises its own DecodeError and others
        return False


def onnx_relative_error(
    model: nn.Module, path: str | os.PathLike, sizes: Sequence[tuple[int, int]], batch: int = 1, seed: int = 0
) -> float:
    """Largest max|onnx - torch| / max|torch| over random inputs of each (height, width) in `sizes` (any sizes:
    the torch side is `AnySizeDepth` too)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was_training = model.training
    plain = _plain_model(model)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    try:
        for height, width in sizes:
            x = torch.randn(batch, 3, height, width, generator=generator)
            with torch.no_grad():
                expected = plain(x).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
            if got.shape != expected.shape:
                raise RuntimeError(f"{path}: ONNX output {got.shape} at {height} x {width}, expected {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12)))
    finally:
        model.train(was_training)
    return worst
