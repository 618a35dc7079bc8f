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


CUBIC_A = -0.75  # PyTorch's (and ONNX Resize's default) bicubic coefficient


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Resize 1 x (1 + N) x C position embeddings to a grid_h x grid_w patch grid, as official DINOv2 does.

    The official code interpolates bicubically by `scale_factor=((grid + 0.1) / sqrt(N))` (not by output
    size), without antialiasing, in float32, and keeps the embeddings unchanged only for a square input
    of the pretraining size. The scale factor, not the output size, sets the sampling positions, so
    timm's `resample_abs_pos_embed` (size-based) gives different values at other sizes.

    While exporting (ONNX, `torch.export`) the same maths runs as tensor operations
    (`_traceable_interpolate_pos_embed`), so the exported graph computes it for every input size.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return _traceable_interpolate_pos_embed(pos_embed, grid_h, grid_w)
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


def _bicubic_matrix(positions: torch.Tensor, source_over_target: torch.Tensor, size: int) -> torch.Tensor:
    """Weights (len(positions) x size) of PyTorch's bicubic resampling by a scale factor, borders clamped."""
    source = (positions + 0.5) * source_over_target - 0.5
    floor = torch.floor(source)
    t = source - floor
    a = CUBIC_A
    weights = (
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    )
    columns = torch.arange(size, dtype=positions.dtype, device=positions.device)
    matrix = torch.zeros_like(source)[:, None] * columns
    for offset, weight in zip((-1, 0, 1, 2), weights, strict=True):
        index = torch.clamp(floor + offset, 0, size - 1)
        matrix = matrix + (index[:, None] == columns).to(positions.dtype) * weight[:, None]
    return matrix


def _traceable_interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """`interpolate_pos_embed` as tensor operations: the grid size and the 518 x 518 case stay dynamic in a graph."""
    num_patches = pos_embed.shape[1] - 1
    side = math.isqrt(num_patches)
    rows = torch.arange(grid_h, dtype=torch.float32, device=pos_embed.device)
    cols = torch.arange(grid_w, dtype=torch.float32, device=pos_embed.device)
    # Grid sizes as tensors (the last position + 1), so the square-pretraining-size test is a graph operation.
    height, width = rows[-1:] + 1, cols[-1:] + 1
    unchanged = ((height == side) & (width == side)).float()  # the official code skips interpolation there
    offset = POS_EMBED_OFFSET * (1 - unchanged)  # and a scale factor of exactly 1 reproduces that
    pos = pos_embed.float()
    patch_pos = pos[0, 1:].reshape(side, side, -1)
    matrix_h = _bicubic_matrix(rows, side / (height + offset), side)
    matrix_w = _bicubic_matrix(cols, side / (width + offset), side)
    patch_pos = torch.einsum("hi,ijc,wj->hwc", matrix_h, patch_pos, matrix_w).reshape(1, -1, pos.shape[-1])
    return torch.cat((pos[:, :1], patch_pos), dim=1).to(pos_embed.dtype)


class DINOv2(VisionTransformer):
    """DINOv2 ViT/14 (timm blocks) whose state dict and token maths match the official checkpoints.

    Differences from plain timm: the official position-embedding interpolation (see
    `interpolate_pos_embed`) and the `mask_token` parameter the official checkpoints carry.
    Depth Anything 3's copy of DINOv2 has no `mask_token` and a final LayerNorm with torch's default eps 1e-5
    (`with_mask_token=False, final_norm_eps=1e-5`).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        with_mask_token: bool = True,
        final_norm_eps: float = 1e-6,
    ) -> None:
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
        if with_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        if final_norm_eps != self.norm.eps:
            self.norm = nn.LayerNorm(embed_dim, eps=final_norm_eps)

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
