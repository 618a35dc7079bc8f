"""KITTI-C / RoboDepth corruptions: contract, parameters, determinism, and the Corrupted dataset."""

from __future__ import annotations

from typing import Any

import kornia
import pytest
import torch
from torch.utils.data import Dataset

from datamodules.corrupted import Corrupted
from depthadapt.corruptions import CORRUPTIONS, NYU_CORRUPTIONS, SEVERITIES, corrupt

pytestmark = pytest.mark.unit

RANDOM = ("dark", "fog", "frost", "snow", "glass_blur", "motion_blur", "elastic_transform", "gaussian_noise",
          "impulse_noise", "shot_noise", "iso_noise")  # fmt: skip
DETERMINISTIC = tuple(c for c in CORRUPTIONS if c not in RANDOM)
MONOTONIC = ("brightness", "dark", "contrast", "defocus_blur", "motion_blur", "zoom_blur", "color_quant",
             "gaussian_noise", "impulse_noise", "shot_noise", "iso_noise")  # fmt: skip


def _images(batch: int = 2, height: int = 56, width: int = 84) -> torch.Tensor:
    """B x 3 x H x W test images in [0.05, 0.95]: smooth blobs, edges and fine texture."""
    g = torch.Generator().manual_seed(1234)
    blobs = torch.nn.functional.interpolate(torch.rand(batch, 3, 7, 10, generator=g), size=(height, width),
                                            mode="bicubic", align_corners=False)  # fmt: skip
    edges = (torch.arange(width) > width // 2).float().view(1, 1, 1, width)
    texture = torch.rand(batch, 3, height, width, generator=g)
    return (0.5 * blobs + 0.25 * edges + 0.2 * texture).clamp(0.05, 0.95)


def _change(clean: torch.Tensor, corrupted: torch.Tensor) -> float:
    return (corrupted - clean).abs().mean().item()


def test_names() -> None:
    assert len(CORRUPTIONS) == 18 and len(set(CORRUPTIONS)) == 18
    assert CORRUPTIONS[:3] == ("brightness", "dark", "fog") and CORRUPTIONS[-1] == "jpeg_compression"
    assert NYU_CORRUPTIONS == tuple(c for c in CORRUPTIONS if c not in ("fog", "frost", "snow"))
    assert len(NYU_CORRUPTIONS) == 15 and SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_severity_keeps_contract_and_changes_image(corruption: str) -> None:
    x = _images()
    for severity in SEVERITIES:
        y = corrupt(x, corruption, severity, seed=3)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        assert _change(x, y) > 2e-3, f"{corruption} severity {severity} barely changes the image"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("corruption", ["fog", "motion_blur", "jpeg_compression"])
def test_keeps_dtype(corruption: str, dtype: torch.dtype) -> None:
    x = _images().to(dtype)
    y = corrupt(x, corruption, 2)
    assert y.dtype == dtype and y.shape == x.shape and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("corruption", MONOTONIC)
def test_change_grows_with_severity(corruption: str) -> None:
    x = _images()
    changes = [_change(x, corrupt(x, corruption, s, seed=0)) for s in SEVERITIES]
    assert all(b >= a - 1e-6 for a, b in zip(changes, changes[1:], strict=False)), changes


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_same_seed_same_result(corruption: str) -> None:
    x = _images()
    assert torch.equal(corrupt(x, corruption, 3, seed=5), corrupt(x, corruption, 3, seed=5))


@pytest.mark.parametrize("corruption", RANDOM)
def test_different_seed_different_result(corruption: str) -> None:
    x = _images()
    assert not torch.allclose(corrupt(x, corruption, 3, seed=5), corrupt(x, corruption, 3, seed=6))


@pytest.mark.parametrize("corruption", DETERMINISTIC)
def test_deterministic_types_ignore_seed(corruption: str) -> None:
    x = _images()
    assert torch.equal(corrupt(x, corruption, 3, seed=5), corrupt(x, corruption, 3, seed=6))


def test_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    corrupt(_images(), "snow", 4, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_per_image_seeds_independent_of_batch(corruption: str) -> None:
    x = _images(batch=3)
    seeds = torch.tensor([7, 3, 11])
    batched = corrupt(x, corruption, 4, seed=seeds)
    for i in range(3):
        alone = corrupt(x[i : i + 1], corruption, 4, seed=seeds[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=0)
    # an int seed s means per-image seeds s, s + 1, ...
    torch.testing.assert_close(corrupt(x, corruption, 4, seed=3), corrupt(x, corruption, 4, seed=torch.arange(3, 6)))


def test_contrast_closed_form() -> None:
    x = torch.full((1, 3, 4, 6), 0.2)
    x[..., 3:] = 0.6  # per-channel mean 0.4
    y = corrupt(x, "contrast", 1)  # c = 0.4: mean + 0.4 * (x - mean)
    torch.testing.assert_close(y[..., :3], torch.full((1, 3, 4, 3), 0.32))
    torch.testing.assert_close(y[..., 3:], torch.full((1, 3, 4, 3), 0.48))


def test_brightness_closed_form_and_hsv_reference() -> None:
    x = torch.tensor([0.4, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    x[..., 0, 0] = 0.0
    y = corrupt(x, "brightness", 3)  # value 0.4 + 0.3, hue and saturation kept: rgb scales by 0.7 / 0.4
    torch.testing.assert_close(y[0, :, 1, 1], torch.tensor([0.7, 0.35, 0.175]))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.3, 0.3, 0.3]))
    images = _images()
    for severity, shift in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5), strict=True):
        hsv = kornia.color.rgb_to_hsv(images)
        hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + shift).clamp(0, 1)], 1)
        reference = kornia.color.hsv_to_rgb(hsv).clamp(0, 1)
        torch.testing.assert_close(corrupt(images, "brightness", severity), reference, atol=1e-5, rtol=0)


def test_color_quant_keeps_top_bits() -> None:
    x = torch.full((1, 3, 2, 2), 200 / 255)  # 0b11001000
    torch.testing.assert_close(corrupt(x, "color_quant", 3), torch.full_like(x, 192 / 255))  # 3 bits: 0b11000000
    torch.testing.assert_close(corrupt(x, "color_quant", 5), torch.full_like(x, 128 / 255))  # 1 bit


def test_pixelate_averages_blocks() -> None:
    x = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 3, 4, 8).clone()
    y = corrupt(x, "pixelate", 2)  # c = 0.5: mean of 2 x 2 blocks, each repeated over its block
    blocks = x.view(1, 3, 4, 4, 2).mean(-1, keepdim=True).expand(1, 3, 4, 4, 2).reshape(1, 3, 4, 8)
    torch.testing.assert_close(y, blocks)


@pytest.mark.parametrize(("severity", "sigma"), [(1, 0.08), (3, 0.18)])
def test_gaussian_noise_std(severity: int, sigma: float) -> None:
    x = torch.full((2, 3, 64, 96), 0.5)
    noise = corrupt(x, "gaussian_noise", severity) - x  # clamping at 2.8 sigma barely shrinks it
    assert abs(noise.mean().item()) < 0.05 * sigma and abs(noise.std().item() - sigma) < 0.05 * sigma


def test_impulse_noise_fraction() -> None:
    x = torch.full((2, 3, 64, 96), 0.5)
    y = corrupt(x, "impulse_noise", 5)  # 27 % of values become 0 or 1, half each
    assert abs((y == 0).float().mean().item() - 0.135) < 0.01
    assert abs((y == 1).float().mean().item() - 0.135) < 0.01


def test_shot_noise_is_poisson() -> None:
    x = torch.full((2, 3, 64, 96), 0.5)
    counts = corrupt(x, "shot_noise", 1) * 60  # 60 photons at full scale: Poisson(30) / 60
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert abs(counts.mean().item() - 30) < 0.5 and abs(counts.var().item() - 30) < 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"corruption": "rain", "severity": 1}, r"unknown corruption 'rain'; valid corruptions: brightness, dark"),
        ({"corruption": "fog", "severity": 0}, r"severity must be one of 1, 2, 3, 4, 5, got 0"),
        ({"corruption": "fog", "severity": 6}, r"severity must be one of 1, 2, 3, 4, 5, got 6"),
        ({"corruption": "fog", "severity": 2.0}, r"severity must be one of .*, got 2.0"),
        ({"corruption": "fog", "severity": 1, "seed": torch.tensor([1, 2, 3])}, r"seed must be an int or"),
        ({"corruption": "fog", "severity": 1, "seed": torch.tensor([1.0, 2.0])}, r"integer tensor of shape \(2,\)"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        corrupt(_images(), **kwargs)


def test_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"B x 3 x H x W, got shape \(3, 8, 8\)"):
        corrupt(torch.rand(3, 8, 8), "fog", 1)


class _Samples(Dataset):
    """Three image samples with dataset indices 10, 11, 12, then one unreadable sample."""

    def __init__(self) -> None:
        self.images = _images(batch=3, height=28, width=42)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == 3:
            return {"name": "bad.png", "index": 13, "error": "cannot read"}
        return {"name": f"{i}.png", "index": 10 + i, "image": self.images[i], "depth": torch.ones(28, 42)}


def test_corrupted_dataset_enumerates_every_combination() -> None:
    base = _Samples()
    dataset = Corrupted(base, ["gaussian_noise", "fog"], [1, 5])
    assert len(dataset) == 4 * 2 * 2
    seen = set()
    for k in range(len(dataset)):
        item = dataset[k]
        position, corruption, severity = dataset.condition(k)
        assert position == k % 4 and (corruption, severity) == [
            ("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 1), ("fog", 5)
        ][k // 4]  # fmt: skip
        if position == 3:
            assert item == base[3]  # error samples pass through unchanged
            continue
        seen.add((position, corruption, severity))
        assert item["corruption"] == corruption and item["severity"] == severity
        assert item["name"] == f"{position}.png" and item["index"] == 10 + position
        assert torch.equal(item["depth"], base[position]["depth"])
        seed = torch.tensor([10 + position])
        expected = corrupt(base.images[position : position + 1], corruption, severity, seed=seed)[0]
        torch.testing.assert_close(item["image"], expected)
        assert not torch.equal(item["image"], base.images[position])
    assert len(seen) == 3 * 2 * 2
    torch.testing.assert_close(dataset[-2]["image"], dataset[len(dataset) - 2]["image"])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_corrupted_dataset_seeds_by_position_without_index() -> None:
    class NoIndex(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": _images(batch=2, height=28, width=42)[i]}

    item = Corrupted(NoIndex(), ["shot_noise"], [2])[1]
    expected = corrupt(_images(batch=2, height=28, width=42)[1:], "shot_noise", 2, seed=torch.tensor([1]))
    torch.testing.assert_close(item["image"], expected[0])


@pytest.mark.parametrize(
    ("corruptions", "severities", "match"),
    [
        (["fog", "hail"], [1], r"unknown corruption 'hail'"),
        (["fog"], [1, 7], r"severity must be one of 1, 2, 3, 4, 5, got 7"),
        ([], [1], r"must be non-empty"),
        ("fog", [1], r"must be a list of names, got the string 'fog'"),
    ],
)
def test_corrupted_dataset_validates_up_front(corruptions: list[str], severities: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Corrupted(_Samples(), corruptions, severities)


def test_corrupted_batches_keep_their_condition() -> None:
    from torch.utils.data import DataLoader

    from datamodules.base import collate_samples

    base = [{"image": torch.rand(3, 14, 28), "name": f"img{i}", "index": i} for i in range(2)]
    loader = DataLoader(Corrupted(base, ["fog", "pixelate"], [1, 5]), batch_size=8, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 14, 28)
    assert sorted(set(zip(batch["corruption"], batch["severity"], strict=True))) == [
        ("fog", 1), ("fog", 5), ("pixelate", 1), ("pixelate", 5)
    ]
    assert batch["index"].tolist() == [0, 1] * 4
