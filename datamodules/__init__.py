"""Datasets and LightningDataModules."""

from datamodules.base import HorizontalFlip, SampleDataset, collate_samples, sample_loader
from datamodules.benchmarks import DIODEDataModule, DrivingStereoDataModule, ETH3DDataModule, SintelDataModule
from datamodules.corrupted import Corrupted
from datamodules.image_folder import ImageFolderDataModule, ImageFolderDataset
from datamodules.kitti import KITTIDataModule, VKITTI2DataModule
from datamodules.nyu import NYUv2DataModule, NYUv2FolderDataModule
from datamodules.synthetic import SyntheticDataModule
from datamodules.target_domain import TargetDomainDataModule
from datamodules.weak_labels import INSTANCE_SOURCES, WeakLabels, WeakLabelSources

__all__ = [
    "INSTANCE_SOURCES",
    "Corrupted",
    "DIODEDataModule",
    "DrivingStereoDataModule",
    "ETH3DDataModule",
    "HorizontalFlip",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "KITTIDataModule",
    "NYUv2DataModule",
    "NYUv2FolderDataModule",
    "SampleDataset",
    "SintelDataModule",
    "SyntheticDataModule",
    "TargetDomainDataModule",
    "VKITTI2DataModule",
    "WeakLabelSources",
    "WeakLabels",
    "collate_samples",
    "sample_loader",
]
