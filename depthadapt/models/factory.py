"""``build_depth_model``: a Depth Anything V2 network by encoder and head, with a checkpoint of any format loaded."""

from __future__ import annotations

from pathlib import Path

from depthadapt.models.depth_anything import DepthAnythingV2
from depthadapt.models.weights.load import load_checkpoint

__all__ = ["build_depth_model"]


def build_depth_model(
    encoder: str,
    head: str = "relative",
    max_depth: float = 80.0,
    checkpoint: str | Path | None = None,
    checkpoint_prefix: str | None = None,
) -> DepthAnythingV2:
    """Build a Depth Anything V2 model, optionally loading a checkpoint (see `load_checkpoint`).

    `checkpoint`: an official `.pth`, a transformers Depth Anything folder, or a Lightning `.ckpt` of this
    project (a WeSTAR run: the LoRA student, merged; `checkpoint_prefix="teacher"` for its EMA teacher).
    """
    model = DepthAnythingV2(encoder=encoder, head=head, max_depth=max_depth)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, prefix=checkpoint_prefix)
    return model
