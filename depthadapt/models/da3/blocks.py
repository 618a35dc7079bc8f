"""Depth Anything 3's transformer blocks: 2-D rotary position embedding and attention with qk-norm.

From block ``alt_start`` on, the official DA3 encoder normalises queries and keys per head (LayerNorm, eps 1e-5)
and rotates them by the token's 2-D grid position: the first half of each head's channels by the row, the second
half by the column, each half as a standard RoPE (``base`` 100) over its two halves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp
from torch import nn

ROPE_BASE = 100.0  # the official `rope_freq`
BLOCK_NORM_EPS = 1e-6  # the blocks' LayerNorms; the qk-norm LayerNorms keep torch's default 1e-5


def _rotate_1d(features: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE along one axis: ... x N x D features, N integer positions -> rotated features (same shape)."""
    dim = features.shape[-1]
    half = dim // 2
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, device=features.device).float() / dim)
    angles = positions.to(inv_freq.dtype)[:, None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1).to(features.dtype)
    rotated = torch.cat((-features[..., half:], features[..., :half]), dim=-1)
    return features * angles.cos() + rotated * angles.sin()


def rope_2d(x: torch.Tensor, positions: torch.Tensor, base: float = ROPE_BASE) -> torch.Tensor:
    """2-D RoPE: B x heads x N x D queries or keys, N x 2 (row, column) positions -> rotated, same shape."""
    rows, columns = x.chunk(2, dim=-1)
    return torch.cat((_rotate_1d(rows, positions[:, 0], base), _rotate_1d(columns, positions[:, 1], base)), dim=-1)


def token_positions(grid_h: int, grid_w: int, per_patch: bool, device: torch.device) -> torch.Tensor:
    """RoPE positions of the (1 + grid_h grid_w) tokens: (1 + h w) x 2 integers, the camera token at (0, 0).

    ``per_patch=True`` (local attention): patch (i, j) at (i + 1, j + 1). ``per_patch=False`` (global attention):
    every patch at (1, 1), so patches attend to each other without a relative position (the official multi-view
    layout, where a patch's position relates views, not pixels).
    """
    if per_patch:
        # meshgrid, not repeat_interleave: the ONNX export of repeat_interleave by a traced size is wrong at other sizes
        rows, columns = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                                       indexing="ij")
        patches = torch.stack((rows.reshape(-1), columns.reshape(-1)), dim=-1) + 1
    else:
        patches = torch.ones(grid_h * grid_w, 2, dtype=torch.long, device=device)
    return torch.cat((torch.zeros(1, 2, dtype=torch.long, device=device), patches))


class RopeAttention(nn.Module):
    """Multi-head self-attention with optional per-head qk LayerNorm and 2-D RoPE (official DA3 names)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """B x N x C tokens (N x 2 RoPE positions, or None: no rotation) -> B x N x C."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if positions is not None:
            q, k = rope_2d(q, positions), rope_2d(k, positions)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class RopeBlock(nn.Module):
    """Pre-norm ViT block (LayerScale, GELU MLP) around `RopeAttention`; names as timm's and the official blocks."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = RopeAttention(dim, num_heads, qk_norm)
        self.ls1 = LayerScale(dim, init_values=1.0)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values=1.0)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """B x N x C tokens, N x 2 RoPE positions (or None) -> B x N x C."""
        x = x + self.ls1(self.attn(self.norm1(x), positions))
        return x + self.ls2(self.mlp(self.norm2(x)))
