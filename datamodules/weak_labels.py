"""Weak labels of the adaptation data attached to samples: instance masks and ordinal depth pairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch.utils.data import Dataset, Subset

from depthadapt.synth.seeds import sample_seed
from depthadapt.westar import (
    OrdinalFileError,
    OrdinalSimulation,
    image_key,
    labelled_images,
    mask_cache_path,
    pad_pairs,
    read_instance_map,
    read_ordinal_records,
    simulate_ordinal_pairs,
    superpixel_instances,
)

__all__ = ["INSTANCE_SOURCES", "InstanceSource", "WeakLabelSources", "WeakLabels", "match_ordinal_file",
           "rescale_pairs"]

log = logging.getLogger(__name__)

InstanceSource = Literal["ground_truth", "sam2", "superpixels"]
INSTANCE_SOURCES: tuple[str, ...] = get_args(InstanceSource)
"""Where a sample's ``instances`` map comes from: the dataset's own (synthetic scenes), the SAM2 mask
cache (``python cli.py predict --config config_yaml/sam2_masks.yaml``), or SLIC superpixels."""


@dataclass
class WeakLabelSources:
    """Where the weak labels of training samples come from (a datamodule's ``data.weak_labels``).

    ``instance_source``: one of ``INSTANCE_SOURCES`` (``sam2`` reads the masks cached in ``mask_cache_dir``;
    ``superpixels`` makes that many SLIC segments), or None: no instances. Ordinal pairs come from ``ordinal_file``
    (JSON Lines of people's labels, ``depthadapt.westar.ordinal``) or from ``ordinal_simulation`` (a simulated
    annotator, ``depthadapt.westar.OrdinalSimulation``, that needs ground-truth depth), not both; neither: none.
    """

    instance_source: InstanceSource | None = None
    mask_cache_dir: str | None = None
    superpixels: int = 64
    ordinal_file: str | None = None
    ordinal_simulation: OrdinalSimulation | None = None

    def __post_init__(self) -> None:
        if self.instance_source is not None and self.instance_source not in INSTANCE_SOURCES:
            raise ValueError(
                f"data.weak_labels.instance_source must be one of {', '.join(INSTANCE_SOURCES)} (or null: no "
                f"instances), got {self.instance_source!r}"
            )
        if self.ordinal_file is not None and self.ordinal_simulation is not None:
            raise ValueError(
                "data.weak_labels.ordinal_file and data.weak_labels.ordinal_simulation are both set: train on the "
                "labelled file or on simulated labels, not both (set the other to null)"
            )

    def check_masks(self) -> None:
        """Fail early on a SAM2 source without its cache folder (a datamodule's default may name sam2 alone)."""
        if self.instance_source == "sam2" and self.mask_cache_dir is None:
            raise ValueError(
                "data.weak_labels.instance_source sam2 reads cached SAM2 masks: set data.weak_labels.mask_cache_dir "
                "to the cache folder (build it with `python cli.py predict --config config_yaml/sam2_masks.yaml`)"
            )


def rescale_pairs(pairs: torch.Tensor, stored: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Ordinal pairs P x 5 (y1, x1, y2, x2, label) in pixels of an image stored at ``stored`` (h, w) -> the same
    points in pixels of that image resized to ``size`` (pixel centres map onto pixel centres, as cv2.resize does)."""
    scaled = pairs.clone()
    for columns, old, new in (((0, 2), stored[0], size[0]), ((1, 3), stored[1], size[1])):
        for c in columns:
            scaled[:, c] = ((pairs[:, c] + 0.5) * (new / old) - 0.5).round().clamp(0, new - 1)
    return scaled


def _sample_names(dataset: Dataset) -> list[str] | None:
    """The names of a dataset's samples without loading them: its ``files`` (the sample protocol), through
    ``Subset``s and wrappers that expose ``dataset``; None when the dataset does not list them."""
    if isinstance(dataset, Subset):
        names = _sample_names(dataset.dataset)
        return None if names is None else [names[i] for i in dataset.indices]
    files = getattr(dataset, "files", None)
    if files is None and isinstance(getattr(dataset, "dataset", None), Dataset):
        return _sample_names(dataset.dataset)
    return None if files is None else [str(name) for name in files]


def match_ordinal_file(
    path: str | Path, names: list[str] | None, root: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Read a weak-label file and key its pairs by ``image_key`` -> {key: P x 5 float32}, checked against the
    sample ``names`` (an image marked ``"skipped": true`` gets no pairs, whatever its line holds): a file that labels
    none of them is an error showing one expected and one found key;
    the images it labels are counted in a log line and the lines for unknown images in a warning.

    Keys match with or without the image suffix, with "./" or backslashes, and relative to ``root`` (the image
    folder). ``names`` None (a dataset that does not list its samples) skips the check, with a warning.
    """
    records = read_ordinal_records(path)
    if not records:
        raise OrdinalFileError(f"{path} holds no labelled image: label some (python -m depthadapt.annotate) or "
                               "unset data.weak_labels.ordinal_file")
    pairs: dict[str, torch.Tensor] = {}
    spelling: dict[str, str] = {}
    for record in records:
        key = image_key(record.image, root)
        if key in pairs:
            raise OrdinalFileError(f"{path}: {spelling[key]!r} and {record.image!r} name the same image")
        pairs[key] = torch.tensor([] if record.skipped else record.pairs, dtype=torch.float32).reshape(-1, 5)
        spelling[key] = record.image
    if names is None:
        log.warning("%s: the dataset does not list its samples (no `files`), so which of them it labels is not "
                    "checked before they load", path)
        return pairs
    known = {image_key(name) for name in names}
    unknown = [record.image for record in records if image_key(record.image, root) not in known]
    if len(unknown) == len(records):
        raise OrdinalFileError(
            f"{path} labels none of the {len(names)} images of the dataset: expected keys like {names[0]!r} "
            f"(paths relative to the image folder, with or without extension), found {records[0].image!r}"
        )
    labelled = [key for key in pairs if key in known and len(pairs[key])]
    log.info("%s: ordinal pairs for %d of %d images (%d pairs)", path, len(labelled), len(names),
             sum(len(pairs[key]) for key in labelled))
    if unknown:
        log.warning("%s: %d of its %d images are not in the dataset and are ignored, e.g. %r (expected keys like "
                    "%r)", path, len(unknown), len(records), unknown[0], names[0])
    return pairs


class WeakLabels(Dataset):
    """Wrap a dataset to set ``instances`` (H x W int64) and ``ordinal`` pairs from ``sources`` (``WeakLabelSources``).

    ``instance_source``: one of INSTANCE_SOURCES, or None to drop any ``instances`` (a loss that needs them
    then fails and says so). The ordinal pairs come from one of two sources, which enter training the same way:
    ``ordinal_file``, JSON Lines of weak labels made by people (``depthadapt.westar.ordinal``), matched to samples by
    ``name`` as ``match_ordinal_file`` does (relative to the dataset's ``image_dir`` if it has one); or
    ``ordinal_simulation``, a simulated annotator (``OrdinalSimulation``) that labels a fixed share of the images
    from their ground-truth ``depth`` (its object clicks use the dataset's own ``instances`` when it has them,
    else the ``instance_source`` map), each image's pairs fixed by its ``index``. Every sample gets ``ordinal``
    P x 5 padded with y1 = -1 rows to a common length (all padding for an image without labels: sparse
    annotation is normal). Samples that failed to load (``error``) pass unchanged.
    """

    def __init__(self, dataset: Dataset, sources: WeakLabelSources) -> None:
        sources.check_masks()
        self.dataset = dataset
        self.sources = sources
        simulation = sources.ordinal_simulation
        self.pairs: dict[str, torch.Tensor] = {}
        self.max_pairs = 0 if simulation is None else 3 * simulation.anchors
        if sources.ordinal_file is not None:
            root = getattr(dataset, "image_dir", None)
            self.pairs = match_ordinal_file(sources.ordinal_file, _sample_names(dataset), root)
            self.max_pairs = max((len(p) for p in self.pairs.values()), default=0)

    def __len__(self) -> int:
        """Length of the wrapped dataset."""
        return len(self.dataset)

    def _instances(self, sample: dict[str, Any]) -> torch.Tensor | None:
        height, width = sample["image"].shape[-2:]
        if self.sources.instance_source == "ground_truth":
            if "instances" not in sample:
                raise ValueError(
                    f"sample {sample['name']} has no ground-truth instances: data.weak_labels.instance_source "
                    "ground_truth works with the synthetic domains only; choose sam2 or superpixels"
                )
            return sample["instances"]
        if self.sources.instance_source == "superpixels":
            return torch.from_numpy(superpixel_instances(sample["image"], self.sources.superpixels)).long()
        if self.sources.instance_source == "sam2":
            path = mask_cache_path(self.sources.mask_cache_dir, sample["name"])
            instances = torch.from_numpy(read_instance_map(path)).long()
            if tuple(instances.shape) != (height, width):
                raise ValueError(
                    f"cached masks {path} are {tuple(instances.shape)} but the image is {height} x {width}: "
                    "rebuild the cache with the same image size (config_yaml/sam2_masks.yaml)"
                )
            return instances
        return None

    def _simulated(self, sample: dict[str, Any], instances: torch.Tensor | None) -> torch.Tensor:
        simulation = self.sources.ordinal_simulation
        index = int(sample["index"])
        if not bool(labelled_images(torch.tensor([index]), simulation.label_fraction)[0]):
            return torch.zeros(0, 5)
        if "depth" not in sample:
            raise ValueError(
                f"data.weak_labels.ordinal_simulation draws labels from ground-truth depth, which sample "
                f"{sample['name']} lacks: give the datamodule a depth folder, or label the images "
                "(data.weak_labels.ordinal_file)"
            )
        valid = sample.get("valid", sample["depth"] > 0)
        generator = torch.Generator().manual_seed(sample_seed("ordinal", "simulation", simulation.seed, index))
        return simulate_ordinal_pairs(sample["depth"], valid, simulation, sample.get("instances", instances),
                                      generator)

    def _ordinal(self, sample: dict[str, Any], instances: torch.Tensor | None) -> torch.Tensor:
        if self.sources.ordinal_simulation is not None:
            return pad_pairs([self._simulated(sample, instances)], self.max_pairs)[0]
        pairs = self.pairs.get(image_key(sample["name"]), torch.zeros(0, 5))
        height, width = sample["image"].shape[-2:]
        stored_height, stored_width = sample.get("stored_size", (height, width))
        stored_height, stored_width = int(stored_height), int(stored_width)
        if len(pairs) and (int(pairs[:, 0].max()) >= stored_height or int(pairs[:, 2].max()) >= stored_height
                           or int(pairs[:, 1].max()) >= stored_width or int(pairs[:, 3].max()) >= stored_width):
            raise ValueError(
                f"{self.sources.ordinal_file}: pairs of {sample['name']} lie outside its {stored_height} x "
                f"{stored_width} image (coordinates are pixel rows and columns of the image file as stored)"
            )
        if len(pairs) and (stored_height, stored_width) != (height, width):
            pairs = rescale_pairs(pairs, (stored_height, stored_width), (height, width))
        return pad_pairs([pairs], self.max_pairs)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index`` of the wrapped dataset with its weak labels."""
        sample = dict(self.dataset[index])
        if "error" in sample:
            return sample
        instances = self._instances(sample)
        if self.sources.ordinal_file is not None or self.sources.ordinal_simulation is not None:
            sample["ordinal"] = self._ordinal(sample, instances)
        sample.pop("instances", None)
        if instances is not None:
            sample["instances"] = instances
        return sample
