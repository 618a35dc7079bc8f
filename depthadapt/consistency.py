"""A label-free peer of WeSTAR: perturbation-consistency fine-tuning with a spatial distance constraint.

Re-implemented from the description and public code of DepthAnything-AC (Sun et al., "Depth Anything at Any
Condition", HVision-NKU 2025, arXiv 2507.01634; no code copied): a frozen source model labels the clean (weak) view;
the adapted model is pulled to it on that view (distillation), its prediction on a perturbed (strong) view is pulled
to its own clean-view prediction (consistency), and the patch-level "spatial distance" relations of its perturbed-view
prediction are pulled to the source's (the spatial distance constraint). The three terms are averaged, as there.

Where we differ: the affine-invariant terms use ``depthadapt.losses.ssi_loss`` (median / mean absolute deviation
normalisation of both maps) instead of a min-max then mean normalisation; the spatial distance matrix is built from
each map min-max normalised to [0, 1] (the reference uses the raw model output, whose scale is Depth Anything V2's
and not a tiny model's), on the model's patch grid (``patch`` pixels per cell), as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from depthadapt.losses import ssi_loss

__all__ = ["PerturbationConsistencyLoss", "spatial_distance_matrix"]


def spatial_distance_matrix(disparity: torch.Tensor, patch: int = 14, eps: float = 1e-6) -> torch.Tensor:
    """B x H x W disparity -> B x N x N, N = (H // patch) (W // patch): for every pair of patch cells,
    sqrt(position distance^2 + depth difference^2), the position distance scaled to [0, 1] over the grid and the
    depth the map min-max normalised per image and averaged over each cell (bilinear resize)."""
    if disparity.dim() != 3:
        raise ValueError(f"disparity must be B x H x W, got {tuple(disparity.shape)}")
    rows, cols = max(1, disparity.shape[1] // patch), max(1, disparity.shape[2] // patch)
    flat = disparity.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - low) / (high - low + eps)).view_as(disparity)
    cells = F.interpolate(scaled[:, None], size=(rows, cols), mode="bilinear", align_corners=False).flatten(1)
    grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    position = torch.cdist(grid.double(), grid.double()).to(cells)
    position = (position - position.min()) / (position.max() - position.min() + eps) + eps
    depth = (cells[:, :, None] - cells[:, None, :]).abs()
    return torch.sqrt(position.square()[None] + depth.square())


class PerturbationConsistencyLoss(nn.Module):
    """The peer's weighted terms: ``distill_weight`` x ssi(student on the clean view, source on the clean view) +
    ``consistency_weight`` x ssi(student on the perturbed view, student on the clean view) + ``spatial_weight`` x
    MSE(spatial distance matrix of the student on the perturbed view, of the source on the clean view); the
    reference's 1/3 each. All maps B x H x W disparity; the source's carry no gradient."""

    def __init__(self, distill_weight: float = 1 / 3, consistency_weight: float = 1 / 3,
                 spatial_weight: float = 1 / 3, patch: int = 14) -> None:
        super().__init__()
        if min(distill_weight, consistency_weight, spatial_weight) < 0:
            raise ValueError("model loss weights must be >= 0 (0 switches a term off)")
        self.weights = {"distill": distill_weight, "consistency": consistency_weight, "spatial": spatial_weight}
        self.patch = patch

    def forward(self, student_clean: torch.Tensor, student_perturbed: torch.Tensor,
                source_clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted terms and ``loss``, their weighted sum."""
        everywhere = torch.ones_like(source_clean, dtype=torch.bool)
        source_clean = source_clean.detach()
        terms = {
            "distill": ssi_loss(student_clean, source_clean, everywhere),
            "consistency": ssi_loss(student_perturbed, student_clean, everywhere),
            "spatial": F.mse_loss(spatial_distance_matrix(student_perturbed, self.patch),
                                  spatial_distance_matrix(source_clean, self.patch)),
        }
        loss = sum(self.weights[name] * value for name, value in terms.items())
        return terms | {"loss": loss}
