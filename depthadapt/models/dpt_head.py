"""DPT decoder of Depth Anything V2: reassemble four ViT feature maps, fuse them, predict one depth map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from depthadapt.models.dinov2 import PATCH_SIZE


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), channels preserved."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x h x w -> B x C x h x w."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """Add a refined skip feature to the coarser path, refine, upsample (x2 or to `size`), project."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(
        self, path: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """B x C x h x w (+ skip of the same shape) -> B x C x size (default 2h x 2w)."""
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            path = F.interpolate(path, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(path)


class DPTHead(nn.Module):
    """DPT head with the official module names, so official `depth_head.*` weights load unchanged."""

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: Sequence[int],
        output_activation: nn.Module,
    ) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, channels in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(channels, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, kernel_size=1),
            output_activation,
            nn.Identity(),
        )

    def forward(self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        """Four B x (patch_h patch_w) x C token maps -> B x 1 x (14 patch_h) x (14 patch_w)."""
        maps = []
        for x, project, resize in zip(tokens, self.projects, self.resize_layers, strict=True):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            maps.append(resize(project(x)))
        s = self.scratch
        layer_1, layer_2, layer_3, layer_4 = (
            s.layer1_rn(maps[0]),
            s.layer2_rn(maps[1]),
            s.layer3_rn(maps[2]),
            s.layer4_rn(maps[3]),
        )
        path = s.refinenet4(layer_4, size=layer_3.shape[2:])
        path = s.refinenet3(path, layer_3, size=layer_2.shape[2:])
        path = s.refinenet2(path, layer_2, size=layer_1.shape[2:])
        path = s.refinenet1(path, layer_1)
        out = s.output_conv1(path)
        out = F.interpolate(out, (patch_h * PATCH_SIZE, patch_w * PATCH_SIZE), mode="bilinear", align_corners=True)
        return s.output_conv2(out)
