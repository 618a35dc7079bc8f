"""Depth Anything 3 (Apache-2.0 models: da3-small, da3-base, da3mono-large, da3metric-large; our da3-tiny),
single-view, from our own modules; the official hub folder's I/O."""

from depthadapt.models.da3.hub import is_da3_hub_folder, load_da3_hub, load_da3_state_dict, save_da3_hub
from depthadapt.models.da3.model import (
    DA3_CONFIGS,
    METRIC_FOCAL,
    DA3Config,
    DepthAnything3,
    fill_sky,
    metric_depth,
)

__all__ = [
    "DA3_CONFIGS",
    "METRIC_FOCAL",
    "DA3Config",
    "DepthAnything3",
    "fill_sky",
    "is_da3_hub_folder",
    "load_da3_hub",
    "load_da3_state_dict",
    "metric_depth",
    "save_da3_hub",
]
