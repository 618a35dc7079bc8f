"""Depth Anything 3's encoder in single-view mode: our DINOv2, from block ``alt_start`` on with qk-norm, 2-D RoPE,
alternating local / global attention and a camera token in place of the class token.

With one view, the official "global" attention (over every token of every view) attends over the same tokens as
the "local" one (over one view's tokens); what differs is the RoPE position: per patch in the local blocks, one
shared position for all patches in the global blocks (see `token_positions`). Blocks ``alt_start``,
``alt_start + 2``, ... are local if ``alt_start`` is even (as in every official config) and the others global.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from depthadapt.models.da3.blocks import RopeBlock, token_positions
from depthadapt.models.dinov2 import PATCH_SIZE, DINOv2

DA3_FINAL_NORM_EPS = 1e-5  # the official DA3 ViT's final LayerNorm keeps torch's default eps


class DA3Encoder(nn.Module):
    """DINOv2 ViT/14 whose ``out_layers`` feed the head; ``alt_start`` None: plain DINOv2 (the mono / metric
    models), else the any-view layout from that block on (qk-norm, RoPE, camera token, alternating attention).

    ``cat_token``: each output concatenates the last local block's tokens (as they are) with the output block's
    tokens (final-normed), so the head gets 2 x embed_dim channels.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        out_layers: Sequence[int],
        alt_start: int | None = None,
        cat_token: bool = False,
    ) -> None:
        super().__init__()
        if len(out_layers) != 4 or not all(0 <= i < depth for i in out_layers):
            raise ValueError(f"out_layers must be 4 block indices in [0, {depth}), got {list(out_layers)}")
        if alt_start is not None and not 0 < alt_start < depth:
            raise ValueError(f"alt_start must be None or a block index in (0, {depth}), got {alt_start}")
        self.embed_dim = embed_dim
        self.out_layers = tuple(out_layers)
        self.alt_start = alt_start
        self.cat_token = cat_token
        self.pretrained = DINOv2(embed_dim, depth, num_heads, with_mask_token=False, final_norm_eps=DA3_FINAL_NORM_EPS)
        if alt_start is not None:
            for i in range(alt_start, depth):
                self.pretrained.blocks[i] = RopeBlock(embed_dim, num_heads, qk_norm=True)
            # The official token pair: [0] for the reference view, [1] for the other views (unused with one view);
            # held by the ViT, where the official key `pretrained.camera_token` puts it.
            self.pretrained.camera_token = nn.Parameter(torch.randn(1, 2, embed_dim))

    def is_global(self, index: int) -> bool:
        """Whether block ``index`` is a global-attention block (official rule: from alt_start on, odd indices)."""
        return self.alt_start is not None and index >= self.alt_start and index % 2 == 1

    def forward(
        self, x: torch.Tensor, camera_token: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B x 3 x H x W normalised image -> (four B x (H/14 W/14) x C' patch-token maps of ``out_layers``, the last
        output layer's B x C' camera token (un-normed)); C' = 2 embed_dim with ``cat_token``, else embed_dim.

        ``camera_token``: a B x embed_dim token encoding a known camera (`CameraEncoder`) in place of the learnt one.
        """
        vit = self.pretrained
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        x = vit._pos_embed(vit.patch_embed(x))
        if self.alt_start is not None:
            local_positions = token_positions(grid_h, grid_w, per_patch=True, device=x.device)
            global_positions = token_positions(grid_h, grid_w, per_patch=False, device=x.device)
        outputs = []
        local_x = x
        for i, block in enumerate(vit.blocks):
            if self.alt_start is None or i < self.alt_start:
                x = block(x)
            else:
                if i == self.alt_start:
                    token = vit.camera_token[:, 0].expand(x.shape[0], -1) if camera_token is None else camera_token
                    x = torch.cat((token[:, None].to(x.dtype), x[:, 1:]), dim=1)
                x = block(x, global_positions if self.is_global(i) else local_positions)
            if not self.is_global(i):
                local_x = x
            if i in self.out_layers:
                outputs.append(torch.cat((local_x, x), dim=-1) if self.cat_token else x)
        camera = outputs[-1][:, 0]
        normed = [self._final_norm(out)[:, 1:] for out in outputs]
        return normed, camera

    def _final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm; with ``cat_token`` only on the output block's half (the official layout)."""
        if not self.cat_token:
            return self.pretrained.norm(tokens)
        local, block = tokens.split(self.embed_dim, dim=-1)
        return torch.cat((local, self.pretrained.norm(block)), dim=-1)
