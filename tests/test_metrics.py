import math

import pytest
import torch
from builders import synthetic_batch
from torchmetrics.utilities import dim_zero_sum

from depthadapt.metrics import (
    METRIC_NAMES,
    DepthMetrics,
    EvaluationProtocol,
    affine_invariant_metrics,
    depth_metrics,
    eval_crop_mask,
    format_metrics_table,
)

pytestmark = pytest.mark.unit

LN2 = math.log(2.0)

# 1 x 2 x 2 example worked by hand. gt [[1, 2], [4, 8]], pred [[1, 4], [3, 10]]
#   pixel   gt  pred  thresh          diff  |diff|/gt  diff^2/gt  dlog
#   a       1   1     1               0     0          0          0
#   b       2   4     2               2     1          2          ln 2
#   c       4   3     4/3 = 1.3333    -1    0.25       0.25       ln 0.75
#   d       8   10    10/8 = 1.25     2     0.25       0.5        ln 1.25
# d1: thresh < 1.25 -> a only (1.25 is not < 1.25) -> 1/4
# d2: thresh < 1.5625 -> a, c, d -> 3/4;  d3: thresh < 1.953125 -> a, c, d -> 3/4
# abs_rel = (0 + 1 + 0.25 + 0.25) / 4 = 0.375; sq_rel = (0 + 2 + 0.25 + 0.5) / 4 = 0.6875
# rmse = sqrt((0 + 4 + 1 + 4) / 4) = sqrt(2.25) = 1.5
# dlog^2: 0, 0.480453014, 0.082760974, 0.049793044 -> mean 0.153251758; rmse_log = 0.391473828
# mean dlog = ln(2 * 0.75 * 1.25) / 4 = ln(1.875) / 4 = 0.157152165
# silog = sqrt(0.153251758 - 0.5 * 0.157152165^2) = 0.375370959
# log10 = (0.301029996 + 0.124938737 + 0.096910013) / 4 = 0.130719686
GT_2X2 = [[1.0, 2.0], [4.0, 8.0]]
PRED_2X2 = [[1.0, 4.0], [3.0, 10.0]]
EXPECTED_2X2 = {
    "d1": 0.25,
    "d2": 0.75,
    "d3": 0.75,
    "abs_rel": 0.375,
    "sq_rel": 0.6875,
    "rmse": 1.5,
    "rmse_log": 0.391473828,
    "log10": 0.130719686,
    "silog": 0.375370959,
}


def assert_metrics(values: dict, expected: dict, index: int = 0, tol: float = 1e-6) -> None:
    for name, want in expected.items():
        got = values[name][index].item()
        assert got == pytest.approx(want, abs=tol), f"{name}: got {got}, want {want}"


def test_metric_names_order():
    assert METRIC_NAMES == ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def test_hand_worked_2x2_example():
    values = depth_metrics(torch.tensor([PRED_2X2]), torch.tensor([GT_2X2]))
    assert set(values) == set(METRIC_NAMES)
    assert all(v.shape == (1,) and v.dtype == torch.float32 for v in values.values())
    assert_metrics(values, EXPECTED_2X2)


def test_perfect_prediction():
    gt = torch.tensor([[[0.5, 1.0, 2.0], [3.0, 10.0, 70.0]]])
    values = depth_metrics(gt.clone(), gt)
    assert_metrics(values, {"d1": 1.0, "d2": 1.0, "d3": 1.0} | {n: 0.0 for n in METRIC_NAMES[3:]})


def test_prediction_twice_the_ground_truth():
    # gt [1, 2, 3, 4], pred = 2 gt: thresh = 2 everywhere (not < 1.25^3 = 1.953125)
    # abs_rel = 1; sq_rel = mean(gt^2 / gt) = mean(gt) = 2.5; rmse = sqrt(mean(gt^2)) = sqrt(30 / 4)
    # dlog = ln 2 everywhere: rmse_log = ln 2, log10 = log10 2, silog = sqrt(ln2^2 - 0.5 ln2^2) = ln2 / sqrt 2
    gt = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    values = depth_metrics(2 * gt, gt)
    assert_metrics(
        values,
        {
            "d1": 0.0,
            "d2": 0.0,
            "d3": 0.0,
            "abs_rel": 1.0,
            "sq_rel": 2.5,
            "rmse": math.sqrt(7.5),
            "rmse_log": LN2,
            "log10": math.log10(2.0),
            "silog": math.sqrt(LN2**2 - 0.5 * LN2**2),
        },
    )


def test_mask_and_depth_range_exclude_pixels():
    # The 2x2 example plus a column of pixels that must all be excluded, each with a huge error:
    # masked out by the user, gt above max_depth, gt = 0 (invalid), gt NaN.
    gt = torch.tensor([[[1.0, 2.0, 5.0, 100.0], [4.0, 8.0, 0.0, float("nan")]]])
    pred = torch.tensor([[[1.0, 4.0, 1000.0, 1000.0], [3.0, 10.0, 1000.0, 1000.0]]])
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[0, 0, 2] = False
    values = depth_metrics(pred, gt, mask, EvaluationProtocol(min_depth=1e-3, max_depth=80.0))
    assert_metrics(values, EXPECTED_2X2)


def test_non_positive_prediction_is_clamped_to_min_depth():
    # gt [1, 1], pred [1, 0] -> pred clamped to [1, 0.1] with min_depth 0.1
    # abs_rel = (0 + 0.9) / 2 = 0.45; rmse = sqrt(0.81 / 2); rmse_log = sqrt(ln(0.1)^2 / 2)
    gt = torch.tensor([[[1.0, 1.0]]])
    pred = torch.tensor([[[1.0, 0.0]]])
    values = depth_metrics(pred, gt, protocol=EvaluationProtocol(min_depth=0.1))
    assert_metrics(
        values,
        {
            "d1": 0.5,
            "abs_rel": 0.45,
            "rmse": math.sqrt(0.405),
            "rmse_log": math.sqrt(math.log(0.1) ** 2 / 2),
        },
    )
    assert all(torch.isfinite(v).all() for v in values.values())
    # NaN and -inf in pred are treated the same way
    values_nan = depth_metrics(torch.tensor([[[1.0, float("nan")]]]), gt, protocol=EvaluationProtocol(min_depth=0.1))
    assert values_nan["abs_rel"].item() == pytest.approx(0.45)


def test_image_without_valid_pixels_gives_nan():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 8.0]], [[0.0, 0.0], [100.0, 0.0]]])
    pred = torch.tensor([PRED_2X2, PRED_2X2])
    values = depth_metrics(pred, gt)
    assert_metrics(values, EXPECTED_2X2, index=0)
    assert all(math.isnan(values[n][1].item()) for n in METRIC_NAMES)


def test_per_image_values_then_mean():
    # image 0: one valid pixel, pred = 2 gt -> abs_rel 1; image 1: three valid pixels, perfect -> abs_rel 0
    # per-image mean: (1 + 0) / 2 = 0.5, while pooling the 4 pixels would give 1 / 4 = 0.25
    gt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 0.0]]])
    pred = torch.tensor([[[2.0, 9.0], [9.0, 9.0]], [[1.0, 2.0], [3.0, 9.0]]])
    values = depth_metrics(pred, gt)
    assert values["abs_rel"].tolist() == pytest.approx([1.0, 0.0])
    metric = DepthMetrics()
    metric.update(pred, gt)
    out = metric.compute()
    assert out["abs_rel"].item() == pytest.approx(0.5)
    assert out["d1"].item() == pytest.approx(0.5)  # (0 + 1) / 2, pooled would be 3 / 4


def test_eval_crop_masks():
    # KITTI 375 x 1242, garg: rows int(153.04) = 153 : int(371.96) = 371,
    # cols int(44.65) = 44 : int(1197.35) = 1197
    garg = eval_crop_mask(375, 1242, "garg")
    assert garg.shape == (375, 1242) and garg.dtype == torch.bool
    assert garg.sum().item() == (371 - 153) * (1197 - 44)
    assert garg[153, 44] and garg[370, 1196]
    assert not garg[152, 44] and not garg[371, 44] and not garg[153, 43] and not garg[153, 1197]
    # eigen_kitti 375 x 1242: rows int(124.66) = 124 : int(342.57) = 342, cols int(44.65) = 44 : 1197
    eigen = eval_crop_mask(375, 1242, "eigen_kitti")
    assert eigen.sum().item() == (342 - 124) * (1197 - 44)
    assert eigen[124, 44] and not eigen[123, 44] and not eigen[342, 44]
    nyu = eval_crop_mask(480, 640, "eigen_nyu")
    assert nyu.sum().item() == (471 - 45) * (601 - 41)
    assert nyu[45, 41] and nyu[470, 600] and not nyu[44, 41] and not nyu[45, 40] and not nyu[471, 600]
    assert eval_crop_mask(3, 4, None).all()


def test_crop_excludes_pixels_in_metrics():
    # 10 x 10 garg crop: rows int(4.08) = 4 : int(9.92) = 9, cols int(0.36) = 0 : int(9.64) = 9
    gt = torch.full((1, 10, 10), 2.0)
    pred = gt.clone()
    pred[0, 0, 0] = 1000.0  # row 0 is outside the crop
    pred[0, 5, 9] = 1000.0  # column 9 is outside the crop
    perfect = {"d1": 1.0} | {n: 0.0 for n in METRIC_NAMES[3:]}
    assert_metrics(depth_metrics(pred, gt, protocol=EvaluationProtocol(crop="garg")), perfect)
    assert depth_metrics(pred, gt)["abs_rel"].item() > 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(8, 8\)"):
        depth_metrics(torch.ones(1, 4, 4), torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="valid crops are None, 'garg', 'eigen_kitti', 'eigen_nyu'"):
        EvaluationProtocol(crop="kitti")
    with pytest.raises(ValueError, match="valid crops"):
        eval_crop_mask(4, 4, "nyu")
    with pytest.raises(ValueError, match="480 x 640"):
        eval_crop_mask(240, 320, "eigen_nyu")
    with pytest.raises(ValueError, match="mask must have gt's shape"):
        depth_metrics(torch.ones(1, 4, 4), torch.ones(1, 4, 4), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="min_depth"):
        EvaluationProtocol(min_depth=0.0)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(8, 8\)"):
        affine_invariant_metrics(torch.ones(1, 4, 4), torch.ones(1, 8, 8))


def test_affine_invariant_exact_affine_disparity_is_perfect():
    g = torch.Generator().manual_seed(0)
    gt = 1.0 + 9.0 * torch.rand(2, 6, 7, generator=g, dtype=torch.float64)
    disparity = torch.stack([3.0 / gt[0] + 0.5, 0.2 / gt[1] - 0.01])
    mask = torch.ones(2, 6, 7, dtype=torch.bool)
    mask[1, :, :3] = False
    disparity[1, :, :3] = -50.0  # garbage outside the mask
    values = affine_invariant_metrics(disparity, gt, mask)
    perfect = {"d1": 1.0, "d2": 1.0, "d3": 1.0} | {n: 0.0 for n in METRIC_NAMES[3:]}
    for i in range(2):
        assert_metrics(values, perfect, index=i, tol=1e-6)


def test_affine_invariant_hand_worked():
    # gt [1, 1/2, 1/3] -> target disparity [1, 2, 3]; pred [0, 1, 3]
    # mean p = 4/3, mean t = 2; dp = [-4/3, -1/3, 5/3], dt = [-1, 0, 1]; cov = 3, var = 42/9 = 14/3
    # scale = 9/14, shift = 2 - (9/14)(4/3) = 8/7; aligned = [8/7, 25/14, 43/14]; depth = [7/8, 14/25, 14/43]
    # abs_rel = (1/8 + 0.06 / 0.5 + (1/129) / (1/3)) / 3 = (0.125 + 0.12 + 1/43) / 3
    # rmse = sqrt((0.125^2 + 0.06^2 + (1/129)^2) / 3); all thresh < 1.25 -> d1 = 1
    gt = torch.tensor([[[1.0, 0.5, 1.0 / 3.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.0, 1.0, 3.0]]], dtype=torch.float64)
    values = affine_invariant_metrics(pred, gt)
    assert values["abs_rel"].dtype == torch.float64
    assert_metrics(
        values,
        {
            "d1": 1.0,
            "abs_rel": (0.125 + 0.12 + 1.0 / 43.0) / 3.0,
            "rmse": math.sqrt((0.125**2 + 0.06**2 + (1.0 / 129.0) ** 2) / 3.0),
        },
        tol=1e-9,
    )


def test_affine_invariant_clamps_aligned_disparity():
    # gt [1, 1, 1, 10, 10] (max_depth 10) -> target [1, 1, 1, 0.1, 0.1]; pred [1, 1, 1, -100, -200]
    # mean p = -297 / 5 = -59.4, mean t = 3.2 / 5 = 0.64
    # dp = [60.4 x3, -40.6, -140.6], dt = [0.36 x3, -0.54, -0.54]
    # cov = 3 * 60.4 * 0.36 + (40.6 + 140.6) * 0.54 = 163.08
    # var = 3 * 60.4^2 + 40.6^2 + 140.6^2 = 32361.2
    # scale = 163.08 / 32361.2 ~ 0.0050393, shift = 0.64 + 59.4 * scale ~ 0.93933
    # aligned at pred -200: shift - 200 scale ~ -0.0685 < 0 -> clamped to 1/max_depth = 0.1 -> depth 10 = gt.
    # (Unclamped, depth would be negative and then floored at min_depth: a huge error.)
    scale = 163.08 / 32361.2
    shift = 0.64 + 59.4 * scale
    depth = [1.0 / (scale + shift)] * 3 + [1.0 / (shift - 100.0 * scale), 10.0]
    gt_list = [1.0, 1.0, 1.0, 10.0, 10.0]
    abs_rel = sum(abs(d - g) / g for d, g in zip(depth, gt_list, strict=True)) / 5
    rmse = math.sqrt(sum((d - g) ** 2 for d, g in zip(depth, gt_list, strict=True)) / 5)
    gt = torch.tensor([[gt_list]], dtype=torch.float64)
    pred = torch.tensor([[[1.0, 1.0, 1.0, -100.0, -200.0]]], dtype=torch.float64)
    values = affine_invariant_metrics(pred, gt, protocol=EvaluationProtocol(max_depth=10.0))
    # thresh: 3 x 1.0589 and 1.0 pass, 10 / 2.297 does not -> d1 = 4/5
    assert_metrics(values, {"d1": 0.8, "abs_rel": abs_rel, "rmse": rmse}, tol=1e-9)


def test_depth_metrics_accumulates_like_one_batch():
    g = torch.Generator().manual_seed(1)
    gt = 1.0 + 9.0 * torch.rand(5, 4, 6, generator=g)
    pred = gt * (0.8 + 0.4 * torch.rand(5, 4, 6, generator=g))
    gt[4] = 0.0  # image 4 has no valid pixel
    whole = DepthMetrics()
    whole.update(pred, gt)
    split = DepthMetrics()
    split.update(pred[:2], gt[:2])
    split.update(pred[2:], gt[2:])
    a, b = whole.compute(), split.compute()
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(b[name].item(), abs=1e-6)
    assert a["images"].item() == 4.0 and a["skipped"].item() == 1.0
    assert b["images"].item() == 4.0 and b["skipped"].item() == 1.0
    per_image = depth_metrics(pred[:4], gt[:4])
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(per_image[name].mean().item(), abs=1e-6)


def test_depth_metrics_states_reduce_by_sum_and_merge():
    metric = DepthMetrics()
    assert metric.full_state_update is False
    assert set(metric._reductions) == {f"sum_{n}" for n in METRIC_NAMES} | {"images", "skipped"}
    assert all(fn is dim_zero_sum for fn in metric._reductions.values())
    # Simulate two DDP ranks: merging the states equals updating one metric with both batches.
    gt = torch.tensor([GT_2X2, [[2.0, 2.0], [2.0, 0.0]]])
    pred = torch.tensor([PRED_2X2, [[4.0, 4.0], [4.0, 4.0]]])
    rank0, rank1 = DepthMetrics(), DepthMetrics()
    rank0.update(pred[:1], gt[:1])
    rank1.update(pred[1:], gt[1:])
    rank0.merge_state(rank1)
    out = rank0.compute()
    # image 2 is 2x its gt: abs_rel 1 -> mean (0.375 + 1) / 2
    assert out["abs_rel"].item() == pytest.approx((0.375 + 1.0) / 2)
    assert out["rmse"].item() == pytest.approx((1.5 + 2.0) / 2)
    assert out["images"].item() == 2.0 and out["skipped"].item() == 0.0


def test_depth_metrics_empty_and_all_skipped_give_nan():
    metric = DepthMetrics()
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        out = metric.compute()
    assert all(math.isnan(out[n].item()) for n in METRIC_NAMES)
    assert out["images"].item() == 0.0
    metric.update(torch.ones(2, 3, 3), torch.zeros(2, 3, 3))
    out = metric.compute()
    assert all(math.isnan(out[n].item()) for n in METRIC_NAMES)
    assert out["images"].item() == 0.0 and out["skipped"].item() == 2.0
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        assert metric.compute()["skipped"].item() == 0.0


def test_depth_metrics_affine_invariant_mode():
    g = torch.Generator().manual_seed(2)
    gt = 1.0 + 9.0 * torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    metric = DepthMetrics(affine_invariant=True, protocol=EvaluationProtocol(max_depth=10.0))
    metric.update(4.0 / gt + 1.0, gt)
    out = metric.compute()
    assert out["d1"].item() == pytest.approx(1.0)
    assert out["abs_rel"].item() == pytest.approx(0.0, abs=1e-6)


def test_format_metrics_table():
    metrics = dict(EXPECTED_2X2) | {"images": 3.0, "skipped": 0.0}
    table = format_metrics_table(metrics, title="kitti")
    lines = table.splitlines()
    assert lines[0] == "kitti"
    assert lines[1].split() == list(METRIC_NAMES) + ["images", "skipped"]
    assert lines[2].split() == [
        "0.2500",
        "0.7500",
        "0.7500",
        "0.3750",
        "0.6875",
        "1.5000",
        "0.3915",
        "0.1307",
        "0.3754",
        "3",
        "0",
    ]
    assert len(format_metrics_table({"abs_rel": torch.tensor(0.5)}).splitlines()) == 2


def test_a_wrong_depth_scale_is_suspected_and_the_factor_named():
    from depthadapt.metrics import suspect_depth_scale

    metres = torch.linspace(2.0, 30.0, 200).reshape(1, 10, 20)
    valid = torch.ones_like(metres, dtype=torch.bool)
    assert suspect_depth_scale(metres, valid, 1e-3, 80.0) is None
    message = suspect_depth_scale(metres / 256, valid, 1e-3, 80.0)  # metres read with depth_scale 1/256
    assert message is not None and "x 256 -> 15.93 m" in message
    message = suspect_depth_scale(metres * 1000, valid, 1e-3, 80.0)  # millimetres read as metres
    assert message is not None and "x 0.001 -> 15.93 m" in message and "x 256 " not in message
    assert suspect_depth_scale(metres * 0, valid, 1e-3, 80.0) is None  # nothing valid: nothing to say


def test_evaluation_warns_once_per_stage_about_a_suspect_scale(caplog):
    import logging

    from depthadapt.models.card import DepthModelCard
    from lightning_modules import SupervisedDepth

    task = SupervisedDepth(DepthModelCard("vitt", input_size=28))
    batch = synthetic_batch()
    batch["depth"] = batch["depth"] / 256
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            task.evaluate(task.test_metrics, torch.rand(2, 28, 56), batch)
    assert caplog.text.count("x 256 -> ") == 1 and "first batch: img0" in caplog.text


def test_comparison_table_lines_up_and_takes_an_empty_row_set() -> None:
    from depthadapt.metrics import format_comparison_table

    rows = {"source": {"d1": 0.5, "abs_rel": 0.25}, "adapted model": {"d1": 0.75, "abs_rel": 0.125}}
    text = format_comparison_table(rows, ("d1", "abs_rel"), "title")
    lines = text.splitlines()
    assert lines[0] == "title" and lines[2].startswith("source ") and "0.7500" in lines[3]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    assert format_comparison_table({}, ("d1",)).split() == ["d1"]
