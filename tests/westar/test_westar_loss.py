"""WeSTAR losses: SA-HDN against a slow reference, its invariances, contexts, ordinal loss, LoRA regulariser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from depthadapt.losses import lora_regularizer, ordinal_loss, sa_hdn_loss
from depthadapt.westar import depth_range_contexts, grid_contexts, instance_contexts

pytestmark = pytest.mark.unit


def reference_sa_hdn(
    pred: torch.Tensor, target: torch.Tensor, contexts: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6,
    trim: float = 0.0,
) -> torch.Tensor:
    """SA-HDN with explicit loops over images, contexts and pixels, in float64 (differentiable); ``trim``: the share of
    each image's largest pixel losses left out."""
    pred, target = pred.double(), target.double()
    batch, num_contexts, height, width = contexts.shape
    pixel_losses = []
    for b in range(batch):
        per_pixel: dict[tuple[int, int], list[torch.Tensor]] = {}
        for k in range(num_contexts):
            pixels = [(y, x) for y in range(height) for x in range(width) if contexts[b, k, y, x] and mask[b, y, x]]
            if not pixels:
                continue
            normalised = []
            for image in (pred, target):
                values = torch.stack([image[b, y, x] for y, x in pixels])
                median = values.sort().values[(len(pixels) - 1) // 2]
                deviation = sum((v - median).abs() for v in values) / len(pixels)
                normalised.append([(v - median) / (deviation + eps) for v in values])
            for pixel, p, t in zip(pixels, *normalised, strict=True):
                per_pixel.setdefault(pixel, []).append((p - t).abs())
        image_losses = sorted((sum(diffs) / len(diffs) for diffs in per_pixel.values()), key=float)
        pixel_losses += image_losses[: max(1, round(len(image_losses) * (1 - trim)))]
    return sum(pixel_losses) / len(pixel_losses)


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 5 x 6 images: overlapping instance and random contexts, a padding context, a partial mask."""
    instances = torch.randint(0, 4, (2, 5, 6))
    instances[1] = torch.where(instances[1] == 3, 0, instances[1])  # image 1 has fewer instances: padding
    contexts = instance_contexts(instances, min_area=2)
    contexts = torch.cat([contexts, torch.rand(2, 1, 5, 6) > 0.5], dim=1)
    target = torch.rand(2, 5, 6) + 0.1
    target[0, :2] = target[0, 0, 0]  # ties
    pred = torch.rand(2, 5, 6)
    mask = torch.rand(2, 5, 6) > 0.2
    return pred, target, contexts, mask


def test_sa_hdn_matches_slow_reference_value_and_gradient() -> None:
    pred, target, contexts, mask = _example()
    assert not contexts[1].flatten(1).any(1).all()  # the example does exercise padding contexts
    pred_ref = pred.double().requires_grad_(True)
    pred = pred.requires_grad_(True)
    loss = sa_hdn_loss(pred, target, contexts, mask)
    expected = reference_sa_hdn(pred_ref, target, contexts, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(pred.grad, pred_ref.grad.float(), rtol=1e-4, atol=1e-5)


def test_sa_hdn_trim_leaves_out_each_images_largest_pixel_losses() -> None:
    pred, target, contexts, mask = _example()
    target[1] = target[1].flip(-1)  # image 1 disagrees more: trimming over the batch would drop mostly its pixels
    pred_ref = pred.double().requires_grad_(True)
    pred = pred.requires_grad_(True)
    loss = sa_hdn_loss(pred, target, contexts, mask, trim=0.25)
    expected = reference_sa_hdn(pred_ref, target, contexts, mask, trim=0.25)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    expected.backward()
    assert torch.allclose(pred.grad.double(), pred_ref.grad, rtol=1e-4, atol=1e-6)
    assert loss.item() < sa_hdn_loss(pred, target, contexts, mask).item() - 0.05
    with pytest.raises(ValueError, match="trim"):
        sa_hdn_loss(pred, target, contexts, mask, trim=1.0)


def test_sa_hdn_with_one_context_is_affine_invariant() -> None:
    target = torch.rand(2, 8, 9) + 0.1
    image_only = grid_contexts(8, 9, levels=(1,))
    assert sa_hdn_loss(2.5 * target + 0.3, target, image_only).item() < 1e-5
    assert sa_hdn_loss(target.flip(-1), target, image_only).item() > 0.1


def test_sa_hdn_instance_contexts_are_invariant_only_per_instance() -> None:
    instances = torch.zeros(1, 8, 8, dtype=torch.long)
    instances[:, :, 4:] = 1
    instances[:, 4:, :4] = 2
    instances[:, :4, :4] = 3
    target = torch.rand(1, 8, 8) + 0.1
    scale, shift = torch.tensor([1.0, 3.0, 0.5, 2.0]), torch.tensor([0.0, -1.0, 2.0, 0.5])
    pred = scale[instances] * target + shift[instances]  # a different affine map per instance
    instances_only = instance_contexts(instances, min_area=1, include_image=False)
    assert sa_hdn_loss(pred, target, instances_only).item() < 1e-5
    assert sa_hdn_loss(pred, target, instance_contexts(instances, min_area=1)).item() > 0.1


def test_sa_hdn_sees_structure_inside_an_object_that_image_normalisation_hides() -> None:
    # Far background with a wide disparity range, a near object with a small internal variation that the
    # prediction gets mirrored (wrong shape). Image-wide statistics hardly notice; the object context does.
    target = torch.linspace(0.1, 0.5, 16).expand(1, 16, 16).clone()
    instances = torch.zeros(1, 16, 16, dtype=torch.long)
    instances[:, 4:12, 4:12] = 1
    inside = instances == 1
    target[inside] = 2.0 + 0.01 * torch.rand(64)
    pred = target.clone()
    pred[inside] = 2 * target[inside].median() - target[inside]
    image_only = sa_hdn_loss(pred, target, instance_contexts(instances, min_area=1000))
    semantic = sa_hdn_loss(pred, target, instance_contexts(instances, min_area=1))
    assert semantic.item() > 0.1
    assert semantic.item() > 10 * image_only.item()


def test_sa_hdn_padding_contexts_masks_and_broadcasting_change_nothing() -> None:
    pred, target, contexts, mask = _example()
    loss = sa_hdn_loss(pred, target, contexts, mask)
    padded = torch.cat([contexts, torch.zeros(2, 3, 5, 6, dtype=torch.bool)], dim=1)
    assert sa_hdn_loss(pred, target, padded, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    noisy_pred = torch.where(mask, pred, 100.0)
    noisy_target = torch.where(mask, target, -7.0)
    assert sa_hdn_loss(noisy_pred, noisy_target, contexts, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    grid = grid_contexts(5, 6)
    broadcast = sa_hdn_loss(pred, target, grid, mask)
    assert broadcast.item() == pytest.approx(sa_hdn_loss(pred, target, grid.expand(2, -1, -1, -1), mask).item())
    assert broadcast.item() == pytest.approx(reference_sa_hdn(pred, target, grid.expand(2, -1, -1, -1), mask).item())


def test_sa_hdn_gradients_flow_and_empty_input_gives_zero() -> None:
    pred, target, contexts, mask = _example()
    mask[1] = False  # an image without valid pixels
    pred.requires_grad_(True)
    sa_hdn_loss(pred, target, contexts, mask).backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0].abs().sum() > 0
    assert pred.grad[1].abs().sum() == 0
    empty = sa_hdn_loss(pred, target, contexts, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="contexts"):
        sa_hdn_loss(pred, target, contexts[:, :, :4])


def test_instance_contexts_order_area_filter_and_padding() -> None:
    instances = torch.zeros(2, 4, 4, dtype=torch.long)
    instances[0, :2, :2] = 7  # area 4
    instances[0, 3, 3] = 2  # area 1: below min_area
    instances[0, 2:, :2] = 5  # area 4
    instances[1, :, :3] = 9  # area 12
    contexts = instance_contexts(instances, min_area=2)
    assert contexts.shape == (2, 3, 4, 4) and contexts.dtype == torch.bool
    assert contexts[:, 0].all()  # the image context comes first
    torch.testing.assert_close(contexts[0, 1], instances[0] == 5)  # then instances by increasing id
    torch.testing.assert_close(contexts[0, 2], instances[0] == 7)
    torch.testing.assert_close(contexts[1, 1], instances[1] == 9)
    assert not contexts[1, 2].any()  # padding
    assert instance_contexts(instances, min_area=100, include_image=False).shape == (2, 0, 4, 4)
    with pytest.raises(ValueError, match="ids >= 0"):
        instance_contexts(instances - 1, min_area=1)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (7, 10)])
def test_grid_contexts_cover_every_pixel_once_per_level(height: int, width: int) -> None:
    contexts = grid_contexts(height, width, levels=(1, 2, 4))
    assert contexts.shape == (1 + 4 + 16, height, width)
    for level in contexts.split([1, 4, 16]):
        assert (level.sum(0) == 1).all()
        assert level.flatten(1).any(1).all()  # no empty cell
    top_left = torch.zeros(height, width, dtype=torch.bool)
    top_left[: (height + 1) // 2, : (width + 1) // 2] = True
    torch.testing.assert_close(contexts[1], top_left)


def test_depth_range_contexts_are_ordered_equal_count_groups_of_valid_pixels() -> None:
    depth = torch.rand(2, 6, 7)
    mask = torch.rand(2, 6, 7) > 0.3
    contexts = depth_range_contexts(depth, mask, levels=(1, 2, 4))
    assert contexts.shape == (2, 7, 6, 7)
    for b in range(2):
        for level in contexts[b].split([1, 2, 4]):
            assert (level.sum(0) == mask[b].long()).all()  # each valid pixel exactly once, invalid never
            sizes = level.flatten(1).sum(1)
            assert sizes.max() - sizes.min() <= 1
            groups = [depth[b][group] for group in level]
            assert all(low.max() <= high.min() for low, high in zip(groups, groups[1:], strict=False))


def test_ordinal_loss_hand_cases() -> None:
    # disparity: (0,0) = 1, (0,1) = 2, (1,0) = 3, (1,1) = 3; smaller disparity = farther
    pred = torch.tensor([[[1.0, 2.0], [3.0, 3.0]]], requires_grad=True)

    def loss(rows: list[list[float]], margin: float = 0.0) -> float:
        return ordinal_loss(pred, torch.tensor([rows]), margin).item()

    def hinge(rows: list[list[float]], margin: float = 0.0) -> float:
        return ordinal_loss(pred, torch.tensor([rows]), margin, equal="hinge").item()

    assert loss([[0, 0, 0, 1, 1]]) == 0.0  # (0,0) is farther and has the smaller disparity: satisfied
    assert loss([[0, 0, 0, 1, 1]], margin=0.5) == 0.0  # 1 < 2 - 0.5
    assert loss([[0, 0, 0, 1, 1]], margin=1.5) == pytest.approx(0.5)  # 1 - 2 + 1.5
    assert loss([[0, 0, 0, 1, -1]]) == pytest.approx(1.0)  # claimed closer but farther: 2 - 1
    assert loss([[0, 1, 0, 0, -1]], margin=0.5) == 0.0  # (0,1) closer: larger disparity, 2 > 1 + 0.5
    assert loss([[1, 0, 1, 1, 0]]) == 0.0  # equal and equal
    assert loss([[0, 0, 1, 0, 0]]) == pytest.approx(4.0)  # equal claimed, (1 - 3)^2
    assert hinge([[0, 0, 1, 0, 0]], margin=0.5) == pytest.approx(1.5)  # equal claimed, |1 - 3| - 0.5
    assert hinge([[0, 0, 0, 1, 0]], margin=1.5) == 0.0  # equal within the margin: free
    assert hinge([[0, 0, 0, 1, 0]], margin=0.25) == pytest.approx(0.75)  # |1 - 2| - 0.25, not squared
    assert hinge([[0, 0, 0, 1, 1]], margin=1.5) == loss([[0, 0, 0, 1, 1]], margin=1.5)  # ordered pairs: the same
    # mean over valid pairs; padding rows (y1 = -1) are ignored whatever else they hold
    rows = [[0, 0, 0, 1, -1], [0, 0, 1, 0, 0], [-1, -1, -1, -1, 0], [-1, 5, 9, 9, 1]]
    assert loss(rows) == pytest.approx((1.0 + 4.0) / 2)
    ordinal_loss(pred, torch.tensor([[[0.0, 0, 0, 1, -1]]])).backward()
    assert pred.grad[0, 0, 0] < 0 < pred.grad[0, 0, 1]  # descent makes (0,0) closer, (0,1) farther


def test_ordinal_loss_padding_only_and_bad_rows() -> None:
    pred = torch.rand(2, 3, 3, requires_grad=True)
    padding = torch.tensor([-1.0, -1, -1, -1, 0]).repeat(2, 4, 1)
    empty = ordinal_loss(pred, padding)
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="outside"):
        ordinal_loss(pred, torch.tensor([[[0.0, 0, 3, 0, 1]], [[0.0, 0, 1, 1, 1]]]))
    with pytest.raises(ValueError, match="labels"):
        ordinal_loss(pred, torch.tensor([[[0.0, 0, 1, 0, 2]], [[0.0, 0, 1, 1, 1]]]))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(6, 18)
        self.proj = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.qkv(x)[..., :6])


def test_lora_regularizer_matches_hand_computation() -> None:
    from peft import LoraConfig, get_peft_model

    base = nn.Sequential(_Block(), _Block())
    assert lora_regularizer(base).item() == 0.0
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["qkv"]))
    assert lora_regularizer(model).item() == 0.0  # peft starts B at zero
    expected = 0.0
    for block in model.base_model.model:
        layer = block.qkv
        nn.init.normal_(layer.lora_B["default"].weight)
        delta = (16 / 8) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        expected = expected + delta.pow(2).sum()
    regularizer = lora_regularizer(model)
    assert regularizer.item() == pytest.approx(expected.item(), rel=1e-5)
    regularizer.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_the_normalised_ordinal_term_is_scale_free_and_the_literal_one_is_not() -> None:
    from depthadapt.westar import WeSTARLoss, WeSTARLossSettings

    g = torch.Generator().manual_seed(4)
    pred, label = torch.rand(2, 8, 12, generator=g) + 0.5, torch.rand(2, 8, 12, generator=g)
    pairs = torch.tensor([[[0, 0, 5, 5, 1], [1, 2, 7, 11, -1], [3, 3, 4, 4, 1]]] * 2, dtype=torch.float32)
    terms = {}
    for form in ("normalised", "disparity"):
        loss = WeSTARLoss(WeSTARLossSettings(self_training_weight=0.0, regularizer_weight=0.0, ordinal_form=form,
                                                 ordinal_margin=0.5))
        terms[form] = [loss(p, label, ordinal=pairs)["ordinal"] for p in (pred, 7 * pred + 3)]
        assert terms[form][0] > 0
    torch.testing.assert_close(terms["normalised"][0], terms["normalised"][1])
    assert not torch.allclose(terms["disparity"][0], terms["disparity"][1], rtol=0.2)  # depends on the scale
    flat = pred.flatten(1)
    median = flat.median(1, keepdim=True).values
    expected = (flat - median) / ((flat - median).abs().mean(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(terms["normalised"][0], ordinal_loss(expected.view_as(pred), pairs, 0.5))


def test_the_objective_passes_its_treatment_of_equal_answers_on() -> None:
    from depthadapt.westar import WeSTARLoss, WeSTARLossSettings

    torch.manual_seed(0)
    pred = torch.rand(1, 6, 8)
    pairs = torch.tensor([[[0.0, 0, 5, 7, 0], [1, 1, 4, 6, 0], [2, 2, 3, 3, 1]]])
    normalised = WeSTARLoss().ranked(pred)
    for equal in ("squared", "hinge"):
        loss = WeSTARLoss(WeSTARLossSettings(self_training_weight=0.0, regularizer_weight=0.0, ordinal_equal=equal))
        got = loss(pred, pred, ordinal=pairs)["ordinal"]
        torch.testing.assert_close(got, ordinal_loss(normalised, pairs, 0.1, equal))
    squared, hinge = (ordinal_loss(normalised, pairs, 0.1, e) for e in ("squared", "hinge"))
    assert not torch.allclose(squared, hinge)


def test_the_objective_trims_its_self_training_term_as_set() -> None:
    from depthadapt.westar import WeSTARLoss, WeSTARLossSettings

    pred, label = torch.rand(2, 6, 8, generator=torch.Generator().manual_seed(1)).unbind(0)
    pred, label = pred[None], label[None]
    contexts = grid_contexts(6, 8, (1, 2))
    for trim in (0.0, 0.3):
        loss = WeSTARLoss(WeSTARLossSettings(context="grid", hdn_levels=(1, 2), weak_weight=0.0, regularizer_weight=0.0,
                                             self_training_trim=trim))
        torch.testing.assert_close(loss(pred, label)["self_training"], sa_hdn_loss(pred, label, contexts, trim=trim))
    with pytest.raises(ValueError, match="model.loss.self_training_trim"):
        WeSTARLossSettings(self_training_trim=1.0)


def test_the_defaults_are_the_benchmarked_weak_term_and_the_papers_other_weights() -> None:
    from depthadapt.westar import WeSTARLoss

    loss = WeSTARLoss()
    assert loss.weights == {"self_training": 1.0, "ordinal": 3.0, "lora_regularizer": 1.0}
    settings = loss.settings
    assert (settings.ordinal_form, settings.ordinal_margin, settings.context) == ("normalised", 0.1, "instances")
    assert settings.ordinal_equal == "hinge"
