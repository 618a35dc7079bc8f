"""The WeSTAR objective (paper 000): self-training over contexts + ordinal weak labels + LoRA regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from depthadapt.losses import EqualPairs, lora_regularizer, ordinal_loss, sa_hdn_loss
from depthadapt.models.weights.keys import allow_in_checkpoints
from depthadapt.westar.contexts import depth_range_contexts, grid_contexts, instance_contexts

Context = Literal["instances", "grid", "depth_range", "global"]
CONTEXTS: tuple[str, ...] = get_args(Context)
"""Self-training contexts: SA-HDN over instance masks, HDN's grid or depth-range hierarchy, or the whole image."""
OrdinalForm = Literal["disparity", "normalised"]
ORDINAL_FORMS: tuple[str, ...] = get_args(OrdinalForm)
"""The ordinal term on raw disparity (the paper's literal form) or on the prediction normalised like SA-HDN's global
context, (x - median) / mean |x - median|, so its size does not depend on the model's output scale."""
TERMS = ("self_training", "ordinal", "lora_regularizer")
Output = Literal["disparity", "depth"]
OUTPUTS: tuple[str, ...] = get_args(Output)
"""What the adapted model predicts: disparity (Depth Anything V2) or depth up to scale (Depth Anything 3)."""


def normalise_global(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image (x - median) / (mean |x - median| + eps): B x H x W -> B x H x W."""
    flat = x.flatten(1)
    median = flat.median(dim=1, keepdim=True).values
    spread = (flat - median).abs().mean(dim=1, keepdim=True)
    return ((flat - median) / (spread + eps)).view_as(x)


@dataclass(frozen=True)
class WeSTARLossSettings:
    """The WeSTAR objective's settings (``model.loss`` of ``WeSTARAdapter``).

    ``context`` chooses the self-training contexts (``CONTEXTS``); ``min_instance_fraction`` is the smallest instance
    kept, as a fraction of the image; ``hdn_levels`` the grid cells per side or depth-range groups per level;
    ``self_training_trim`` the share of each image's largest self-training pixel losses left out (0: none, the paper).
    ``ordinal_form`` / ``ordinal_margin`` / ``ordinal_equal`` define the weak term (``ORDINAL_FORMS``; how "equal"
    answers count: ``depthadapt.losses.ordinal_loss``). ``self_training_weight``, ``weak_weight`` and
    ``regularizer_weight`` weigh the three terms; a weight of 0 switches its term off (the paper's ablations) and a
    term that is off is not computed. The defaults deviate from the paper, by the benchmarks (README): the weak term on
    the normalised prediction, margin 0.1 in its units, "equal" answers free within the margin (hinge), weight 3
    (chosen on validation for a human-like annotator); the paper's literal term is ``ordinal_form="disparity",
    weak_weight=0.001, ordinal_margin=0``.
    """

    context: Context = "instances"
    self_training_weight: float = 1.0
    weak_weight: float = 3.0
    regularizer_weight: float = 1.0
    min_instance_fraction: float = 0.001
    hdn_levels: tuple[int, ...] = (1, 2, 4)
    ordinal_form: OrdinalForm = "normalised"
    ordinal_margin: float = 0.1
    ordinal_equal: EqualPairs = "hinge"
    self_training_trim: float = 0.0

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"model.loss.context must be one of {', '.join(CONTEXTS)}, got {self.context!r}")
        if self.ordinal_form not in ORDINAL_FORMS:
            raise ValueError(f"model.loss.ordinal_form must be one of {', '.join(ORDINAL_FORMS)}, got "
                             f"{self.ordinal_form!r}")
        if min(self.self_training_weight, self.weak_weight, self.regularizer_weight) < 0:
            raise ValueError("model.loss weights must be >= 0 (0 switches a term off)")
        if not 0 <= self.self_training_trim < 1:
            raise ValueError(f"model.loss.self_training_trim must be in [0, 1), got {self.self_training_trim}")
        object.__setattr__(self, "hdn_levels", tuple(self.hdn_levels))


allow_in_checkpoints(WeSTARLossSettings)  # Lightning stores a task's settings in its checkpoint's hyper-parameters


class WeSTARLoss(nn.Module):
    """WeSTAR's weighted terms from the student's prediction and the teacher's pseudo-label, as ``settings``
    (``WeSTARLossSettings``) say.

    ``output``: what pred and pseudo-label are. SA-HDN compares them as they are (its normalisation is scale and shift
    invariant in either space); the ordinal term ranks disparity (nearer: larger), so a depth output is ranked by
    its negation (normalised form) or its inverse (the literal disparity form).
    """

    def __init__(self, settings: WeSTARLossSettings = WeSTARLossSettings(), output: Output = "disparity") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"WeSTARLoss output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.settings = settings
        self.weights = {"self_training": settings.self_training_weight, "ordinal": settings.weak_weight,
                        "lora_regularizer": settings.regularizer_weight}
        self.output = output

    def needs(self, term: str) -> bool:
        """True when ``term`` (one of ``TERMS``) has a positive weight."""
        return self.weights[term] > 0

    def ranked(self, pred: torch.Tensor) -> torch.Tensor:
        """What the ordinal term ranks (nearer: larger): B x H x W prediction -> B x H x W."""
        if self.settings.ordinal_form == "normalised":
            return normalise_global(-pred if self.output == "depth" else pred)
        return 1.0 / pred.clamp_min(1e-6) if self.output == "depth" else pred

    def contexts(self, pseudo_label: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """The normalisation contexts for B x H x W pseudo-labels: B x K x H x W or K x H x W bool."""
        height, width = pseudo_label.shape[-2:]
        if self.settings.context == "instances":
            if instances is None:
                raise ValueError(
                    "model.loss.context instances (SA-HDN) needs instance masks: set data.weak_labels.instance_source "
                    "(sam2 with a mask cache, ground_truth on synthetic data, or superpixels), or choose "
                    "model.loss.context grid / depth_range / global"
                )
            return instance_contexts(instances, max(1, round(self.settings.min_instance_fraction * height * width)))
        if self.settings.context == "grid":
            return grid_contexts(height, width, self.settings.hdn_levels, device=pseudo_label.device)
        if self.settings.context == "depth_range":
            return depth_range_contexts(pseudo_label, levels=self.settings.hdn_levels)
        return torch.ones(1, height, width, dtype=torch.bool, device=pseudo_label.device)

    def forward(
        self,
        pred: torch.Tensor,
        pseudo_label: torch.Tensor,
        instances: torch.Tensor | None = None,
        ordinal: torch.Tensor | None = None,
        lora_model: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms that are on, and ``loss``, their weighted sum: pred / pseudo_label B x H x W (``output``),
        instances B x H x W ids, ordinal B x P x 5 pairs, lora_model the peft student (for the regulariser)."""
        terms: dict[str, torch.Tensor] = {}
        if self.needs("self_training"):
            terms["self_training"] = sa_hdn_loss(pred, pseudo_label, self.contexts(pseudo_label, instances),
                                                 trim=self.settings.self_training_trim)
        if self.needs("ordinal"):
            if ordinal is None:
                raise ValueError("the ordinal term (model.loss.weak_weight > 0) needs ordinal pairs")
            settings = self.settings
            terms["ordinal"] = ordinal_loss(self.ranked(pred), ordinal, settings.ordinal_margin, settings.ordinal_equal)
        if self.needs("lora_regularizer"):
            if lora_model is None:
                raise ValueError("the LoRA regulariser (model.loss.regularizer_weight > 0) needs the LoRA model")
            terms["lora_regularizer"] = lora_regularizer(lora_model)
        loss = pred.sum() * 0.0  # keeps the graph when every term is off
        for name, value in terms.items():
            loss = loss + self.weights[name] * value
        return terms | {"loss": loss}
