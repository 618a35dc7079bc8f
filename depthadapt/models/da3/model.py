"""Depth Anything 3 in single-view mode: the four Apache-2.0 models and a tiny one, from our own modules.

``DepthAnything3(name)`` mirrors the official ``DepthAnything3Net`` of that config, one view per image (official
input B x N x 3 x H x W with N = 1; ours B x 3 x H x W), with the official parameter names (the hub file's keys
without the wrapper's ``model.`` prefix). Outputs as the official code's:

- ``da3mono-large``: depth (relative: up to an unknown scale; depth, not disparity), sky (>= 0.3: sky).
- ``da3metric-large``: depth at a canonical focal length of 300 px, sky; metres = focal_px x output / 300
  (`metric_depth`), focal_px the mean of fx and fy of the network input (after resizing).
- ``da3-small`` / ``da3-base`` (and our ``da3-tiny``): depth (relative), its confidence (> 1), and the camera
  they predict from the camera token (world-to-camera extrinsics 3 x 4, intrinsics 3 x 3 in network-input
  pixels); optionally the ray map of the DualDPT's second branch.

The models with a sky branch replace, as the official network does, the depth of sky pixels (sky >= 0.3) by the
99th percentile of the other pixels' depth (`fill_sky`; per image here, see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from depthadapt.models.da3.camera import CameraDecoder, CameraEncoder, pose_encoding_to_camera
from depthadapt.models.da3.encoder import DA3Encoder
from depthadapt.models.da3.heads import DualDPTHead, SkyDPTHead
from depthadapt.models.dinov2 import PATCH_SIZE

METRIC_FOCAL = 300.0  # DA3Metric's canonical focal length in pixels
SKY_THRESHOLD = 0.3  # official: sky >= 0.3 is sky
SKY_DEPTH_QUANTILE = 0.99  # official: sky pixels get this quantile of the other pixels' depth
SKY_MIN_PIXELS = 10  # official: fill only when more than 10 sky and more than 10 other pixels


@dataclass(frozen=True)
class DA3Config:
    """Architecture of one Depth Anything 3 model (the official YAML config's numbers)."""

    embed_dim: int
    depth: int
    num_heads: int
    out_layers: tuple[int, int, int, int]
    alt_start: int | None  # any-view layout (qk-norm, RoPE, alternation, camera token) from this block; None: off
    features: int
    out_channels: tuple[int, int, int, int]
    licence: str
    output: str  # what "depth" is

    @property
    def any_view(self) -> bool:
        """Whether the model has the any-view layout (DualDPT head, camera token, camera encoder / decoder)."""
        return self.alt_start is not None


_LARGE = dict(embed_dim=1024, depth=24, num_heads=16, out_layers=(4, 11, 17, 23), alt_start=None, features=256,
              out_channels=(256, 512, 1024, 1024), licence="Apache-2.0")
DA3_CONFIGS: dict[str, DA3Config] = {
    "da3-small": DA3Config(384, 12, 6, (5, 7, 9, 11), 4, 64, (48, 96, 192, 384), "Apache-2.0", "relative depth"),
    "da3-base": DA3Config(768, 12, 12, (5, 7, 9, 11), 4, 128, (96, 192, 384, 768), "Apache-2.0", "relative depth"),
    "da3mono-large": DA3Config(**_LARGE, output="relative depth"),
    "da3metric-large": DA3Config(**_LARGE, output="depth at focal 300 px (metres = focal_px * output / 300)"),
    # Ours: the single-view small layout at 6 blocks of width 192 (as our `vitt`), for tests and the synthetic world.
    "da3-tiny": DA3Config(192, 6, 3, (2, 3, 4, 5), 2, 32, (24, 48, 96, 192), "Apache-2.0", "relative depth"),
}
OUT_OF_SCOPE = ("da3-large", "da3-giant", "da3nested-giant-large")  # CC-BY-NC-4.0


def check_model_name(name: str) -> DA3Config:
    """The config of a supported model name; a clear error for the others."""
    if name in DA3_CONFIGS:
        return DA3_CONFIGS[name]
    hint = (f" ({name} is CC-BY-NC-4.0: out of scope, only the Apache-2.0 models are supported)"
            if name in OUT_OF_SCOPE else "")
    raise ValueError(f"unknown Depth Anything 3 model {name!r}{hint}; supported: {sorted(DA3_CONFIGS)}")


def fill_sky(depth: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """B x H x W depth and sky score -> depth whose sky pixels (sky >= 0.3) hold the 0.99 quantile of the image's
    other depths (only where an image has more than 10 sky and more than 10 other pixels).

    As the official network does, per image: the official code pools all images of its input batch and, past
    100 000 non-sky pixels, estimates the quantile from a random sample; this is the exact quantile, so it equals
    the official output for one image of up to 100 000 non-sky pixels. Sorting, not `torch.quantile`, so that it
    traces into ONNX.
    """
    batch = depth.shape[0]
    flat_depth, ground = depth.reshape(batch, -1), sky.reshape(batch, -1) < SKY_THRESHOLD
    count = ground.sum(-1)
    ordered = torch.where(ground, flat_depth, torch.full_like(flat_depth, float("inf"))).sort(-1).values
    position = SKY_DEPTH_QUANTILE * (count.clamp_min(1) - 1).to(depth.dtype)
    low = position.floor().long()
    high = torch.minimum(low + 1, count.clamp_min(1) - 1)
    below, above = ordered.gather(-1, low[:, None]), ordered.gather(-1, high[:, None])
    top = torch.lerp(below, above, (position - low.to(depth.dtype))[:, None])
    apply = ((count > SKY_MIN_PIXELS) & (ground.shape[-1] - count > SKY_MIN_PIXELS))[:, None]
    return torch.where(apply & ~ground, top, flat_depth).reshape(depth.shape)


def metric_depth(output: torch.Tensor, focal: torch.Tensor | float) -> torch.Tensor:
    """DA3Metric output and the focal length in network-input pixels (mean of fx, fy) -> metres (official)."""
    if isinstance(focal, torch.Tensor) and focal.dim() == 1:
        focal = focal.view(-1, *([1] * (output.dim() - 1)))
    return output * focal / METRIC_FOCAL


class DepthAnything3(nn.Module):
    """A Depth Anything 3 model by name (`DA3_CONFIGS`), single view; ``fill_sky``: apply the official sky fill."""

    def __init__(self, model_name: str = "da3mono-large", fill_sky: bool = True) -> None:
        super().__init__()
        config = check_model_name(model_name)
        self.model_name = model_name
        self.config = config
        self.fill_sky = fill_sky
        self.backbone = DA3Encoder(config.embed_dim, config.depth, config.num_heads, config.out_layers,
                                   alt_start=config.alt_start, cat_token=config.any_view)
        if config.any_view:
            self.head = DualDPTHead(2 * config.embed_dim, config.features, config.out_channels)
            self.cam_enc = CameraEncoder(config.embed_dim)
            self.cam_dec = CameraDecoder(2 * config.embed_dim)
        else:
            self.head = SkyDPTHead(config.embed_dim, config.features, config.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W ImageNet-normalised image (H, W multiples of 14) -> B x H x W depth output (official)."""
        tokens, _ = self._encode(x)
        patch_h, patch_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        if self.config.any_view:
            return self.head(tokens, patch_h, patch_w)["depth"]
        outputs = self.head(tokens, patch_h, patch_w, with_sky=self.fill_sky)
        return fill_sky(outputs["depth"], outputs["sky"]) if self.fill_sky else outputs["depth"]

    def forward_all(
        self,
        x: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        with_rays: bool = False,
    ) -> dict[str, torch.Tensor]:
        """B x 3 x H x W normalised image -> every single-view output (B x H x W maps unless said otherwise):

        mono / metric: "depth", "sky". Any-view models: "depth", "depth_conf", "extrinsics" (B x 3 x 4,
        world-to-camera), "intrinsics" (B x 3 x 3); with ``with_rays`` "ray" (B x 8h x 8w x 6) and "ray_conf"
        (B x 8h x 8w), h, w the patch grid. ``extrinsics`` / ``intrinsics`` (any-view models only): a known camera
        (B x 3 x 4 or 4 x 4, B x 3 x 3) conditions the prediction, as the official camera encoder does.
        """
        camera_token = None
        if (extrinsics is None) != (intrinsics is None):
            raise ValueError("forward_all: give both extrinsics and intrinsics, or neither")
        if extrinsics is not None:
            if not self.config.any_view:
                raise ValueError(f"forward_all: {self.model_name} takes no camera (it has no camera encoder)")
            camera_token = self.cam_enc(extrinsics.float(), intrinsics.float(), tuple(x.shape[-2:]))
        tokens, camera = self._encode(x, camera_token)
        patch_h, patch_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        if not self.config.any_view:
            outputs = self.head(tokens, patch_h, patch_w)
            if self.fill_sky:
                outputs["depth"] = fill_sky(outputs["depth"], outputs["sky"])
            return outputs
        outputs = self.head(tokens, patch_h, patch_w, with_rays=with_rays)
        outputs["extrinsics"], outputs["intrinsics"] = pose_encoding_to_camera(self.cam_dec(camera), x.shape[-2:])
        return outputs

    def _encode(
        self, x: torch.Tensor, camera_token: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Check the input size, run the encoder -> (four token maps, camera token)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be B x 3 x H x W, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(
                f"input height and width must be multiples of {PATCH_SIZE}, got {height} x {width}; "
                "use depthadapt.models.preprocess or infer"
            )
        return self.backbone(x, camera_token)
