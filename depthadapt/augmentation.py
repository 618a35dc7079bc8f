"""Photometric augmentation (kornia) for teacher / student views of the same geometry."""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class PhotometricAugmentation(nn.Module):
    """Colour jitter, grayscale, Gaussian blur and noise, per image: B x 3 x H x W in [0, 1] -> same shape.

    Nothing geometric, so a weak and a strong view of one image stay pixel-aligned (flips are applied to
    the sample before both views). A probability of 0 switches a step off; all steps off is the identity.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        jitter_p: float = 0.0,
        grayscale_p: float = 0.0,
        blur_p: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        noise_std: float = 0.0,
        noise_p: float = 0.0,
    ) -> None:
        super().__init__()
        for name, p in (("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("blur_p", blur_p), ("noise_p", noise_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        steps: list[nn.Module] = []
        if jitter_p > 0:
            steps.append(K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p))
        if grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=grayscale_p))
        if blur_p > 0:
            steps.append(K.RandomGaussianBlur((5, 5), tuple(blur_sigma), p=blur_p))
        if noise_std > 0 and noise_p > 0:
            steps.append(K.RandomGaussianNoise(std=noise_std, p=noise_p))
        self.steps = nn.Sequential(*steps)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment B x 3 x H x W images in [0, 1]; the result is clamped to [0, 1]."""
        if len(self.steps) == 0:
            return images
        return self.steps(images).clamp(0.0, 1.0)


WEAK_AUGMENTATION: dict[str, float] = dict(brightness=0.1, contrast=0.1, saturation=0.1, jitter_p=0.5)
"""The teacher's view: mild colour jitter (arguments of PhotometricAugmentation)."""

STRONG_AUGMENTATION: dict[str, float] = dict(
    brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
    grayscale_p=0.2, blur_p=0.5, noise_std=0.03, noise_p=0.5,
)
"""The student's view (FixMatch-style): strong colour jitter, grayscale, blur and sensor noise."""
