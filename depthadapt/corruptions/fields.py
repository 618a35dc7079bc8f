"""Random draws and procedural fields the corruptions are built from (``depthadapt.corruptions``).

Per-image CPU generators seeded by a stable hash, Gaussian and trail blurs, clipped zoom, the fractal plasma of
fog, the procedural frost layer. Shapes: images B x C x H x W, generators one per image.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.299, 0.587, 0.114)


def generators(seeds: Tensor, corruption: str, severity: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded from a hash of (seed, corruption, severity) stable across runs."""
    gens = []
    for seed in seeds.tolist():
        digest = hashlib.blake2b(f"{seed}/{corruption}/{severity}".encode(), digest_size=8).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))
    return gens


def draw(gens: list[torch.Generator], like: Tensor, sample: Callable[[torch.Generator], Tensor]) -> Tensor:
    """Stack one CPU draw per image (B x ...) and move it to `like`'s device and dtype."""
    return torch.stack([sample(g) for g in gens]).to(like.device, like.dtype)


def poisson(rates: Tensor, gens: list[torch.Generator]) -> Tensor:
    """Per-image Poisson counts of B x ... `rates`, sampled on the CPU for device-independent results."""
    cpu = rates.detach().to("cpu", torch.float32)
    counts = torch.stack([torch.poisson(r, generator=g) for r, g in zip(cpu, gens, strict=True)])
    return counts.to(rates.device, rates.dtype)


def per_image(x: Tensor, reduce: Callable[..., Tensor]) -> Tensor:
    """A per-image statistic of B x C x H x W `x`, shaped B x 1 x 1 x 1 for broadcasting."""
    return reduce(x.flatten(1), dim=1).view(-1, 1, 1, 1)


def gray(x: Tensor) -> Tensor:
    """B x 1 x H x W luma (ITU-R 601, as OpenCV's RGB2GRAY) of B x 3 x H x W RGB."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def skimage_gaussian(x: Tensor, sigma: tuple[float, float], truncate: float, border: str) -> Tensor:
    """Gaussian blur of B x C x H x W with skimage's kernel extent (radius = int(truncate * sigma + 0.5))."""
    ksize = tuple(2 * int(truncate * s + 0.5) + 1 for s in sigma)
    return kornia.filters.gaussian_blur2d(x, ksize, sigma, border_type=border)


def clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    """Zoom B x C x H x W into its centre by `zoom` >= 1, as scipy.ndimage.zoom(order=1) on the centre crop."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    out = F.interpolate(crop, size=(round(ch * zoom), round(cw * zoom)), mode="bilinear", align_corners=True)
    return out[..., :h, :w]


def trail_blur(x: Tensor, radius: int, sigma: float, angle_deg: Tensor) -> Tensor:
    """ImageNet-C motion blur of B x C x H x W: a one-sided, Gaussian-weighted trail of 2 r + 1 taps per image.

    Tap i reads the image i pixels along the per-image `angle_deg` (B,), rounded to the pixel grid, with edge
    replication; weights exp(-i^2 / 2 sigma^2), normalised. Computed as one FFT correlation per image with its
    sparse trail kernel (2x faster than summing shifted copies on the CPU).
    """
    b, c, h, w = x.shape
    taps = torch.arange(2 * radius + 1, device=x.device, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(x.dtype).expand(b, -1).contiguous()
    theta = torch.deg2rad(angle_deg.to(x.device, torch.float64))[:, None]
    dy = torch.ceil(taps * torch.sin(theta) - 0.5).long()  # B x taps
    dx = torch.ceil(taps * torch.cos(theta) - 0.5).long()
    # replicate padding by the longest trail makes the FFT's circular wrap-around land in the cropped border
    pad = 2 * radius
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    hp, wp = padded.shape[-2:]
    kernel = torch.zeros(b, hp, wp, device=x.device, dtype=x.dtype)
    image_index = torch.arange(b, device=x.device)[:, None].expand_as(dy)
    kernel.index_put_((image_index, dy % hp, dx % wp), weights, accumulate=True)
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(kernel).conj()[:, None]
    return torch.fft.irfft2(spectrum, s=(hp, wp))[..., pad : pad + h, pad : pad + w]


def plasma_fractal(gens: list[torch.Generator], like: Tensor, size: int, decay: float) -> Tensor:
    """B x size x size diamond-square height maps in [0, 1] on a torus (`size` a power of two), as ImageNet-C."""
    steps = []
    step = size
    while step >= 2:
        steps.append(step)
        step //= 2
    counts = [3 * (size // s) ** 2 for s in steps]
    noise = draw(gens, like, lambda g: torch.rand(sum(counts), generator=g) * 2 - 1)
    b = len(gens)
    hmap = torch.zeros(b, size, size, device=like.device, dtype=like.dtype)
    wibble, offset = 100.0, 0
    for step, count in zip(steps, counts, strict=True):
        half, n = step // 2, size // step
        jitter = (wibble**2 * noise[:, offset : offset + count]).view(b, 3, n, n)
        offset += count
        corners = hmap[:, ::step, ::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        hmap[:, half::step, half::step] = square / 4 + jitter[:, 0]
        centres = hmap[:, half::step, half::step]
        hmap[:, ::step, half::step] = (centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)) / 4 + jitter[:, 1]
        hmap[:, half::step, ::step] = (centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)) / 4 + jitter[:, 2]
        wibble /= decay
    hmap = hmap - hmap.amin(dim=(1, 2), keepdim=True)
    return hmap / hmap.amax(dim=(1, 2), keepdim=True)


def line_responses(noise: Tensor, angles: Tensor, sigma_along: float, sigma_across: float) -> Tensor:
    """Ridge-filter B x K x h x w white noise along per-(image, k) `angles` (B x K); unit-variance responses."""
    b, k, h, w = noise.shape
    half = math.ceil(3 * sigma_along)
    r = torch.arange(-half, half + 1, device=noise.device, dtype=noise.dtype)
    cos, sin = angles.cos()[..., None, None], angles.sin()[..., None, None]
    along = r[None, :] * cos + r[:, None] * sin
    across = r[:, None] * cos - r[None, :] * sin
    gaussian = torch.exp(-(along**2) / (2 * sigma_along**2) - across**2 / (2 * sigma_across**2))
    kernel = (1 - across**2 / sigma_across**2) * gaussian  # Gaussian along, Mexican hat across
    kernel = kernel - kernel.mean(dim=(-2, -1), keepdim=True)
    kernel = kernel / kernel.square().sum(dim=(-2, -1), keepdim=True).sqrt()
    out = kornia.filters.filter2d(noise.reshape(b * k, 1, h, w), kernel.reshape(b * k, 2 * half + 1, 2 * half + 1))
    return out.view(b, k, h, w)


def frost_layer(gens: list[torch.Generator], like: Tensor, h: int, w: int) -> Tensor:
    """B x 3 x H x W procedural frost in [0, 1], bluish white: hexagonal ice needles over patchy rime.

    Needles: white noise ridge-filtered along a random base angle and +-60 degrees (ice's hexagonal symmetry) at
    two scales (1/2 and 1/4 resolution), thresholded to sparse streaks. Rime: smooth noise at 1/8 resolution; it
    whitens the image and makes needles denser where it is thick.
    """
    b = len(gens)
    sizes = [((h + s - 1) // s, (w + s - 1) // s) for s in (2, 4, 8)]
    fine = draw(gens, like, lambda g: torch.randn(3, *sizes[0], generator=g))
    coarse = draw(gens, like, lambda g: torch.randn(3, *sizes[1], generator=g))
    rime = draw(gens, like, lambda g: torch.randn(1, *sizes[2], generator=g))
    base = draw(gens, like, lambda g: torch.rand(2, generator=g)) * math.pi
    hexagonal = torch.tensor([0.0, math.pi / 3, 2 * math.pi / 3], device=like.device, dtype=like.dtype)
    needles = torch.zeros(b, 1, h, w, device=like.device, dtype=like.dtype)
    for scale, (noise, width) in enumerate(((fine, 0.8), (coarse, 1.1))):
        lines = line_responses(noise, base[:, scale : scale + 1] + hexagonal, 3.0, width)
        # threshold after upsampling: thresholding first leaves blocky, dotted streaks
        lines = F.interpolate(lines, size=(h, w), mode="bilinear", align_corners=False)
        needles = needles + (lines - 1.0).clamp(min=0).sum(1, keepdim=True)
    rime = kornia.filters.gaussian_blur2d(rime, (13, 13), (3.0, 3.0), border_type="reflect")
    rime = rime - rime.amin(dim=(-2, -1), keepdim=True)
    rime = rime / rime.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    rime = F.interpolate(rime, size=(h, w), mode="bilinear", align_corners=False)
    frost = (0.3 + 0.35 * rime + 0.35 * needles * (0.4 + rime)).clamp(0, 1)
    tint = torch.tensor([0.86, 0.93, 1.0], device=like.device, dtype=like.dtype).view(1, 3, 1, 1)
    return frost * tint


# ----------------------------------------------------------------------------------------------------------------
# The corruptions: B x 3 x H x W float in [0, 1] -> same, unclamped (corrupt() clamps).
