"""Weak labels of the adaptation data attached to samples: instance masks and ordinal depth pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from depthadapt.masks import mask_cache_path, read_instance_map, superpixel_instances
from depthadapt.ordinal import pad_pairs, read_ordinal_jsonl

__all__ = ["INSTANCE_SOURCES", "WeakLabels", "check_instance_source"]

INSTANCE_SOURCES = ("ground_truth", "sam2", "superpixels")
"""Where a sample's ``instances`` map comes from: the dataset's own (synthetic scenes), the SAM2 mask
cache (``python cli.py predict --config config_yaml/sam2_masks.yaml``), or SLIC superpixels."""


def check_instance_source(instance_source: str | None, mask_cache_dir: str | None) -> None:
    """Fail early on an unknown ``data.instance_source`` or a SAM2 source without its cache folder."""
    if instance_source is not None and instance_source not in INSTANCE_SOURCES:
        raise ValueError(
            f"data.instance_source must be one of {', '.join(INSTANCE_SOURCES)} (or null: no instances), "
            f"got {instance_source!r}"
        )
    if instance_source == "sam2" and mask_cache_dir is None:
        raise ValueError(
            "data.instance_source sam2 reads cached SAM2 masks: set data.mask_cache_dir to the cache folder "
            "(build it with `python cli.py predict --config config_yaml/sam2_masks.yaml`)"
        )


class WeakLabels(Dataset):
    """Wrap a dataset to set ``instances`` (H x W int64) from ``instance_source`` and ``ordinal`` pairs.

    ``instance_source``: one of INSTANCE_SOURCES, or None to drop any ``instances`` (a loss that needs them
    then fails and says so). ``ordinal_file``: JSON Lines of weak labels (``depthadapt.ordinal``), matched to
    samples by ``name``; every sample gets ``ordinal`` P x 5 padded with y1 = -1 rows to the file's longest
    list (all padding for an image without labels: sparse annotation is normal). Samples that failed to load
    (``error``) pass unchanged.
    """

    def __init__(
        self,
        dataset: Dataset,
        instance_source: str | None = None,
        mask_cache_dir: str | Path | None = None,
        superpixels: int = 64,
        ordinal_file: str | Path | None = None,
    ) -> None:
        check_instance_source(instance_source, None if mask_cache_dir is None else str(mask_cache_dir))
        self.dataset = dataset
        self.instance_source = instance_source
        self.mask_cache_dir = None if mask_cache_dir is None else Path(mask_cache_dir)
        self.superpixels = superpixels
        self.ordinal_file = None if ordinal_file is None else Path(ordinal_file)
        self.pairs: dict[str, torch.Tensor] = {}
        if self.ordinal_file is not None:
            self.pairs = read_ordinal_jsonl(self.ordinal_file)
            self.max_pairs = max((len(p) for p in self.pairs.values()), default=0)

    def __len__(self) -> int:
        """Length of the wrapped dataset."""
        return len(self.dataset)

    def _instances(self, sample: dict[str, Any]) -> torch.Tensor | None:
        height, width = sample["image"].shape[-2:]
        if self.instance_source == "ground_truth":
            if "instances" not in sample:
                raise ValueError(
                    f"sample {sample['name']} has no ground-truth instances: data.instance_source ground_truth "
                    "works with the synthetic domains only; choose sam2 or superpixels"
                )
            return sample["instances"]
        if self.instance_source == "superpixels":
            return torch.from_numpy(superpixel_instances(sample["image"], self.superpixels)).long()
        if self.instance_source == "sam2":
            path = mask_cache_path(self.mask_cache_dir, sample["name"])
            instances = torch.from_numpy(read_instance_map(path)).long()
            if tuple(instances.shape) != (height, width):
                raise ValueError(
                    f"cached masks {path} are {tuple(instances.shape)} but the image is {height} x {width}: "
                    "rebuild the cache with the same image size (config_yaml/sam2_masks.yaml)"
                )
            return instances
        return None

    def _ordinal(self, sample: dict[str, Any]) -> torch.Tensor:
        pairs = self.pairs.get(sample["name"], torch.zeros(0, 5))
        height, width = sample["image"].shape[-2:]
        if len(pairs) and (int(pairs[:, 0].max()) >= height or int(pairs[:, 2].max()) >= height
                           or int(pairs[:, 1].max()) >= width or int(pairs[:, 3].max()) >= width):
            raise ValueError(
                f"{self.ordinal_file}: pairs of {sample['name']} lie outside its {height} x {width} image "
                "(coordinates are pixel rows and columns of the image as loaded, after any resizing)"
            )
        return pad_pairs([pairs], self.max_pairs)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index`` of the wrapped dataset with its weak labels."""
        sample = dict(self.dataset[index])
        if "error" in sample:
            return sample
        instances = self._instances(sample)
        sample.pop("instances", None)
        if instances is not None:
            sample["instances"] = instances
        if self.ordinal_file is not None:
            sample["ordinal"] = self._ordinal(sample)
        return sample
