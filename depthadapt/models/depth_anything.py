"""Depth Anything V2: DINOv2 encoder + DPT head, relative (disparity) or metric (metres) output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from depthadapt.models.dinov2 import PATCH_SIZE, DINOv2
from depthadapt.models.dpt_head import DPTHead

Head = Literal["relative", "metric"]
HEADS: tuple[str, ...] = get_args(Head)


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of one encoder size (official sizes follow timm's `vit_*_patch14_dinov2`)."""

    embed_dim: int
    depth: int
    num_heads: int
    layer_indices: tuple[int, ...]  # blocks whose outputs feed the DPT head
    features: int
    out_channels: tuple[int, int, int, int]


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "vits": EncoderConfig(384, 12, 6, (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": EncoderConfig(768, 12, 12, (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": EncoderConfig(1024, 24, 16, (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
    # Ours: a tiny encoder for tests and the demo, trained here on the synthetic domains.
    "vitt": EncoderConfig(192, 4, 3, (0, 1, 2, 3), 32, (24, 48, 96, 192)),
}


class DepthAnythingV2(nn.Module):
    """Depth Anything V2; `head="relative"` outputs disparity >= 0, `head="metric"` metres in (0, max_depth)."""

    def __init__(self, encoder: str = "vitl", head: str = "relative", max_depth: float = 80.0) -> None:
        super().__init__()
        if encoder not in ENCODER_CONFIGS:
            raise ValueError(f"encoder must be one of {sorted(ENCODER_CONFIGS)}, got {encoder!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "metric" and not max_depth > 0:
            raise ValueError(f"max_depth must be > 0 for a metric head, got {max_depth}")
        config = ENCODER_CONFIGS[encoder]
        self.encoder = encoder
        self.head = head
        self.max_depth = float(max_depth)
        self.layer_indices = config.layer_indices
        self.pretrained = DINOv2(config.embed_dim, config.depth, config.num_heads)
        self.depth_head = DPTHead(
            config.embed_dim,
            config.features,
            config.out_channels,
            output_activation=nn.ReLU(True) if head == "relative" else nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W ImageNet-normalised image (H, W multiples of 14) -> B x H x W depth output."""
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(
                f"input height and width must be multiples of {PATCH_SIZE}, got {height} x {width}; "
                "use depthadapt.models.preprocess or infer"
            )
        patch_h, patch_w = height // PATCH_SIZE, width // PATCH_SIZE
        tokens = self.pretrained.intermediate_features(x, self.layer_indices)
        out = self.depth_head(tokens, patch_h, patch_w).squeeze(1)
        if self.head == "metric":
            return out * self.max_depth
        return F.relu(out)
