"""LightningModules and callbacks: thin wiring of depthadapt's models, losses and metrics."""

from lightning_modules.dual_teacher import DualTeacherLabeler
from lightning_modules.instance_masks import InstanceMaskWriter, SAM2MaskPredictor
from lightning_modules.prediction_writer import DepthMapWriter
from lightning_modules.pseudo_label_writer import PseudoLabelWriter
from lightning_modules.student import PseudoLabelStudent
from lightning_modules.supervised import SupervisedDepth
from lightning_modules.westar import WeSTARAdapter

__all__ = [
    "DepthMapWriter",
    "DualTeacherLabeler",
    "InstanceMaskWriter",
    "PseudoLabelStudent",
    "PseudoLabelWriter",
    "SAM2MaskPredictor",
    "SupervisedDepth",
    "WeSTARAdapter",
]
