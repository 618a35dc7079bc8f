"""Images for people: side-by-side panels of predictions, ground truth and errors."""

from __future__ import annotations

import numpy as np
import torch

from depthadapt.io.formats import colorize_depth
from depthadapt.metrics import align_affine, depth_to_disparity


def relative_error_map(
    disparity: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, max_depth: float = 80.0
) -> torch.Tensor:
    """|aligned depth - gt| / gt after ``metrics.align_affine`` of the disparity: H x W -> H x W, 0 where invalid."""
    aligned = align_affine(disparity[None], depth[None], valid[None], max_depth)[0]
    error = (aligned - depth).abs() / depth.clamp_min(1e-6)
    return torch.where(valid, error, 0.0).float()


def depth_panel(
    image: torch.Tensor,
    teacher: torch.Tensor,
    student: torch.Tensor,
    depth: torch.Tensor,
    valid: torch.Tensor,
    max_error: float = 0.5,
) -> np.ndarray:
    """RGB | teacher | student | ground truth | error side by side -> H x 5W x 3 uint8.

    `image` 3 x H x W in [0, 1]; `teacher`, `student` H x W disparities; `depth` H x W metres with `valid`.
    The error is the student's relative error (`relative_error_map`), black (0) to bright (>= `max_error`).
    """
    valid = valid.bool().cpu()
    depth = depth.float().cpu()
    rgb = (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    student = student.detach().float().cpu()
    error = relative_error_map(student, depth, valid).clamp_max(max_error).numpy()
    error[0, 0] = max_error  # fixes the colour scale: 0 .. max_error
    tiles = [
        rgb,
        colorize_depth(teacher.detach().float().cpu().numpy()),
        colorize_depth(student.numpy()),
        colorize_depth(depth_to_disparity(depth, valid).numpy(), valid=valid.numpy()),
        colorize_depth(error),
    ]
    return np.concatenate(tiles, axis=1)
