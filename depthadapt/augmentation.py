"""Photometric augmentation (kornia) and image corruptions for teacher / student views of the same geometry."""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from depthadapt.corruptions import check_corruption, corrupt


def check_corruption_draw(
    corruptions: Sequence[str], p: float, max_severity: int, names: tuple[str, str] = ("corruption_p", "corruptions"),
) -> None:
    """Fail on a probability outside [0, 1], p > 0 without corruptions, or an unknown corruption or severity;
    ``names``: the arguments' names in the messages (probability, list)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{names[0]} must be a probability in [0, 1], got {p}")
    if p > 0 and not corruptions:
        raise ValueError(f"{names[0]} > 0 needs {names[1]}: list the corruptions to draw from")
    for name in corruptions:
        check_corruption(name, max_severity)


def random_corruption(
    images: torch.Tensor, corruptions: Sequence[str], p: float, max_severity: int,
    draws: torch.Tensor, seeds: torch.Tensor,
) -> torch.Tensor:
    """With chance ``p`` per image, one of ``corruptions`` at severity 1..``max_severity``: B x 3 x H x W in [0, 1]
    -> same shape. ``draws`` (B x 3 uniform in [0, 1): apply?, which, severity) and ``seeds`` (B,) int64, the
    corruption's own seeds, make it deterministic; images drawn out pass unchanged."""
    out = images.clone()
    chosen = draws[:, 0] < p
    which = (draws[:, 1] * len(corruptions)).long().clamp_max(max(len(corruptions) - 1, 0))
    severity = 1 + (draws[:, 2] * max_severity).long().clamp_max(max_severity - 1)
    for k, name in enumerate(corruptions):
        for level in range(1, max_severity + 1):
            rows = (chosen & (which == k) & (severity == level)).nonzero().flatten().tolist()
            if rows:
                out[rows] = corrupt(images[rows], name, level, seed=seeds[rows])
    return out


class PhotometricAugmentation(nn.Module):
    """Colour jitter, grayscale, Gaussian blur and noise, then (with chance ``corruption_p``) one of
    ``corruptions`` (``depthadapt.corruptions`` names, e.g. fog, snow, motion blur) at severity
    1..``corruption_max_severity``, per image: B x 3 x H x W in [0, 1] -> same shape.

    Nothing geometric, so a weak and a strong view of one image stay pixel-aligned (flips are applied to
    the sample before both views). A probability of 0 switches a step off; all steps off is the identity.
    Every draw comes from the global torch generator (kornia's, and the corruptions' seeds).
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
        corruptions: tuple[str, ...] = (),
        corruption_p: float = 0.0,
        corruption_max_severity: int = 3,
    ) -> None:
        super().__init__()
        check_corruption_draw(corruptions, corruption_p, corruption_max_severity)
        self.corruptions, self.corruption_p = tuple(corruptions), corruption_p
        self.corruption_max_severity = corruption_max_severity
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
        if len(self.steps) == 0 and self.corruption_p == 0:
            return images
        out = self.steps(images).clamp(0.0, 1.0) if len(self.steps) else images
        if self.corruption_p > 0:
            draws = torch.rand(len(images), 3)
            seeds = torch.randint(2**62, (len(images),))
            out = random_corruption(out, self.corruptions, self.corruption_p, self.corruption_max_severity,
                                    draws, seeds)
        return out


WEAK_AUGMENTATION: dict[str, float] = dict(brightness=0.1, contrast=0.1, saturation=0.1, jitter_p=0.5)
"""The teacher's view: mild colour jitter (arguments of PhotometricAugmentation)."""

STRONG_AUGMENTATION: dict[str, float] = dict(
    brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, jitter_p=0.8,
    grayscale_p=0.2, blur_p=0.5, noise_std=0.03, noise_p=0.5,
)
"""The student's view (FixMatch-style): strong colour jitter, grayscale, blur and sensor noise."""
