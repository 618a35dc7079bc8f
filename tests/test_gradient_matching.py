"""Multi-scale gradient-matching loss (MiDaS / Depth Anything V2 recipe)."""

from __future__ import annotations

import pytest
import torch

from depthadapt.losses import gradient_matching_loss


def test_hand_computed_example() -> None:
    pred, target = torch.tensor([[[0.0, 1.0, 0.0]]]), torch.tensor([[[0.0, 0.0, 1.0]]])
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    # least squares: scale -1/2, shift 1/2 -> aligned [1/2, 0, 1/2], residual [1/2, 0, -1/2]
    assert gradient_matching_loss(pred, target, mask, scales=1).item() == pytest.approx(1 / 3)  # (1/2 + 1/2) / 3
    assert gradient_matching_loss(pred, target, mask, scales=2).item() == pytest.approx(1 / 3 + 1 / 2)  # + 1 / 2
    assert gradient_matching_loss(target, pred, mask, scales=1).item() != pytest.approx(1 / 3)  # not symmetric


def test_zero_for_affine_prediction_positive_otherwise() -> None:
    target = torch.rand(2, 32, 48) + 0.1
    mask = torch.rand(2, 32, 48) > 0.2
    affine = 3.0 * target - 0.5
    assert gradient_matching_loss(affine, target, mask).abs() < 1e-5
    wrong = target + 0.1 * torch.randn_like(target)
    assert gradient_matching_loss(wrong, target, mask) > 1e-2
    assert gradient_matching_loss(wrong, target, torch.zeros_like(mask)) == 0  # nothing to compare


def test_masked_pixels_do_not_count_and_gradients_flow() -> None:
    target = torch.rand(1, 16, 16)
    pred = (2 * target + 1).requires_grad_(True)
    mask = torch.ones(1, 16, 16, dtype=torch.bool)
    mask[:, 5, 7] = False
    with torch.no_grad():
        pred[:, 5, 7] = 100.0  # an outlier outside the mask
    assert gradient_matching_loss(pred, target, mask).abs() < 1e-5
    noisy = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    gradient_matching_loss(noisy, target, mask).backward()
    assert noisy.grad.abs().sum() > 0 and noisy.grad[0, 5, 7] == 0
    with pytest.raises(ValueError, match="B x H x W"):
        gradient_matching_loss(target[0], target[0], mask[0])
