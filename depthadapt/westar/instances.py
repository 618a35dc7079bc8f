"""Instance maps for SA-HDN's contexts: SAM2 automatic masks, superpixels, the on-disk instance-map cache.

An instance map is H x W integers: 0 background, 1..N one id per instance. SAM2 is expensive, so its masks
are computed once per image (``python cli.py predict --config config_yaml/sam2_masks.yaml``) and cached as
16-bit PNGs, one per image, at ``mask_cache_path(cache_dir, name)``. Framework-free: no Lightning imports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from depthadapt.io import IMAGE_SUFFIXES, decode_image_file, write_image_file

if TYPE_CHECKING:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

__all__ = [
    "DEFAULT_SAM2_CONFIG",
    "SAM2_CHECKPOINT_URL",
    "MissingMaskError",
    "build_sam2_mask_generator",
    "mask_cache_path",
    "masks_to_instance_map",
    "read_instance_map",
    "superpixel_instances",
    "write_instance_map",
]

DEFAULT_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
"""SAM 2.1 Hiera-T, the smallest model; the WeSTAR paper does not name the size it used."""

SAM2_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
"""The official SAM 2.1 Hiera-T checkpoint (SAM2 README; other sizes: ``..._small.pt``, ``..._base_plus.pt``,
``..._large.pt`` with the matching ``configs/sam2.1/sam2.1_hiera_{s,b+,l}.yaml``)."""

MAX_INSTANCES = 65535
"""Largest id a 16-bit PNG instance map can hold."""

_BUILD_HINT = (
    "build the cache with `python cli.py predict --config config_yaml/sam2_masks.yaml` and the same data "
    "settings (dataset, index range or folder, image size) and cache_dir, or choose another instance source "
    "(ground_truth for synthetic domains, superpixels) or grid contexts"
)


class MissingMaskError(FileNotFoundError):
    """An instance map is not in the mask cache; the message names the file and how to build the cache."""


def mask_cache_path(cache_dir: str | os.PathLike, name: str) -> Path:
    """Cache file of the image with relative path ``name``: ``cache_dir / name`` with its image suffix -> ``.png``.

    ``street/target/003100`` -> ``cache_dir/street/target/003100.png``; ``a/b.jpg`` -> ``cache_dir/a/b.png``.
    A suffix that is not an image suffix is kept (``a/b.v2`` -> ``a/b.v2.png``). Absolute names and ``..``
    are refused, so a cache entry never lands outside ``cache_dir``.
    """
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise ValueError(f"instance map name must be a relative path inside the cache, got {name!r}")
    if relative.suffix.lower() in IMAGE_SUFFIXES:
        relative = relative.with_suffix("")
    return Path(cache_dir) / relative.parent / f"{relative.name}.png"


def write_instance_map(path: str | os.PathLike, instance_ids: np.ndarray | torch.Tensor) -> None:
    """Write an H x W instance map (0 background, ids 1..65535) as a 16-bit PNG, atomically."""
    ids = instance_ids.detach().cpu().numpy() if isinstance(instance_ids, torch.Tensor) else np.asarray(instance_ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == np.bool_):
        raise ValueError(f"instance map for {path} must be an H x W integer array, got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > MAX_INSTANCES):
        raise ValueError(
            f"instance ids for {path} must lie in 0..{MAX_INSTANCES} (16-bit PNG), got {ids.min()}..{ids.max()}"
        )
    write_image_file(Path(path), ids.astype(np.uint16))


def read_instance_map(path: str | os.PathLike) -> np.ndarray:
    """Read a cached instance map as H x W int64; ``MissingMaskError`` (with the build command) if absent."""
    path = Path(path)
    if not path.is_file():
        raise MissingMaskError(f"instance map {path} is not in the mask cache: {_BUILD_HINT}")
    ids = decode_image_file(path, cv2.IMREAD_UNCHANGED)
    if ids.ndim != 2 or ids.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{path} is not an instance map: expected a single-channel 8/16-bit PNG, got {ids.dtype} {ids.shape}"
        )
    return ids.astype(np.int64)


def masks_to_instance_map(masks: Sequence[Mapping], height: int, width: int, min_area: int) -> np.ndarray:
    """SAM2 mask records (``segmentation`` H x W bool) -> H x W int64 instance map, ids 1..N, 0 background.

    Larger masks are painted first, so smaller (nested) ones stay visible on top. A mask is kept when at
    least ``min_area`` (and at least one) of its pixels stay visible above the larger masks, i.e. after
    overlap resolution; pixels of a dropped mask belong to the mask beneath it. Ids are consecutive,
    largest mask first; equal areas keep the order of ``masks``.
    """
    segmentations = []
    for i, record in enumerate(masks):
        segmentation = np.asarray(record["segmentation"], dtype=bool)
        if segmentation.shape != (height, width):
            raise ValueError(f"mask {i} has shape {segmentation.shape}, expected ({height}, {width})")
        segmentations.append(segmentation)
    areas = [int(s.sum()) for s in segmentations]
    # Decide from the top (smallest) down: a mask's visible part depends only on the kept masks above it.
    top_first = sorted(range(len(areas)), key=lambda i: (areas[i], -i))
    covered = np.zeros((height, width), dtype=bool)
    kept: list[np.ndarray] = []
    for i in top_first:
        visible = segmentations[i] & ~covered
        if visible.sum() >= max(min_area, 1):
            kept.append(visible)
            covered |= segmentations[i]
    if len(kept) > MAX_INSTANCES:
        raise ValueError(f"{len(kept)} instances exceed the {MAX_INSTANCES} a 16-bit instance map can hold")
    instance_map = np.zeros((height, width), dtype=np.int64)
    for instance_id, visible in enumerate(reversed(kept), start=1):
        instance_map[visible] = instance_id
    return instance_map


def superpixel_instances(
    image: np.ndarray | torch.Tensor, n_segments: int = 64, compactness: float = 10.0
) -> np.ndarray:
    """SLIC superpixels (scikit-image, deterministic) as an H x W int64 instance map covering every pixel, ids 1..N.

    ``image``: H x W x 3 uint8 or float in [0, 1] (numpy), or a 3 x H x W tensor in [0, 1].
    """
    from skimage.segmentation import slic

    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be 3 x H x W, got {tuple(image.shape)}")
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float64) / 255.0
    labels = slic(image, n_segments=n_segments, compactness=compactness, start_label=1, channel_axis=-1)
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int64) + 1


def _sam2_configs() -> list[str]:
    root = resources.files("sam2")
    return sorted(
        f"configs/{version.name}/{config.name}"
        for version in (root / "configs").iterdir()
        if version.is_dir()
        for config in version.iterdir()
        if config.name.endswith(".yaml")
    )


@dataclass(frozen=True)
class SAM2MaskSettings:
    """Settings of SAM2's automatic mask generator. The WeSTAR paper gives none, so the defaults are SAM2's own
    (32 x 32 points, predicted IoU > 0.8, stability >= 0.95, box NMS 0.7). ``min_mask_region_area`` > 0 fills holes
    and removes islands up to that area; SAM2 does it with its compiled CUDA extension and, without it, warns and
    skips it."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")


SAM2_DEFAULTS = SAM2MaskSettings()


def build_sam2_mask_generator(
    model_config: str = DEFAULT_SAM2_CONFIG,
    checkpoint: str | os.PathLike | None = None,
    settings: SAM2MaskSettings = SAM2_DEFAULTS,
    *,
    device: str | torch.device = "cpu",
    allow_random_weights: bool = False,
) -> SAM2AutomaticMaskGenerator:
    """A SAM2 automatic mask generator with ``settings``; ``generate(H x W x 3 uint8)`` returns mask records.

    ``checkpoint`` is the official ``.pt`` file (``SAM2_CHECKPOINT_URL``) matching ``model_config``;
    ``None`` (random weights, meaningless masks) is refused unless ``allow_random_weights`` (tests only).
    """
    if checkpoint is None and not allow_random_weights:
        raise ValueError(
            "no SAM2 checkpoint given: download the official SAM 2.1 checkpoint yourself (Hiera-T: "
            f"{SAM2_CHECKPOINT_URL}, other sizes in the README of https://github.com/facebookresearch/sam2) and set "
            "its path (model.checkpoint), or choose another instance source (ground_truth for synthetic domains, "
            "superpixels) or grid contexts"
        )
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"SAM2 checkpoint not found: {checkpoint} (download it from {SAM2_CHECKPOINT_URL} or the SAM2 README)"
        )
    configs = _sam2_configs()
    if model_config not in configs:
        raise ValueError(f"unknown SAM2 model_config {model_config!r}: choose one of {', '.join(configs)}")

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2

    model = build_sam2(model_config, ckpt_path=None, device="cpu")
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt or foreign file
            raise ValueError(f"cannot read SAM2 checkpoint {checkpoint}: {err}") from None
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise ValueError(f"{checkpoint} is not a SAM2 checkpoint (expected a dict with a 'model' state dict)")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"SAM2 checkpoint {checkpoint} does not fit model_config {model_config} (use the config of the "
                f"checkpoint's size): {err}"
            ) from None
    return SAM2AutomaticMaskGenerator(model.to(device), **asdict(settings))


# --- normalisation contexts of the self-training loss (SA-HDN instances; HDN grid and depth ranges) ---


