"""LightningModules and callbacks: thin wiring of depthadapt's models, losses and metrics."""

from lightning_modules.adaptation import LoraAdaptationTask
from lightning_modules.base import DepthTask
from lightning_modules.dual_teacher import DualTeacherLabeler
from lightning_modules.instance_masks import SAM2MaskPredictor
from lightning_modules.sparse_alignment import SparseAlignedDepth
from lightning_modules.supervised import SupervisedDepth
from lightning_modules.westar import PerturbationConsistencyAdapter, WeSTARAdapter
from lightning_modules.writers import (
    DepthMapWriter,
    ExportCallback,
    InstanceMaskWriter,
    PseudoLabelWriter,
    ResumableWriter,
)

__all__ = [
    "DepthMapWriter",
    "DepthTask",
    "DualTeacherLabeler",
    "ExportCallback",
    "InstanceMaskWriter",
    "LoraAdaptationTask",
    "PerturbationConsistencyAdapter",
    "PseudoLabelWriter",
    "ResumableWriter",
    "SAM2MaskPredictor",
    "SparseAlignedDepth",
    "SupervisedDepth",
    "WeSTARAdapter",
]
