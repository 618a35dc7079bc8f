"""KITTI-C / RoboDepth image corruptions (18 types x 5 severities), batched in torch on any device.

Parameters per severity follow the public sources, read and re-implemented here (no code copied):

- ImageNet-C, Hendrycks & Dietterich, ICLR 2019: ``hendrycks/robustness``,
  ``ImageNet-C/create_c/make_imagenet_c.py``.
- Its size-agnostic port, ``bethgelab/imagecorruptions``, ``imagecorruptions/corruptions.py``, which is what
  RoboDepth (``ldkong1205/RoboDepth``, ``corruptions/create.py``) calls for 15 of the 18 types; where the two
  differ for non-224 images (motion blur, zoom crop, elastic transform, pixelate) we follow imagecorruptions.
- RoboDepth's own ``dark``, ``color_quant`` and ``iso_noise`` (``corruptions/utils.py``).

Randomness is drawn per image from a CPU ``torch.Generator`` seeded by a stable hash of (image seed, corruption,
severity), so an image's corruption does not depend on the batch it is in nor on the device.

Where this differs from the references: ``frost`` blends a procedurally generated frost layer (ice needles over
patchy rime, see ``fields.frost_layer``) because ImageNet-C's frost photographs are not shipped here; ``glass_blur``
scrambles pixels with one vectorised gather per iteration instead of sequential swaps; outputs stay float
(the references round to 8 bits, except where the operation itself is 8-bit: JPEG, colour quantisation).
The deterministic types (brightness, contrast, defocus and zoom blur, colour quantisation, JPEG) match the
references to 1e-5 and pixelate to 1 / 255 (PIL's 8-bit box filter).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from depthadapt.corruptions import fields

__all__ = ["CORRUPTIONS", "NYU_CORRUPTIONS", "SEVERITIES", "check_corruption", "corrupt"]

CORRUPTIONS: tuple[str, ...] = (
    "brightness", "dark", "fog", "frost", "snow", "contrast",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform", "color_quant",
    "gaussian_noise", "impulse_noise", "shot_noise", "iso_noise", "pixelate", "jpeg_compression",
)  # fmt: skip
NYU_CORRUPTIONS: tuple[str, ...] = tuple(c for c in CORRUPTIONS if c not in ("fog", "frost", "snow"))
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Per-severity parameter tables (index = severity - 1).
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
_DARK = (0.60, 0.50, 0.40, 0.30, 0.20)  # RoboDepth low_light: output range [0, c] after gamma 2
_DARK_PHOTONS = (600, 250, 120, 50, 30)  # RoboDepth: 10 x shot-noise table
_DARK_READ = (0.008, 0.012, 0.018, 0.026, 0.038)  # RoboDepth: 0.1 x Gaussian-noise table
_FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog strength, fractal wibble decay)
_FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
# (noise mean, noise std, zoom, threshold, blur radius, blur sigma, image blend)
_SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, anti-alias sigma)
_GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max shift, iterations)
_MOTION = ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0))  # (radius, sigma)
# numpy's arange(1, 1.11, .01), arange(1, 1.16, .01), ... yield these (step, count) zoom factors
_ZOOM = ((0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11))
_ELASTIC = (12.5, 16.25, 21.25, 25.0, 30.0)  # imagecorruptions: alpha = 250 x (.05, .065, .085, .1, .12)
_COLOR_BITS = (5, 4, 3, 2, 1)
_GAUSSIAN = (0.08, 0.12, 0.18, 0.26, 0.38)
_IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)
_SHOT = (60, 25, 12, 5, 3)
_ISO_PHOTONS = 25
_ISO_READ = tuple(0.7 * s for s in _GAUSSIAN)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG = (25, 18, 15, 10, 7)



def _brightness(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Add to the HSV value channel (ImageNet-C brightness)."""
    # With hue and saturation fixed every channel is proportional to the value V = max(r, g, b), so this is the
    # rgb -> hsv -> rgb round trip (kornia.color) in closed form, ~50x faster; black pixels become gray.
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + _BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(value > 0, x * (new_value / value.clamp(min=1e-12)), new_value)


def _dark(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """RoboDepth low light: stretch to [0, 1], gamma 2, scale to [0, c], then Poisson + Gaussian sensor noise."""
    lo, hi = fields.per_image(x, torch.amin), fields.per_image(x, torch.amax)
    x = ((x - lo) / (hi - lo).clamp(min=1e-6)) ** 2 * _DARK[severity - 1]
    photons = _DARK_PHOTONS[severity - 1]
    x = (fields.poisson(x * photons, gens) / photons).clamp(0, 1)
    return x + _DARK_READ[severity - 1] * fields.draw(gens, x, lambda g: torch.randn(x.shape[1:], generator=g))


def _fog(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Add a plasma-fractal haze and renormalise by the image maximum (ImageNet-C fog)."""
    strength, decay = _FOG[severity - 1]
    h, w = x.shape[-2:]
    size = 1 << (max(h, w) - 1).bit_length()
    haze = fields.plasma_fractal(gens, x, size, decay)[:, None, :h, :w]
    peak = fields.per_image(x, torch.amax)
    return (x + strength * haze) * peak / (peak + strength)


def _frost(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Blend with a frost layer (ImageNet-C weights; procedural frost, ``fields.frost_layer``)."""
    image_weight, frost_weight = _FROST[severity - 1]
    return image_weight * x + frost_weight * fields.frost_layer(gens, x, *x.shape[-2:])


def _snow(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Zoomed, thresholded, motion-blurred Gaussian flakes over a whitened image (ImageNet-C snow)."""
    mean, std, zoom, threshold, radius, sigma, blend = _SNOW[severity - 1]
    h, w = x.shape[-2:]
    # The flakes are the centre crop of an H x W noise field zoomed in: drawing just the crop is equivalent.
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    flakes = mean + std * fields.draw(gens, x, lambda g: torch.randn(1, ch, cw, generator=g))
    angle = fields.draw(gens, x, lambda g: torch.rand((), generator=g)) * 90 - 135
    flakes = F.interpolate(flakes, size=(round(ch * zoom), round(cw * zoom)), mode="bilinear", align_corners=True)
    flakes = flakes[..., :h, :w]
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp(0, 1)
    flakes = torch.round(fields.trail_blur(flakes, radius, sigma, angle) * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, fields.gray(x) * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)


def _contrast(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Shrink towards the per-channel image mean (ImageNet-C contrast)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * _CONTRAST[severity - 1] + mean


def _defocus_blur(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Convolve with an anti-aliased disk (ImageNet-C defocus blur)."""
    radius, alias_sigma = _DEFOCUS[severity - 1]
    extent = max(radius, 8)
    r = torch.arange(-extent, extent + 1, device=x.device, dtype=x.dtype)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).to(x.dtype)
    disk = disk / disk.sum()
    alias = 3 if radius <= 8 else 5
    disk = kornia.filters.gaussian_blur2d(disk[None, None], alias, (alias_sigma, alias_sigma), border_type="reflect")
    return kornia.filters.filter2d(x, disk[0], border_type="reflect")


def _glass_blur(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Gaussian blur, local pixel scrambling, Gaussian blur again (ImageNet-C glass blur, scrambling vectorised).

    ImageNet-C swaps pixels one by one in a raster scan; here every interior pixel reads from a random offset in
    [-d, d) per iteration at once (a gather, so a pixel may be duplicated rather than swapped).
    """
    sigma, shift, iterations = _GLASS[severity - 1]
    b, c, h, w = x.shape
    x = fields.skimage_gaussian(x, (sigma, sigma), 4.0, "replicate")
    offsets = fields.draw(gens, x, lambda g: torch.randint(-shift, shift, (iterations, 2, h, w), generator=g)).long()
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)[None, :]
    interior = (rows > shift) & (rows <= h - shift) & (cols > shift) & (cols <= w - shift)
    for i in range(iterations):
        dy, dx = (offsets[:, i] * interior).unbind(1)
        index = ((rows + dy) * w + cols + dx).flatten(1)[:, None, :].expand(b, c, -1)
        x = x.flatten(2).gather(2, index).view(b, c, h, w)
    return fields.skimage_gaussian(x, (sigma, sigma), 4.0, "replicate")


def _motion_blur(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Gaussian-weighted trail at a random angle in [-45, 45) degrees (ImageNet-C motion blur)."""
    radius, sigma = _MOTION[severity - 1]
    angle = fields.draw(gens, x, lambda g: torch.rand((), generator=g)) * 90 - 45
    return fields.trail_blur(x, radius, sigma, angle)


def _zoom_blur(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Average of the image and centre zooms by factors 1, 1 + s, 1 + 2 s, ... (ImageNet-C zoom blur)."""
    step, count = _ZOOM[severity - 1]
    step = (1 + step) - 1  # numpy.arange's rounded step: the factors, and the zoomed sizes, match it exactly
    out = x.clone()
    for i in range(count):
        out += fields.clipped_zoom(x, 1 + i * step)
    return out / (count + 1)


def _elastic_transform(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Warp by a smoothed uniform displacement field (imagecorruptions' size-relative elastic transform).

    Not kornia's elastic_transform2d: it smooths the field with zero padding, damping displacements at borders;
    skimage (the reference) reflects.
    """
    b, c, h, w = x.shape
    max_shift = 0.005 * h  # pixels, for both axes, as the reference
    noise = fields.draw(gens, x, lambda g: torch.rand(2, h, w, generator=g)) * (2 * max_shift) - max_shift
    disp = fields.skimage_gaussian(noise, (0.01 * h, 0.01 * w), 3.0, "reflect") * _ELASTIC[severity - 1]
    ys = torch.arange(h, device=x.device, dtype=x.dtype)[:, None] + disp[:, 0]
    xs = torch.arange(w, device=x.device, dtype=x.dtype)[None, :] + disp[:, 1]
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1)
    # grid_sample "reflection" with align_corners=False is scipy.ndimage's mode="reflect" (half-sample symmetric).
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _color_quant(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Keep the top bits of each 8-bit channel (RoboDepth: PIL posterize to 6 - severity bits)."""
    # Not kornia.enhance.posterize: it truncates x * 255, which turns k / 255 into k - 1 for many k in float32.
    mask = (0xFF << (8 - _COLOR_BITS[severity - 1])) & 0xFF
    return (torch.round(x * 255).to(torch.uint8) & mask).to(x.dtype) / 255


def _gaussian_noise(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Additive white Gaussian noise (ImageNet-C)."""
    return x + _GAUSSIAN[severity - 1] * fields.draw(gens, x, lambda g: torch.randn(x.shape[1:], generator=g))


def _impulse_noise(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Salt and pepper on a fraction of the values, half each (ImageNet-C, skimage random_noise s&p)."""
    amount = _IMPULSE[severity - 1]
    u = fields.draw(gens, x, lambda g: torch.rand(x.shape[1:], generator=g))
    return torch.where(u < amount / 2, 0.0, torch.where(u < amount, 1.0, x))


def _shot_noise(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Poisson photon noise with c photons at full scale (ImageNet-C)."""
    photons = _SHOT[severity - 1]
    return fields.poisson(x * photons, gens) / photons


def _iso_noise(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """RoboDepth ISO noise: signal-dependent Poisson noise (25 photons at full scale) plus Gaussian read noise."""
    x = (fields.poisson(x * _ISO_PHOTONS, gens) / _ISO_PHOTONS).clamp(0, 1)
    return x + _ISO_READ[severity - 1] * fields.draw(gens, x, lambda g: torch.randn(x.shape[1:], generator=g))


def _box_downsample(x: Tensor, size: int, dim: int) -> Tensor:
    """Shrink `dim` of `x` to `size` with PIL's BOX filter: each output averages the inputs centred in its box."""
    n = x.shape[dim]
    scale = n / size
    # PIL's support window per output pixel (whole input pixels, unlike torch's "area" for non-integer ratios)
    centres = [(i + 0.5) * scale for i in range(size)]
    lo = torch.tensor([max(int(c - scale / 2 + 0.5), 0) for c in centres], device=x.device)
    hi = torch.tensor([min(int(c + scale / 2 + 0.5), n) for c in centres], device=x.device)
    sums = F.pad(x.cumsum(dim), (0, 0) * (x.ndim - 1 - dim) + (1, 0))
    count_shape = [1] * x.ndim
    count_shape[dim] = size
    counts = (hi - lo).to(x.dtype).view(count_shape)
    return (sums.index_select(dim, hi) - sums.index_select(dim, lo)) / counts


def _nearest_resize(x: Tensor, size: int, dim: int) -> Tensor:
    """Resize `dim` of `x` to `size` with PIL's NEAREST: source index int(s / 2 + s + ... + s), s = n / size."""
    n = x.shape[dim]
    # PIL accumulates the position in float64, which rounds ties the other way than (i + 0.5) * s does
    positions = itertools.accumulate([n / size / 2] + [n / size] * (size - 1))
    return x.index_select(dim, torch.tensor([min(int(p), n - 1) for p in positions], device=x.device))


def _pixelate(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Box-downsample by c and nearest-upsample back (imagecorruptions pixelate: PIL BOX, then NEAREST)."""
    h, w = x.shape[-2:]
    scale = _PIXELATE[severity - 1]
    small = _box_downsample(_box_downsample(x, max(int(h * scale), 1), 2), max(int(w * scale), 1), 3)
    return _nearest_resize(_nearest_resize(small, h, 2), w, 3)


def _jpeg_compression(x: Tensor, severity: int, gens: list[torch.Generator]) -> Tensor:
    """Encode and decode with libjpeg at quality c (ImageNet-C, which uses PIL, i.e. libjpeg, 4:2:0)."""
    # kornia.enhance.jpeg_codec_differentiable runs on the CPU but approximates the rounding (about 0.007 mean
    # absolute difference from libjpeg) and is ~4x slower; libjpeg is the codec the benchmark used.
    pixels = torch.round(x.clamp(0, 1) * 255).to("cpu", torch.uint8)
    decoded = decode_jpeg(encode_jpeg(list(pixels), quality=_JPEG[severity - 1]))
    return torch.stack(decoded).to(x.device, x.dtype) / 255


_CORRUPT_FNS: dict[str, Callable[[Tensor, int, list[torch.Generator]], Tensor]] = {
    "brightness": _brightness, "dark": _dark, "fog": _fog, "frost": _frost, "snow": _snow, "contrast": _contrast,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "elastic_transform": _elastic_transform, "color_quant": _color_quant, "gaussian_noise": _gaussian_noise,
    "impulse_noise": _impulse_noise, "shot_noise": _shot_noise, "iso_noise": _iso_noise, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}  # fmt: skip


def check_corruption(corruption: str, severity: int) -> None:
    """Raise ValueError naming the valid values if `corruption` or `severity` is not one of them."""
    if corruption not in _CORRUPT_FNS:
        raise ValueError(f"unknown corruption {corruption!r}; valid corruptions: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}")


def corrupt(images: Tensor, corruption: str, severity: int, seed: int | Tensor = 0) -> Tensor:
    """Corrupt B x 3 x H x W images in [0, 1] with one of CORRUPTIONS at severity 1..5; same shape, device, dtype.

    `seed` is an int (image i gets seed + i, like dataset indices) or a (B,) integer tensor of per-image seeds;
    an image's result depends only on its pixels, its seed, the corruption and the severity.
    """
    check_corruption(corruption, severity)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
    batch = images.shape[0]
    if isinstance(seed, Tensor):
        if seed.shape != (batch,) or seed.is_floating_point() or seed.is_complex():
            raise ValueError(
                f"seed must be an int or an integer tensor of shape ({batch},), got {seed.dtype} {list(seed.shape)}"
            )
        seeds = seed.detach().cpu()
    else:
        seeds = torch.arange(batch) + int(seed)
    if batch == 0:
        return images.clone()
    work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = images.to(work_dtype)
    out = _CORRUPT_FNS[corruption](x, severity, fields.generators(seeds, corruption, severity))
    return out.clamp(0, 1).to(images.dtype)
