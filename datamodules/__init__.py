"""Datasets and LightningDataModules."""

from datamodules.image_folder import ImageFolderDataModule, ImageFolderDataset, collate_samples

__all__ = ["ImageFolderDataModule", "ImageFolderDataset", "collate_samples"]
