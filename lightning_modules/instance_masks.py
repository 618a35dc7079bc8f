"""The SAM2 mask job: automatic instance masks per image (written by ``writers.InstanceMaskWriter``)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch

from depthadapt.westar import (
    DEFAULT_SAM2_CONFIG,
    SAM2_DEFAULTS,
    SAM2MaskSettings,
    build_sam2_mask_generator,
    masks_to_instance_map,
)
from lightning_modules.base import DepthTask

log = logging.getLogger(__name__)


class SAM2MaskPredictor(DepthTask):
    """Run the SAM2 automatic mask generator on each predicted image -> H x W instance maps (ids 1..N).

    Masks go through ``masks_to_instance_map`` (larger masks painted first, fewer than ``min_area`` visible
    pixels dropped). Resume: ``InstanceMaskWriter`` drops cached images from the batch before SAM2 runs.
    Sharding: with DDP (``trainer.devices``, strategy
    ``ddp``) Lightning gives each image to one rank; independent processes split the images with
    ``num_shards`` / ``shard`` (by a hash of the image name). ``settings`` default to SAM2's own (the
    WeSTAR paper gives none); ``min_area`` 64 (an 8 x 8 patch) is our choice: smaller contexts give noisy
    median / MAD statistics and would hide the larger mask beneath them.
    """

    def __init__(
        self,
        model_config: str = DEFAULT_SAM2_CONFIG,
        checkpoint: str | None = None,
        settings: SAM2MaskSettings = SAM2_DEFAULTS,
        min_area: int = 64,
        allow_random_weights: bool = False,
        num_shards: int = 1,
        shard: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= shard < num_shards:
            raise ValueError(f"model.shard must satisfy 0 <= shard < num_shards, got shard {shard} of {num_shards}")
        if min_area < 0:
            raise ValueError(f"model.min_area must be >= 0, got {min_area}")
        self.save_hyperparameters()
        self.generator = build_sam2_mask_generator(
            model_config, checkpoint, settings, allow_random_weights=allow_random_weights
        )
        self.sam2 = self.generator.predictor.model  # a submodule, so Lightning moves it to the device
        if checkpoint is None:
            log.warning("SAM2 has random weights (allow_random_weights=True): the masks are meaningless")
        self.counts: dict[str, int] = {}

    def in_shard(self, name: str) -> bool:
        """True when image ``name`` belongs to this process's shard (stable across runs and machines)."""
        digest = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
        return digest % self.hparams.num_shards == self.hparams.shard

    def instance_map(self, image: torch.Tensor) -> torch.Tensor:
        """3 x H x W image in [0, 1] -> H x W int64 instance map from SAM2's automatic masks."""
        rgb = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        previous = logging.root.manager.disable
        logging.disable(max(previous, logging.INFO))  # SAM2 logs three INFO lines per image on the root logger
        try:
            masks = self.generator.generate(rgb)
        finally:
            logging.disable(previous)
        height, width = rgb.shape[:2]
        return torch.from_numpy(masks_to_instance_map(masks, height, width, self.hparams.min_area))

    def on_predict_start(self) -> None:
        self.counts = {"masked": 0, "masks": 0, "other_shard": 0}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """Batch (``image`` B x 3 x H x W, ``name``) -> ``{"name": [...], "instances": [H x W int64, ...]}``."""
        if not self.has_images(batch):
            return None
        names, instances = [], []
        for name, image in zip(batch["name"], batch["image"], strict=True):
            if not self.in_shard(name):
                self.counts["other_shard"] += 1
            else:
                instance_map = self.instance_map(image)
                names.append(name)
                instances.append(instance_map)
                self.counts["masked"] += 1
                self.counts["masks"] += int(instance_map.max())
        return {"name": names, "instances": instances}

    def on_predict_end(self) -> None:
        counts = self.counts
        per_image = counts["masks"] / max(counts["masked"], 1)
        log.info(
            "SAM2 masks (rank %d): %d images masked (%.1f instances per image), %d in other shards",
            self.global_rank, counts["masked"], per_image, counts["other_shard"],
        )
        super().on_predict_end()

    def manifest(self) -> dict[str, Any]:
        """What wrote a mask cache: SAM2's config, checkpoint and settings."""
        settings = {k: v for k, v in self.hparams.items() if k not in ("num_shards", "shard")}  # shards share a cache
        return {"task": type(self).__name__, "sam2": settings}
