"""ONNX export of Depth Anything V2 models (dynamic batch, height and width) and its check in onnxruntime."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthadapt.io import atomic_path
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.weights.official import model_metadata

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
DEFAULT_OPSET = 18
MIN_GRID = 3  # patches per side: smaller grids would make the head's stride-2 convolution output 1 x 1
MAX_GRID = 1024
EXAMPLE_GRID = (5, 7)  # non-square and not 37 x 37, so no size is special-cased while tracing


def _plain_model(model: nn.Module) -> nn.Module:
    """The model without LoRA layers (merged into a copy), in eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return model.eval()


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (LoRA merged) as ONNX: `image` B x 3 x H x W (ImageNet-normalised) -> `depth` B x H x W.

    Batch, height and width are dynamic (H and W multiples of 14, at least 42); the official position
    embedding interpolation (bicubic by the scale factor (grid + 0.1) / 37, unchanged at 518 x 518) is
    computed in the graph for every size. The model's encoder, head and max depth are stored as metadata.
    Written atomically.
    """
    was_training = model.training
    plain = _plain_model(model)
    metadata = {key: str(value) for key, value in model_metadata(model).items() if key != "format"}
    example = torch.randn(2, 3, EXAMPLE_GRID[0] * PATCH_SIZE, EXAMPLE_GRID[1] * PATCH_SIZE)
    batch = torch.export.Dim("batch", min=1, max=1024)
    grid_h = torch.export.Dim("grid_h", min=MIN_GRID, max=MAX_GRID)
    grid_w = torch.export.Dim("grid_w", min=MIN_GRID, max=MAX_GRID)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                plain,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch, 2: PATCH_SIZE * grid_h, 3: PATCH_SIZE * grid_w}},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.model.metadata_props.update({f"depthadapt.{key}": value for key, value in metadata.items()})
    with atomic_path(path) as tmp:
        program.save(tmp)
    return Path(path)


def onnx_relative_error(
    model: nn.Module, path: str | os.PathLike, sizes: Sequence[tuple[int, int]], batch: int = 1, seed: int = 0
) -> float:
    """Largest max|onnx - torch| / max|torch| over random inputs of each (height, width) in `sizes`."""
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
