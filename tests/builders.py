"""Builders of test data (images, depth, batches) and comparison helpers shared by the tests: plain functions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from depthadapt.io import write_depth_npy
from depthadapt.synth import render_sample
from depthadapt.westar import pad_pairs, simulate_ordinal_pairs

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, count: int = 4, size: tuple[int, int] = (48, 64)) -> tuple[Path, Path]:
    """Images whose brightness falls with depth (a ground plane receding upwards), plus depth .npy files."""
    images, depths = root / "images", root / "depth"
    height, width = size
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None].repeat(width, 1)
    for i in range(count):
        depth = 2.0 + 18.0 * (1.0 - rows) ** 2 * (1 + 0.1 * i)
        depth[: height // 6] = 0.0  # sky: invalid
        image = np.clip(255 * (1.0 - depth / 25.0), 0, 255).astype(np.uint8)
        name = f"seq{i % 2}/frame_{i:03d}"
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / f"{name}.png"), np.stack([image, image // 2, 255 - image], -1))
        write_depth_npy(depths / f"{name}.npy", depth)
    return images, depths


def write_street_images(folder: Path, count: int, height: int = 28, width: int = 84,
                        depth_dir: Path | None = None) -> list[str]:
    """Render synthetic target-domain street images into ``folder`` (and their depth as .npy) -> their names."""
    names = []
    for index in range(count):
        sample = render_sample("street", "target", 0, index, height, width)
        image = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        name = f"{index:03d}.png"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), image[..., ::-1])
        if depth_dir is not None:
            write_depth_npy(depth_dir / f"{index:03d}.npy", sample["depth"])
        names.append(name)
    return names


def synthetic_batch(batch: int = 2, height: int = 28, width: int = 56) -> dict:
    """A batch with a depth ramp, two instances, indices and exact ordinal pairs, as the synthetic datamodule
    yields it."""
    rows = torch.linspace(1, 0, height)[:, None].expand(height, width)
    depth = (2.0 + 30.0 * rows**2).expand(batch, height, width).clone()
    instances = torch.zeros(batch, height, width, dtype=torch.long)
    instances[:, height // 2 :, : width // 2] = 1
    instances[:, height // 2 :, width // 2 :] = 2
    image = torch.rand(batch, 3, height, width)
    ordinal = pad_pairs([simulate_ordinal_pairs(d, d > 0, generator=torch.Generator().manual_seed(i))
                         for i, d in enumerate(depth)], 15)
    return {"image": image, "depth": depth, "valid": depth > 0, "instances": instances, "ordinal": ordinal,
            "index": torch.arange(batch), "name": [f"img{i}" for i in range(batch)], "skipped": []}


def randomise_lora_b(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Draw every LoRA B of ``model`` from N(0, std) (peft starts it at 0: no adaptation); returns ``model``."""
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=std)
    return model


def write_flat_images(folder: Path, count: int, height: int, width: int, step: int) -> None:
    """``count`` uniform grey PNGs ``0.png``, ``1.png``, ... of height x width into ``folder``, image i of value
    ``step * i``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((height, width, 3), step * i, np.uint8))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| of two tensors of the same shape."""
    assert got.shape == expected.shape
    return ((got - expected).abs().max() / expected.abs().max()).item()
