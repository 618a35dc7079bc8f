"""Depth Anything 3's heads, built on our DPT head: DPT with a sky branch (mono / metric models) and DualDPT
(depth + confidence, and a ray branch; the any-view models).

Both predict depth as exp(logit). DualDPT normalises the tokens (LayerNorm) and adds a sinusoidal UV position
embedding (x 0.1) after each stage projection and before its output convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from depthadapt.models.dpt_head import DPTHead, FeatureFusionBlock

UV_EMBED_SCALE = 0.1  # the official `ratio` of the UV position embedding
UV_OMEGA = 100.0  # the official sinusoid base `omega_0`
HEAD_FEATURES = 32  # channels of the last hidden convolution of every output branch


def uv_position_embedding(
    channels: int, height: int, width: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Sinusoidal embedding of a height x width UV grid -> channels x height x width (x `UV_EMBED_SCALE`).

    The grid spans the image plane normalised by its diagonal (``aspect_ratio`` = W / H of the network input), at
    pixel centres; the first half of the channels encodes u (column), the second v (row), each as
    [sin, cos] of position x 100^(-k / (channels / 4)).
    """
    # Tensor arithmetic, not Python floats of the sizes: ONNX export traces the sizes symbolically, and torch.export
    # fails on a true division of two symbolic integers. Pixel centres: span x ((2 i + 1) / n - 1), i < n.
    ratio = torch.full((), aspect_ratio, dtype=torch.float32, device=device)
    diagonal = (ratio**2 + 1.0).sqrt()
    u = ratio / diagonal * ((2 * torch.arange(width, device=device) + 1) / width - 1)
    v = 1.0 / diagonal * ((2 * torch.arange(height, device=device) + 1) / height - 1)
    grid_v, grid_u = torch.meshgrid(v.to(dtype), u.to(dtype), indexing="ij")
    quarter = channels // 4
    omega = 1.0 / UV_OMEGA ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    parts = []
    for coordinate in (grid_u, grid_v):
        angles = coordinate.reshape(-1, 1) * omega
        parts += [angles.sin(), angles.cos()]
    embedding = torch.cat(parts, dim=-1).float().reshape(height, width, channels)
    return embedding.permute(2, 0, 1) * UV_EMBED_SCALE


def add_uv_embedding(x: torch.Tensor) -> torch.Tensor:
    """B x C x h x w feature map + its UV position embedding (`uv_position_embedding`).

    Every map the head embeds is the patch grid scaled by an integer, so its w / h is the input's W / H.
    """
    height, width = x.shape[-2:]
    return x + uv_position_embedding(x.shape[1], height, width, torch.sym_float(width) / height, x.dtype, x.device)


def output_branch(in_channels: int, out_channels: int, *middle: nn.Module) -> nn.Sequential:
    """3 x 3 conv to 32 channels, ``middle`` modules, ReLU, 1 x 1 conv to ``out_channels`` (official layout)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, HEAD_FEATURES, kernel_size=3, padding=1),
        *middle,
        nn.ReLU(),
        nn.Conv2d(HEAD_FEATURES, out_channels, kernel_size=1),
    )


class Permute(nn.Module):
    """Permute a tensor's dimensions (a LayerNorm over channels between two, as the official ray branch)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any tensor -> its permutation by ``dims``."""
        return x.permute(*self.dims)


class SkyDPTHead(DPTHead):
    """DA3's DPT: our DPT head (no skip unit in the coarsest block) with exp depth and a ReLU sky branch."""

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int]) -> None:
        super().__init__(in_channels, features, out_channels, nn.Identity(), output_dim=1, coarsest_skip_unit=False)
        self.scratch.sky_output_conv2 = output_branch(features // 2, 1)

    def forward(
        self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int, with_sky: bool = True
    ) -> dict[str, torch.Tensor]:
        """Four B x (h w) x C token maps -> {"depth", "sky" (if ``with_sky``)}: B x 14h x 14w each."""
        features = self.neck(tokens, patch_h, patch_w)
        outputs = {"depth": self.scratch.output_conv2(features).squeeze(1).exp()}
        if with_sky:
            outputs["sky"] = self.scratch.sky_output_conv2(features).squeeze(1).relu()
        return outputs


class DualDPTHead(DPTHead):
    """DA3's DualDPT: LayerNorm on the tokens, UV position embeddings, a depth + confidence branch (our DPT) and a
    ray branch with its own fusion blocks (6 ray channels + confidence at 8 x the patch grid).

    The official ray branch builds four pre-head stacks and four output stacks (one per pyramid level, the four
    output stacks sharing one LayerNorm) and uses only the finest; all are kept so that official weights load.
    """

    RAY_CHANNELS = 6

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int]) -> None:
        super().__init__(in_channels, features, out_channels, nn.Identity(), output_dim=2, coarsest_skip_unit=False)
        self.norm = nn.LayerNorm(in_channels)
        s = self.scratch
        for i in range(1, 5):
            setattr(s, f"refinenet{i}_aux", FeatureFusionBlock(features, with_skip=i < 4))
        if any(c % 4 for c in (*out_channels, features // 2)):
            raise ValueError(f"DualDPT needs out_channels and features / 2 divisible by 4 (UV embedding), got "
                             f"{list(out_channels)}, {features}")
        s.output_conv1_aux = nn.ModuleList(self._ray_neck(features) for _ in range(4))
        shared_norm = nn.LayerNorm(HEAD_FEATURES)
        s.output_conv2_aux = nn.ModuleList(
            output_branch(features // 2, self.RAY_CHANNELS + 1, Permute((0, 2, 3, 1)), shared_norm,
                          Permute((0, 3, 1, 2)))
            for _ in range(4)
        )

    @staticmethod
    def _ray_neck(features: int) -> nn.Sequential:
        """Five 3 x 3 convolutions (no activation between them), features -> features / 2 (official layout)."""
        half = features // 2
        widths = (features, half, features, half, features, half)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        return nn.Sequential(*(nn.Conv2d(a, b, kernel_size=3, padding=1) for a, b in pairs))

    def project(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage projection plus the UV position embedding."""
        return add_uv_embedding(self.projects[index](x))

    def forward(
        self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int, with_rays: bool = False
    ) -> dict[str, torch.Tensor]:
        """Four B x (h w) x C token maps -> {"depth", "depth_conf"}: B x 14h x 14w; with ``with_rays`` also
        "ray": B x 8h x 8w x 6 and "ray_conf": B x 8h x 8w."""
        layers = self.reassemble([self.norm(t) for t in tokens], patch_h, patch_w)
        s = self.scratch
        path = self.fuse(layers, (s.refinenet1, s.refinenet2, s.refinenet3, s.refinenet4))
        features = add_uv_embedding(self.upsample(s.output_conv1(path), patch_h, patch_w))
        logits = s.output_conv2(features)
        outputs = {"depth": logits[:, 0].exp(), "depth_conf": logits[:, 1].exp() + 1}
        if with_rays:
            path = self.fuse(layers, (s.refinenet1_aux, s.refinenet2_aux, s.refinenet3_aux, s.refinenet4_aux))
            rays = s.output_conv2_aux[-1](add_uv_embedding(s.output_conv1_aux[-1](path)))
            rays = rays.permute(0, 2, 3, 1)
            outputs["ray"] = rays[..., : self.RAY_CHANNELS]
            outputs["ray_conf"] = rays[..., -1].exp() + 1
        return outputs
