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
    """Add a refined skip feature to the coarser path, refine, upsample (x2 or to `size`), project.

    ``with_skip=False`` builds no skip unit (Depth Anything 3's coarsest block, which never gets a skip feature).
    """

    def __init__(self, features: int, with_skip: bool = True) -> None:
        super().__init__()
        if with_skip:
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
    """DPT head with the official module names, so official `depth_head.*` weights load unchanged.

    Depth Anything V2 builds (and never uses) a skip unit in the coarsest fusion block `refinenet4`; Depth Anything
    3 does not (``coarsest_skip_unit=False``) and predicts ``output_dim`` channels.
    """

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: Sequence[int],
        output_activation: nn.Module,
        output_dim: int = 1,
        coarsest_skip_unit: bool = True,
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
            with_skip = i < 4 or coarsest_skip_unit
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, with_skip=with_skip))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, output_dim, kernel_size=1),
            output_activation,
            nn.Identity(),
        )

    def reassemble(self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int) -> list[torch.Tensor]:
        """Four B x (patch_h patch_w) x C token maps -> four B x features maps at 4, 2, 1 and 1/2 x the patch grid."""
        maps = []
        for index, x in enumerate(tokens):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            maps.append(self.resize_layers[index](self.project(index, x)))
        s = self.scratch
        return [s.layer1_rn(maps[0]), s.layer2_rn(maps[1]), s.layer3_rn(maps[2]), s.layer4_rn(maps[3])]

    def project(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The 1 x 1 projection of stage ``index``: B x C x h x w -> B x out_channels[index] x h x w."""
        return self.projects[index](x)

    @staticmethod
    def fuse(layers: Sequence[torch.Tensor], blocks: Sequence[nn.Module]) -> torch.Tensor:
        """Fuse the four reassembled maps coarse to fine with fusion ``blocks`` (finest first) -> B x C x 8h x 8w."""
        layer_1, layer_2, layer_3, layer_4 = layers
        path = blocks[3](layer_4, size=layer_3.shape[2:])
        path = blocks[2](path, layer_3, size=layer_2.shape[2:])
        path = blocks[1](path, layer_2, size=layer_1.shape[2:])
        return blocks[0](path, layer_1)

    def neck(self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        """Four token maps -> the B x features/2 x (14 patch_h) x (14 patch_w) map the output convolutions take."""
        s = self.scratch
        blocks = (s.refinenet1, s.refinenet2, s.refinenet3, s.refinenet4)
        path = self.fuse(self.reassemble(tokens, patch_h, patch_w), blocks)
        return self.upsample(s.output_conv1(path), patch_h, patch_w)

    @staticmethod
    def upsample(x: torch.Tensor, patch_h: int, patch_w: int) -> torch.Tensor:
        """B x C x h x w -> B x C x (14 patch_h) x (14 patch_w), bilinear with aligned corners (as official)."""
        return F.interpolate(x, (patch_h * PATCH_SIZE, patch_w * PATCH_SIZE), mode="bilinear", align_corners=True)

    def forward(self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        """Four B x (patch_h patch_w) x C token maps -> B x output_dim x (14 patch_h) x (14 patch_w)."""
        return self.scratch.output_conv2(self.neck(tokens, patch_h, patch_w))
