"""DINOv2 ViT encoder: timm's VisionTransformer with the official Depth Anything V2 token layout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

PATCH_SIZE = 14
PRETRAIN_SIZE = 518  # pos_embed covers a 37 x 37 grid
POS_EMBED_OFFSET = 0.1  # official DINOv2 `interpolate_offset`


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Resize 1 x (1 + N) x C position embeddings to a grid_h x grid_w patch grid, as official DINOv2 does.

    The official code interpolates bicubically by `scale_factor=((grid + 0.1) / sqrt(N))` (not by output
    size), without antialiasing, in float32, and keeps the embeddings unchanged only for a square input
    of the pretraining size. The scale factor, not the output size, sets the sampling positions, so
    timm's `resample_abs_pos_embed` (size-based) gives different values at other sizes.
    """
    num_patches = pos_embed.shape[1] - 1
    if grid_h * grid_w == num_patches and grid_h == grid_w:
        return pos_embed
    side = math.sqrt(num_patches)
    dim = pos_embed.shape[-1]
    pos = pos_embed.float()
    patch_pos = pos[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((grid_h + POS_EMBED_OFFSET) / side, (grid_w + POS_EMBED_OFFSET) / side),
        mode="bicubic",
        antialias=False,
    )
    if patch_pos.shape[-2:] != (grid_h, grid_w):
        raise RuntimeError(f"pos_embed interpolation gave {tuple(patch_pos.shape[-2:])}, wanted {(grid_h, grid_w)}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos[:, :1], patch_pos), dim=1).to(pos_embed.dtype)


class DINOv2(VisionTransformer):
    """DINOv2 ViT/14 (timm blocks) whose state dict and token maths match the official checkpoints.

    Differences from plain timm: the official position-embedding interpolation (see
    `interpolate_pos_embed`) and the `mask_token` parameter the official checkpoints carry.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(
            img_size=PRETRAIN_SIZE,
            patch_size=PATCH_SIZE,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            init_values=1.0,
            num_classes=0,
            dynamic_img_size=True,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the class token and add position embeddings: B x h x w x C -> B x (1 + h w) x C."""
        batch, grid_h, grid_w, dim = x.shape
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x.reshape(batch, grid_h * grid_w, dim)), dim=1)
        return x + interpolate_pos_embed(self.pos_embed, grid_h, grid_w)

    def intermediate_features(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Final-norm patch tokens of the given blocks: B x 3 x H x W -> [B x (H/14 W/14) x C] per index."""
        return self.forward_intermediates(
            x, indices=list(indices), norm=True, output_fmt="NLC", intermediates_only=True
        )
