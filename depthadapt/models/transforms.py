"""The official Depth Anything V2 input preprocessing and full-resolution inference."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthadapt.models.dinov2 import PATCH_SIZE, PRETRAIN_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images reach the network (what every export records): the shorter network side ``input_size`` in pixels
    and the ``mean`` / ``std`` that normalise RGB in [0, 1]; the defaults are the official 518 / ImageNet."""

    input_size: int = PRETRAIN_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def describe(self) -> dict[str, int | list[float]]:
        """The JSON-ready record: {input_size, mean, std}."""
        return {"input_size": int(self.input_size), "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std]}


OFFICIAL_PREPROCESSING = Preprocessing()
MAX_PIXEL_FACTOR = 16
"""Inputs with more than this many times the pixels of an input_size x input_size square are warned about."""


def network_input_size(height: int, width: int, input_size: int = 518) -> tuple[int, int]:
    """Keep the aspect ratio, both sides >= input_size, each rounded to a multiple of 14 (official rule)."""
    scale = max(input_size / height, input_size / width)

    def to_multiple(x: float) -> int:
        y = int(np.round(x / PATCH_SIZE) * PATCH_SIZE)
        return y if y >= input_size else int(math.ceil(x / PATCH_SIZE) * PATCH_SIZE)

    size = to_multiple(scale * height), to_multiple(scale * width)
    if size[0] * size[1] > MAX_PIXEL_FACTOR * input_size**2:
        warnings.warn(
            f"a {height} x {width} image becomes a {size[0]} x {size[1]} network input at input_size {input_size} "
            f"(aspect ratio {max(height, width) / min(height, width):.1f}: > {MAX_PIXEL_FACTOR}x the pixels of a "
            "square input, slow and memory-hungry): crop or tile such images, or lower input_size",
            stacklevel=2,
        )
    return size


def preprocess(
    image: np.ndarray | torch.Tensor,
    input_size: int = 518,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize and normalise an image for the network (``mean`` / ``std``: ImageNet's, as Depth Anything V2).

    `image`: an H x W x 3 uint8 RGB array (resized with OpenCV bicubic in float64, exactly as the
    official code) or a float tensor in [0, 1], 3 x H x W or B x 3 x H x W (resized with torch bicubic,
    on the tensor's device). Returns B x 3 x H' x W' float32, H' and W' multiples of 14.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {image.shape} {image.dtype}")
        height, width = network_input_size(*image.shape[:2], input_size)
        resized = cv2.resize(image / 255.0, (width, height), interpolation=cv2.INTER_CUBIC)
        normalised = (resized - np.array(mean)) / np.array(std)
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)).astype(np.float32))[None]
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float tensor 3 x H x W or B x 3 x H x W, got {tuple(image.shape)}")
    height, width = network_input_size(*image.shape[-2:], input_size)
    resized = F.interpolate(image.float(), (height, width), mode="bicubic", align_corners=False)
    return (resized - resized.new_tensor(mean).view(1, 3, 1, 1)) / resized.new_tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def infer(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    input_size: int = 518,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    flip_tta: bool = False,
) -> torch.Tensor:
    """Run `model` on an image at network resolution and upsample back (bilinear, align_corners=True).

    `image`, `mean`, `std` as for `preprocess`. Returns H x W for an array or a 3 x H x W tensor, B x H x W for a batch,
    on the model's device. ``flip_tta``: the mean with the flipped-back prediction of the mirrored input.
    """
    height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.shape[-2:]
    device = next(model.parameters()).device
    batch = preprocess(image, input_size, mean, std).to(device)
    out = model(batch)
    if flip_tta:
        out = 0.5 * (out + model(batch.flip(-1)).flip(-1))
    out = F.interpolate(out[:, None].float(), (height, width), mode="bilinear", align_corners=True)[:, 0]
    single = isinstance(image, np.ndarray) or image.ndim == 3
    return out[0] if single else out
