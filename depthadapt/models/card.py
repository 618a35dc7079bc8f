"""Model cards: a checkpoint together with the facts needed to run it (as timm's ``PretrainedCfg``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
import yaml

from depthadapt.io import file_sha256, make_intrinsics
from depthadapt.models.da3.build import build_da3_model
from depthadapt.models.da3.model import DA3_CONFIGS, metric_depth
from depthadapt.models.depth_anything import ENCODER_CONFIGS, HEADS, Head
from depthadapt.models.dinov2 import PATCH_SIZE
from depthadapt.models.factory import build_depth_model
from depthadapt.models.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, infer, network_input_size
from depthadapt.models.weights.keys import allow_in_checkpoints

FAMILIES = ("dav2", "da3")


@dataclass
class DepthModelCard:
    """A Depth Anything V2 or 3 model and how to run it: architecture, weights, input size and normalisation.

    ``family: da3``: ``encoder`` names the Depth Anything 3 model (`DA3_CONFIGS`: da3-small, da3-base, da3mono-large,
    da3metric-large, da3-tiny), ``head`` is ``relative`` (its depth, up to scale) or ``metric`` (da3metric-large);
    ``checkpoint``: a DA3 hub folder, a ``.pth`` of the network's keys or a Lightning ``.ckpt`` of ours.

    ``input_size`` is the lower bound of the shorter network side (the official preprocessing keeps the aspect
    ratio, sides multiples of 14); ``mean`` / ``std`` normalise images in [0, 1]. Cards of the shipped models live
    in ``config_yaml/models/`` and are referenced by path from experiment configs.
    """

    encoder: Literal["vits", "vitb", "vitl", "vitt", "da3-small", "da3-base", "da3mono-large", "da3metric-large",
                     "da3-tiny"] = "vits"
    head: Head = "relative"
    max_depth: float = 80.0
    checkpoint: str | None = None
    checkpoint_prefix: str | None = None
    input_size: int = 518
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    family: str = "dav2"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model card: family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "da3":
            if self.encoder not in DA3_CONFIGS:
                raise ValueError(f"model card: a da3 card's encoder names the model, one of {sorted(DA3_CONFIGS)}; "
                                 f"got {self.encoder!r}")
            if (self.head == "metric") != (self.encoder == "da3metric-large"):
                raise ValueError(f"model card: a da3 card's head is metric for da3metric-large and relative for the "
                                 f"other models; got {self.encoder} with head {self.head!r}")
        elif self.encoder not in ENCODER_CONFIGS:
            raise ValueError(f"model card: encoder must be one of {sorted(ENCODER_CONFIGS)}, got {self.encoder!r}")
        if self.head not in HEADS:
            raise ValueError(f"model card: head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.input_size, int) or self.input_size < PATCH_SIZE:
            raise ValueError(
                f"model card: input_size must be an integer >= {PATCH_SIZE} (the shorter network side in pixels, "
                f"518 for the official models), got {self.input_size!r}"
            )
        if self.max_depth <= 0:
            raise ValueError(f"model card: max_depth must be > 0 (metres), got {self.max_depth}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"model card: mean and std need 3 values (RGB), std > 0; got {self.mean}, {self.std}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DepthModelCard:
        """The card in a YAML file (``config_yaml/models/*.yaml``); its checkpoint path is as written (relative to
        the working directory, as the command line reads it)."""
        path = Path(path)
        try:
            facts = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"model card {path} is not valid YAML: {str(error).splitlines()[0]}") from error
        if not isinstance(facts, dict):
            raise ValueError(f"model card {path} must be a mapping of card fields, got {type(facts).__name__}")
        unknown = sorted(set(facts) - {field.name for field in fields(cls)})
        if unknown:
            known = [field.name for field in fields(cls)]
            raise ValueError(f"model card {path}: unknown fields {unknown} (a card has {known})")
        return cls(**facts)

    @property
    def output(self) -> str:
        """What the model outputs: ``disparity`` (DAv2 relative), ``depth`` (DA3 relative, up to scale) or
        ``metric`` (metres; DA3Metric: depth at a focal length of 300 px)."""
        if self.head == "metric":
            return "metric"
        return "depth" if self.family == "da3" else "disparity"

    @property
    def alignment_space(self) -> str:
        """Where a relative output is aligned to ground truth: ``depth`` for DA3 (it predicts depth up to scale,
        aligned in depth space), ``disparity`` otherwise."""
        return "depth" if self.output == "depth" else "disparity"

    def build(self) -> torch.nn.Module:
        """The model with the card's weights (random weights when ``checkpoint`` is None)."""
        if self.family == "da3":
            return build_da3_model(self.encoder, self.checkpoint, self.checkpoint_prefix)
        return build_depth_model(self.encoder, self.head, self.max_depth, self.checkpoint, self.checkpoint_prefix)

    @property
    def preprocessing(self) -> Preprocessing:
        """The card's input size and normalisation, as exports record them."""
        return Preprocessing(self.input_size, self.mean, self.std)

    def infer(self, model: torch.nn.Module, image: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
        """B x 3 x H x W images in [0, 1], any size -> B x H x W output at the card's input size, upsampled back;
        ``flip_tta``: the mean with the flipped-back output of the mirrored images."""
        return infer(model, image, self.input_size, self.mean, self.std, flip_tta)

    @property
    def focal_scaled(self) -> bool:
        """Whether the output is metric only given the focal length (DA3Metric: depth at a focal length of 300 px)."""
        return self.family == "da3" and self.head == "metric"

    def to_metres(self, output: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
        """DA3Metric's B x H x W output upsampled to the image (`infer`) and the image's B x 4 (fx, fy, cx, cy) in
        pixels -> metres, by the official convention ``focal * output / 300`` with ``focal`` the mean of fx and fy
        of the network input (the image resized to the card's input size), as the official preprocessing scales K."""
        if not self.focal_scaled:
            raise ValueError(f"to_metres is for a DA3Metric card; this {self.encoder} card's output is {self.output}")
        height, width = output.shape[-2:]
        net_height, net_width = network_input_size(height, width, self.input_size)
        fx, fy = intrinsics[:, 0].to(output) * net_width / width, intrinsics[:, 1].to(output) * net_height / height
        return metric_depth(output, (fx + fy) / 2)

    def predict(
        self,
        model: torch.nn.Module,
        image: torch.Tensor,
        intrinsics: torch.Tensor | None = None,
        focal_length: float | None = None,
        flip_tta: bool = False,
    ) -> torch.Tensor:
        """`infer`, and for a DA3Metric card its metres (`to_metres`) from the B x 4 ``intrinsics`` of the images,
        else one ``focal_length`` in their pixels: B x 3 x H x W in [0, 1] -> B x H x W."""
        if self.focal_scaled and intrinsics is None and focal_length is None:
            raise ValueError(f"{self.encoder} gives metres only with the focal length: use a dataset whose samples "
                             "carry intrinsics, or set the task's focal_length (pixels)")
        output = self.infer(model, image, flip_tta)
        if not self.focal_scaled:
            return output
        if intrinsics is None:
            height, width = image.shape[-2:]
            intrinsics = image.new_tensor(make_intrinsics(height, width, focal=focal_length)).expand(len(image), 4)
        return self.to_metres(output, intrinsics)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images in [0, 1] -> the network's normalised input (no resizing)."""
        mean = image.new_tensor(self.mean).view(1, 3, 1, 1)
        std = image.new_tensor(self.std).view(1, 3, 1, 1)
        return (image - mean) / std

    def describe(self) -> dict:
        """The card as a JSON-able dict with the checkpoint file's SHA-256 (what an output manifest records)."""
        facts = asdict(self)
        if self.checkpoint is not None and Path(self.checkpoint).is_file():
            facts["checkpoint_sha256"] = file_sha256(self.checkpoint)
        return facts


allow_in_checkpoints(DepthModelCard)  # Lightning stores a task's card in its checkpoint's hyper-parameters
