"""LightningModules and callbacks: thin wiring of depthadapt's models, losses and metrics."""

from lightning_modules.prediction_writer import DepthMapWriter
from lightning_modules.supervised import SupervisedDepth
from lightning_modules.westar import WeSTARAdapter

__all__ = ["DepthMapWriter", "SupervisedDepth", "WeSTARAdapter"]
