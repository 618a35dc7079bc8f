"""Weak labels attached to training samples (instance sources, ordinal files), flips, the target-domain datamodule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from builders import make_dataset, write_flat_images
from jsonargparse import ArgumentError
from torch.utils.data import Dataset

from datamodules import ImageFolderDataModule, SyntheticDataModule, TargetDomainDataModule, WeakLabels, WeakLabelSources
from datamodules.base import HorizontalFlip
from datamodules.synthetic import synthetic_datamodule
from depthadapt.westar import MissingMaskError, mask_cache_path, write_instance_map, write_ordinal_jsonl

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


class Samples(Dataset):
    """Two 6 x 8 samples named a and b/c, with ground-truth instances."""

    def __init__(self) -> None:
        self.names = ["a", "b/c"]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        image = torch.rand(3, 6, 8)
        return {"image": image, "name": self.names[index], "index": index,
                "instances": torch.ones(6, 8, dtype=torch.long)}


def test_ordinal_file_pairs_are_attached_by_name_and_padded(tmp_path: Path) -> None:
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"a": [[0, 1, 5, 7, 1], [2, 2, 3, 3, 0]], "other": [[0, 0, 1, 1, -1]]})
    dataset = WeakLabels(Samples(), WeakLabelSources(instance_source="ground_truth", ordinal_file=path))
    first, second = dataset[0], dataset[1]
    assert first["ordinal"].shape == second["ordinal"].shape == (2, 5)
    assert first["ordinal"][0].tolist() == [0, 1, 5, 7, 1]
    assert (second["ordinal"][:, 0] < 0).all()  # no labels for b/c: padding only
    assert torch.equal(first["instances"], torch.ones(6, 8, dtype=torch.long))


def test_ordinal_pairs_outside_the_image_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(path, {"a": [[0, 1, 5, 8, 1]]})
    with pytest.raises(ValueError, match="weak.jsonl.*outside its 6 x 8"):
        WeakLabels(Samples(), WeakLabelSources(ordinal_file=path))[0]


def test_flip_mirrors_ordinal_columns_and_keeps_padding() -> None:
    sample = {"image": torch.rand(3, 6, 8), "name": "a",
              "ordinal": torch.tensor([[0.0, 1, 5, 7, 1], [-1, -1, -1, -1, 0]])}

    class One(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> dict:
            return dict(sample)

    flipped = HorizontalFlip(One(), p=1.0)[0]
    assert flipped["ordinal"].tolist() == [[0, 6, 5, 0, 1], [-1, -1, -1, -1, 0]]
    assert torch.equal(flipped["image"], sample["image"].flip(-1))


def test_sam2_source_reads_the_cache_and_says_how_to_build_a_missing_entry(tmp_path: Path) -> None:
    ids = np.arange(48).reshape(6, 8) % 3
    write_instance_map(mask_cache_path(tmp_path, "a"), ids)
    dataset = WeakLabels(Samples(), WeakLabelSources(instance_source="sam2", mask_cache_dir=tmp_path))
    assert np.array_equal(dataset[0]["instances"].numpy(), ids)
    with pytest.raises(MissingMaskError, match="sam2_masks.yaml"):
        dataset[1]
    write_instance_map(mask_cache_path(tmp_path, "b/c"), np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="same image size"):
        dataset[1]


def test_instance_sources_are_explicit() -> None:
    assert "instances" not in WeakLabels(Samples(), WeakLabelSources())[0]  # no source: no instances, no silent default
    superpixels = WeakLabels(Samples(), WeakLabelSources(instance_source="superpixels", superpixels=4))[0]["instances"]
    assert superpixels.shape == (6, 8) and superpixels.min() >= 1
    with pytest.raises(ValueError, match="mask_cache_dir"):
        WeakLabels(Samples(), WeakLabelSources(instance_source="sam2"))
    with pytest.raises(ValueError, match="instance_source must be one of"):
        SyntheticDataModule(weak_labels=WeakLabelSources(instance_source="grid"))


def test_target_domain_trains_on_unlabelled_images_and_evaluates_elsewhere(tmp_path: Path) -> None:
    images, depths = make_dataset(tmp_path / "labelled", count=2)
    unlabelled = tmp_path / "unlabelled"
    write_flat_images(unlabelled, 3, 48, 64, step=40)
    weak = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(weak, {"1.png": [[0, 0, 47, 63, 1]]})
    evaluation = ImageFolderDataModule(image_dir=str(images), depth_dir=str(depths), depth_suffix=".npy")
    sources = WeakLabelSources(instance_source="superpixels", superpixels=4, ordinal_file=str(weak))
    data = TargetDomainDataModule(str(unlabelled), evaluation, weak_labels=sources, batch_size=3, hflip=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    # 48 x 64 images train at the nearest multiples of 14 (42 x 70); labels follow the resize
    assert batch["image"].shape == (3, 3, 42, 70) and "depth" not in batch
    assert batch["instances"].shape == (3, 42, 70)
    labelled = {name: pairs for name, pairs in zip(batch["name"], batch["ordinal"], strict=True)}
    assert labelled["1.png"][0].tolist() == [0, 0, 41, 69, 1]
    val = next(iter(data.val_dataloader()))
    assert "depth" in val and len(val["name"]) == 1


def test_simulated_labels_enter_the_samples_as_a_files_would_on_a_fixed_share(tmp_path: Path) -> None:
    """data.weak_labels.ordinal_simulation: pairs on the labelled share only (chosen by index), the same on every read
    and in any datamodule order, drawn from the sample's own depth; exact labels agree with it."""
    from depthadapt.westar import EXACT_LABELS, OrdinalSimulation, labelled_images

    sources = WeakLabelSources("ground_truth", ordinal_simulation=OrdinalSimulation(label_fraction=0.3))
    module = SyntheticDataModule(height=28, width=84, train_range=(0, 40), val_range=(40, 42), test_range=(42, 44),
                                 cache_dir=str(tmp_path), weak_labels=sources)
    module.setup("fit")
    train = module.datasets["train"]
    samples = [train[i] for i in range(40)]
    labelled = labelled_images(torch.arange(40), 0.3)
    has_pairs = torch.tensor([bool((s["ordinal"][:, 0] >= 0).any()) for s in samples])
    assert torch.equal(has_pairs, labelled) and 5 < int(labelled.sum()) < 20
    assert all(s["ordinal"].shape == (15, 5) for s in samples)  # padded to 3 x anchors for batching
    assert torch.equal(train[7]["ordinal"], samples[7]["ordinal"])  # fixed per image
    exact = WeakLabels(module.dataset((0, 40)), WeakLabelSources("ground_truth", ordinal_simulation=EXACT_LABELS))
    for index in (0, 1):
        sample = exact[index]
        y1, x1, y2, x2, label = sample["ordinal"][sample["ordinal"][:, 0] >= 0].long().T
        depth = sample["depth"]
        assert torch.equal(torch.sign(depth[y1, x1] - depth[y2, x2]).long(), label)


def test_simulation_needs_depth_and_excludes_a_label_file(tmp_path: Path) -> None:
    from depthadapt.westar import OrdinalSimulation

    with pytest.raises(ValueError, match="data.weak_labels.ordinal_file and data.weak_labels.ordinal_simulation"):
        WeakLabelSources(ordinal_file=str(tmp_path / "weak.jsonl"), ordinal_simulation=OrdinalSimulation())
    every_image = OrdinalSimulation(label_fraction=1.0, clicks="uniform")
    with pytest.raises(ValueError, match="data.weak_labels.ordinal_simulation draws labels from ground-truth depth"):
        WeakLabels(Samples(), WeakLabelSources(ordinal_simulation=every_image))[0]


def test_annotated_frames_train_at_their_own_size_or_any_image_size_with_their_labels_rescaled(
        tmp_path: Path) -> None:
    # Labels are pixels of the image as stored (the annotation tool's); 60 x 80 frames (like 480 x 640 ones) are
    # not multiples of 14, and every resize the datamodule does must carry the labels along.
    images, depths = make_dataset(tmp_path / "labelled", count=1)
    frames = tmp_path / "frames"
    write_flat_images(frames, 2, 60, 80, step=50)
    weak = tmp_path / "weak.jsonl"
    write_ordinal_jsonl(weak, {"0.png": [[59, 79, 0, 0, 1], [30, 40, 10, 20, -1]]})
    evaluation = ImageFolderDataModule(image_dir=str(images), depth_dir=str(depths), depth_suffix=".npy")
    expected = {None: ((56, 84), [[55, 83, 0, 0, 1], [28, 42, 9, 21, -1]]),
                (28, 42): ((28, 42), [[27, 41, 0, 0, 1], [14, 21, 4, 10, -1]])}
    for image_size, (size, pairs) in expected.items():
        data = TargetDomainDataModule(str(frames), evaluation, image_size=image_size,
                                      weak_labels=WeakLabelSources(ordinal_file=str(weak)), batch_size=2, hflip=False)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        assert tuple(batch["image"].shape[-2:]) == size
        labelled = dict(zip(batch["name"], batch["ordinal"], strict=True))
        assert labelled["0.png"].tolist() == pairs
        assert batch["stored_size"].tolist() == [[60, 80], [60, 80]]
    write_ordinal_jsonl(weak, {"0.png": [[60, 0, 0, 0, 1]]})  # row 60 of a 60-row image
    data = TargetDomainDataModule(str(frames), evaluation, image_size=(28, 42),
                                  weak_labels=WeakLabelSources(ordinal_file=str(weak)), batch_size=2, hflip=False)
    data.setup("fit")
    with pytest.raises(ValueError, match="weak.jsonl: pairs of 0.png lie outside its 60 x 80 image"):
        next(iter(data.train_dataloader()))


def test_synthetic_datamodule_types_a_data_fragment_as_the_cli_does() -> None:
    fragment = yaml.safe_load((ROOT / "config_yaml" / "data" / "ood_neon.yaml").read_text())["init_args"]
    assert isinstance(fragment["weak_labels"], dict)  # what a script reading the YAML holds
    data = synthetic_datamodule({**fragment, "cache_dir": None})
    assert isinstance(data.weak_labels, WeakLabelSources)
    assert dataclasses.asdict(data.weak_labels) == {**dataclasses.asdict(WeakLabelSources()), **fragment["weak_labels"]}
    assert not any(isinstance(v, dict) for v in vars(data.weak_labels).values())  # nested settings typed too
    with pytest.raises(ArgumentError, match="bogus"):
        synthetic_datamodule({**fragment, "bogus": 1})
