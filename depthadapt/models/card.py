"""Model cards: a checkpoint together with the facts needed to run it (as timm's ``PretrainedCfg``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from depthadapt.io import file_sha256
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, DepthAnythingV2, Head
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.factory import build_depth_model
from depthadapt.models.transforms import IMAGENET_MEAN, IMAGENET_STD, infer, infer_flip_tta
from depthadapt.models.weights.keys import allow_in_checkpoints


@dataclass
class DepthModelCard:
    """A Depth Anything V2 model and how to run it: architecture, weights, input size and normalisation.

    ``input_size`` is the lower bound of the shorter network side (the official preprocessing keeps the aspect
    ratio, sides multiples of 14); ``mean`` / ``std`` normalise images in [0, 1]. Cards of the shipped models live
    in ``config_yaml/models/`` and are referenced by path from experiment configs.
    """

    encoder: Literal["vits", "vitb", "vitl", "vitt"] = "vits"
    head: Head = "relative"
    max_depth: float = 80.0
    checkpoint: str | None = None
    checkpoint_prefix: str | None = None
    input_size: int = 518
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_CONFIGS:
            raise ValueError(f"model card: encoder must be one of {sorted(ENCODER_CONFIGS)}, got {self.encoder!r}")
        if self.head not in HEADS:
            raise ValueError(f"model card: head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.input_size, int) or self.input_size < PATCH_SIZE:
            raise ValueError(
                f"model card: input_size must be an integer >= {PATCH_SIZE} (the shorter network side in pixels, "
                f"518 for the official models), got {self.input_size!r}"
            )
        if self.max_depth <= 0:
            raise ValueError(f"model card: max_depth must be > 0 (metres), got {self.max_depth}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"model card: mean and std need 3 values (RGB), std > 0; got {self.mean}, {self.std}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def build(self) -> DepthAnythingV2:
        """The model with the card's weights (random weights when ``checkpoint`` is None)."""
        return build_depth_model(self.encoder, self.head, self.max_depth, self.checkpoint, self.checkpoint_prefix)

    def infer(self, model: torch.nn.Module, image: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
        """B x 3 x H x W images in [0, 1], any size -> B x H x W output at the card's input size, upsampled back;
        ``flip_tta``: the mean with the flipped-back output of the mirrored images."""
        if flip_tta:
            return infer_flip_tta(model, image, self.input_size, self.mean, self.std)
        return infer(model, image, self.input_size, self.mean, self.std)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images in [0, 1] -> the network's normalised input (no resizing)."""
        mean = image.new_tensor(self.mean).view(1, 3, 1, 1)
        std = image.new_tensor(self.std).view(1, 3, 1, 1)
        return (image - mean) / std

    def describe(self) -> dict:
        """The card as a JSON-able dict with the checkpoint file's SHA-256 (what an output manifest records)."""
        facts = asdict(self)
        if self.checkpoint is not None and Path(self.checkpoint).is_file():
            facts["checkpoint_sha256"] = file_sha256(self.checkpoint)
        return facts


allow_in_checkpoints(DepthModelCard)  # Lightning stores a task's card in its checkpoint's hyper-parameters
