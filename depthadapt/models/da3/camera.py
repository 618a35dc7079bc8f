"""Depth Anything 3's camera modules: the decoder that predicts a view's camera from its camera token, the encoder
that turns a known camera into that token, and the 9-number pose encoding between them.

Pose encoding (official): camera-to-world translation (3), rotation as a unit quaternion x, y, z, w with w >= 0
(4), vertical and horizontal field of view in radians (2). Extrinsics are world-to-camera 3 x 4 [R | t];
intrinsics put the principal point at the image centre.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

POSE_ENCODING_SIZE = 9
MIN_HALF_FOV_TAN = 1e-6  # the official clamp of tan(fov / 2) before dividing by it


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """... x 4 quaternions (x, y, z, w; any norm) -> ... x 3 x 3 rotation matrices."""
    x, y, z, w = quaternion.unbind(-1)
    s = 2.0 / (quaternion * quaternion).sum(-1)
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(*quaternion.shape[:-1], 3, 3)


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 rotation matrices -> ... x 4 unit quaternions (x, y, z, w), w >= 0.

    Each of the four components' magnitude follows from the trace and the diagonal; the largest one is used to
    divide (Shepperd's method), so the result is accurate for every rotation.
    """
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    four_squares = torch.stack(
        (1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22), dim=-1
    )  # 4 x^2, 4 y^2, 4 z^2, 4 w^2
    sym_xy, sym_xz, sym_yz = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    skew_x, skew_y, skew_z = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    # Row k: 4 q_k times the quaternion (x, y, z, w), from the off-diagonal sums and differences.
    scaled = torch.stack(
        (
            torch.stack((four_squares[..., 0], sym_xy, sym_xz, skew_x), -1),
            torch.stack((sym_xy, four_squares[..., 1], sym_yz, skew_y), -1),
            torch.stack((sym_xz, sym_yz, four_squares[..., 2], skew_z), -1),
            torch.stack((skew_x, skew_y, skew_z, four_squares[..., 3]), -1),
        ),
        dim=-2,
    )
    best = four_squares.argmax(-1)
    pivot = torch.gather(scaled, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    magnitude = four_squares.gather(-1, best[..., None]).clamp_min(0).sqrt()
    quaternion = pivot / (2 * magnitude.clamp_min(0.1))
    return torch.where(quaternion[..., 3:] < 0, -quaternion, quaternion)


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """... x 3 x 4 (or 4 x 4) rigid transforms [R | t] -> their inverses [R^T | -R^T t], same shape."""
    rotation, translation = transform[..., :3, :3], transform[..., :3, 3:]
    inverse = torch.cat((rotation.mT, -rotation.mT @ translation), dim=-1)
    return torch.cat((inverse, transform[..., 3:, :]), dim=-2)


def pose_encoding_to_camera(
    encoding: torch.Tensor, image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 9 pose encodings, (H, W) of the network input -> (B x 3 x 4 world-to-camera extrinsics, B x 3 x 3
    intrinsics in pixels)."""
    height, width = image_size
    camera_to_world = torch.cat((quaternion_to_matrix(encoding[:, 3:7]), encoding[:, :3, None]), dim=-1)
    fy = (height / 2.0) / torch.clamp(torch.tan(encoding[:, 7] / 2.0), MIN_HALF_FOV_TAN)
    fx = (width / 2.0) / torch.clamp(torch.tan(encoding[:, 8] / 2.0), MIN_HALF_FOV_TAN)
    intrinsics = torch.zeros(encoding.shape[0], 3, 3, dtype=encoding.dtype, device=encoding.device)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1] = fx, fy
    intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = width / 2, height / 2, 1.0
    return invert_rigid(camera_to_world), intrinsics


def camera_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """B x 3 x 4 (or 4 x 4) world-to-camera extrinsics, B x 3 x 3 intrinsics, (H, W) -> B x 9 pose encodings."""
    height, width = image_size
    camera_to_world = invert_rigid(extrinsics)
    fov_h = 2 * torch.atan((height / 2) / intrinsics[:, 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[:, 0, 0])
    quaternion = matrix_to_quaternion(camera_to_world[:, :3, :3])
    return torch.cat((camera_to_world[:, :3, 3], quaternion, fov_h[:, None], fov_w[:, None]), dim=-1).float()


class CameraDecoder(nn.Module):
    """Camera token (B x C) -> B x 9 pose encoding: a 2-layer ReLU MLP, then translation, quaternion and a ReLU
    field-of-view head (official names)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_qvec = nn.Linear(dim, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim, 2), nn.ReLU())

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        """B x C camera tokens -> B x 9 pose encodings."""
        features = self.backbone(token).float()
        return torch.cat((self.fc_t(features), self.fc_qvec(features), self.fc_fov(features)), dim=-1)


class CameraEncoder(nn.Module):
    """Known camera -> camera token (B x C): pose encoding, MLP, LayerNorm, 4 transformer blocks, LayerNorm
    (official names; the blocks' LayerNorms keep torch's default eps, LayerScale starts at 0.01)."""

    def __init__(self, dim: int, depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *(Block(dim, num_heads, mlp_ratio, qkv_bias=True, init_values=0.01, norm_layer=nn.LayerNorm)
              for _ in range(depth))
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.pose_branch = Mlp(POSE_ENCODING_SIZE, dim // 2, dim)

    def forward(
        self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """B x 3 x 4 (or 4 x 4) world-to-camera extrinsics, B x 3 x 3 intrinsics, (H, W) -> B x C camera tokens."""
        tokens = self.token_norm(self.pose_branch(camera_to_pose_encoding(extrinsics, intrinsics, image_size)))
        # One view: each token attends only to itself (the official code attends over a scene's views).
        return self.trunk_norm(self.trunk(tokens[:, None]))[:, 0]

