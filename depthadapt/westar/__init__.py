"""WeSTAR ("Enhancing Generalization of Depth Estimation Foundation Model via Weakly-Supervised Adaptation with
Regularization", arXiv 2511.14238): the objective
``WeSTARLoss``, the normalisation contexts of SA-HDN / HDN, the instance maps they come from, and ordinal pairs
(simulation from depth, JSON Lines files).

Modules, leaves first: ``instances`` (SAM2 / superpixels / cache), ``contexts``, ``ordinal``, ``loss``.
"""

from depthadapt.westar.contexts import depth_range_contexts, grid_contexts, instance_contexts
from depthadapt.westar.instances import (
    DEFAULT_SAM2_CONFIG,
    SAM2_CHECKPOINT_URL,
    SAM2_DEFAULTS,
    MissingMaskError,
    SAM2MaskSettings,
    build_sam2_mask_generator,
    mask_cache_path,
    masks_to_instance_map,
    read_instance_map,
    superpixel_instances,
    write_instance_map,
)
from depthadapt.westar.loss import Context, OrdinalForm, WeSTARLoss, WeSTARLossSettings, normalise_global
from depthadapt.westar.ordinal import (
    EXACT_LABELS,
    PADDING_ROW,
    ClickPlacement,
    OrdinalFileError,
    OrdinalRecord,
    OrdinalSimulation,
    check_pairs,
    image_key,
    labelled_images,
    pad_pairs,
    read_ordinal_jsonl,
    read_ordinal_records,
    simulate_ordinal_pairs,
    write_ordinal_jsonl,
    write_ordinal_records,
)

__all__ = [
    "DEFAULT_SAM2_CONFIG",
    "EXACT_LABELS",
    "PADDING_ROW",
    "SAM2_CHECKPOINT_URL",
    "SAM2_DEFAULTS",
    "ClickPlacement",
    "Context",
    "MissingMaskError",
    "OrdinalFileError",
    "OrdinalForm",
    "OrdinalRecord",
    "OrdinalSimulation",
    "SAM2MaskSettings",
    "WeSTARLoss",
    "WeSTARLossSettings",
    "build_sam2_mask_generator",
    "check_pairs",
    "depth_range_contexts",
    "grid_contexts",
    "image_key",
    "instance_contexts",
    "labelled_images",
    "mask_cache_path",
    "masks_to_instance_map",
    "normalise_global",
    "pad_pairs",
    "read_instance_map",
    "read_ordinal_jsonl",
    "read_ordinal_records",
    "simulate_ordinal_pairs",
    "superpixel_instances",
    "write_instance_map",
    "write_ordinal_jsonl",
    "write_ordinal_records",
]
