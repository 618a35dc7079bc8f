"""Unlabelled target-domain images for adaptation, with a labelled datamodule for validation and test."""

from __future__ import annotations

from pathlib import Path

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.base import HorizontalFlip, read_split_file, sample_loader
from datamodules.image_folder import ImageFolderDataset
from datamodules.weak_labels import WeakLabels, WeakLabelSources
from depthadapt.metrics import EvaluationProtocol
from depthadapt.models.dinov2 import PATCH_SIZE

__all__ = ["TargetDomainDataModule"]


SAM2_INSTANCES = WeakLabelSources(instance_source="sam2")  # set mask_cache_dir to the cache of sam2_masks.yaml


class TargetDomainDataModule(LightningDataModule):
    """Fit on the images of ``image_dir`` (no ground truth needed) with their weak labels; validate, test and
    predict with ``evaluation``, any labelled datamodule (e.g. ``KITTIDataModule`` on the Eigen split).

    Weak labels as ``weak_labels`` (``WeakLabelSources``) says: ``instances`` from its ``instance_source`` (``sam2``
    masks cached in ``mask_cache_dir`` by ``config_yaml/sam2_masks.yaml``, or ``superpixels``) and ``ordinal`` pairs
    from ``ordinal_file`` (JSON Lines keyed by the image paths relative to ``image_dir``) or, with ground truth in
    ``depth_dir``, drawn by the simulated annotator ``ordinal_simulation`` (``depthadapt.westar.OrdinalSimulation``).
    ``split_file`` restricts the training images; ``hflip`` flips them (and their labels) at random.
    They train at ``image_size``, else at their own size with each side resized to its nearest multiple of 14 (the
    patch size); ordinal labels, in the stored images' pixels, are rescaled with them.
    """

    def __init__(
        self,
        image_dir: str,
        evaluation: LightningDataModule,
        split_file: str | None = None,
        image_size: tuple[int, int] | None = None,
        depth_dir: str | None = None,
        depth_suffix: str = ".png",
        depth_scale: float | None = 1.0,
        weak_labels: WeakLabelSources = SAM2_INSTANCES,
        batch_size: int = 4,
        num_workers: int = 0,
        hflip: bool = True,
    ) -> None:
        super().__init__()
        weak_labels.check_masks()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.image_dir, self.split_file, self.image_size = image_dir, split_file, image_size
        self.depth = dict(depth_dir=depth_dir, depth_suffix=depth_suffix, depth_scale=depth_scale)
        self.weak_labels = weak_labels
        self.evaluation = evaluation
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.train_dataset: Dataset | None = None

    @property
    def evaluation_protocol(self) -> EvaluationProtocol | None:
        """The evaluation datamodule's protocol (depth range, crop)."""
        return getattr(self.evaluation, "evaluation_protocol", None)

    def _train_dataset(self) -> Dataset:
        files = None if self.split_file is None else read_split_file(self.split_file)
        if files is not None and not files:
            raise ValueError(f"split file {self.split_file} lists no image")
        images = ImageFolderDataset(
            Path(self.image_dir), image_size=self.image_size, files=files, size_multiple=PATCH_SIZE, **self.depth
        )
        train: Dataset = WeakLabels(images, self.weak_labels)
        return HorizontalFlip(train) if self.hflip else train

    def prepare_data(self) -> None:
        """Let the evaluation datamodule prepare its data."""
        self.evaluation.prepare_data()

    def setup(self, stage: str) -> None:
        """Training images for ``fit``; the evaluation datamodule's stage (``validate`` during fit)."""
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self._train_dataset()
        self.evaluation.setup("validate" if stage == "fit" else stage)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of target-domain images with their weak labels."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') before asking for the training dataloader")
        return sample_loader(self.train_dataset, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The evaluation datamodule's validation batches."""
        return self.evaluation.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        """The evaluation datamodule's test batches."""
        return self.evaluation.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The evaluation datamodule's prediction batches."""
        return self.evaluation.predict_dataloader()
