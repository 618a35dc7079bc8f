"""Training losses (SSI, SiLog, multi-scale gradient matching): invariances and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from depthadapt.losses import gradient_matching_loss, silog_loss, ssi_loss

pytestmark = pytest.mark.unit


def test_ssi_loss_is_scale_and_shift_invariant() -> None:
    target = torch.rand(2, 6, 7) + 0.1
    mask = torch.rand(2, 6, 7) > 0.2
    assert ssi_loss(3.0 * target + 0.5, target, mask).item() < 1e-5
    assert ssi_loss(target.flip(-1), target, mask).item() > 0.1


def test_ssi_loss_hand_computed() -> None:
    # target [0, 1, 2, 3]: median (lower, torch convention) 1, mean |t - 1| = (1 + 0 + 1 + 2) / 4 = 1
    #   -> normalised [-1, 0, 1, 2]
    # pred [0, 0, 0, 4]: median 0, mean |p - 0| = 1 -> normalised [0, 0, 0, 4]
    # mean |difference| = (1 + 0 + 1 + 2) / 4 = 1
    pred = torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    target = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert math.isclose(ssi_loss(pred, target, torch.ones(1, 4, dtype=torch.bool)).item(), 1.0, rel_tol=1e-5)


def test_ssi_loss_ignores_masked_pixels_and_empty_images() -> None:
    target = torch.rand(2, 4, 4) + 0.1
    pred = target.clone()
    pred[0, 0, 0] = 100.0
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False
    mask[1] = False
    loss = ssi_loss(pred, target, mask)
    assert loss.item() < 1e-5
    loss_all_masked = ssi_loss(pred, target, torch.zeros_like(mask))
    assert loss_all_masked.item() == 0.0


def test_silog_loss_hand_computed() -> None:
    # pred = target / 2 everywhere: g = log 2 for all pixels -> sqrt(log2^2 - 0.5 log2^2) = log2 / sqrt 2
    target = torch.full((1, 3, 3), 8.0)
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    expected = math.log(2) / math.sqrt(2)
    assert math.isclose(silog_loss(target / 2, target, mask).item(), expected, rel_tol=1e-5)
    assert silog_loss(target, target, mask).item() < 1e-5
    pred = target.clone().requires_grad_(True)
    silog_loss(pred * torch.linspace(0.5, 2, 9).view(1, 3, 3), target, mask).backward()
    assert torch.isfinite(pred.grad).all()


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
