"""LoRA adapters (peft) on a depth model's encoder, and their export in peft's own format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from depthadapt.io import atomic_directory
from depthadapt.models.weights.keys import CheckpointMismatchError, allow_in_checkpoints


@dataclass
class LoraSettings:
    """The LoRA adapters of a student (peft's ``LoraConfig``): ``rank`` r, ``alpha`` (updates scaled by alpha / r),
    ``targets`` (module-name suffixes: ``qkv`` is every encoder attention projection, the paper's placement) and
    ``dropout``."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("qkv",)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoRA targets must name at least one module (e.g. [qkv])")
        self.targets = tuple(self.targets)


allow_in_checkpoints(LoraSettings)  # Lightning stores a task's settings in its checkpoint's hyper-parameters


def add_lora(model: nn.Module, settings: LoraSettings | None = None, within: str | None = None) -> nn.Module:
    """Wrap `model` in a peft LoRA model: adapters on the modules `settings.targets` names, all else frozen.

    Targets are module-name suffixes (peft's rule): `qkv` adapts every encoder attention projection of
    Depth Anything V2 (the DPT head has none). `within`: only modules whose name starts with it (e.g.
    `backbone.pretrained.` for Depth Anything 3's encoder). A target that matches nothing is an error.
    """
    # peft imports transformers (seconds); only these functions need it.
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    target_modules = settings.targets
    names = [name for name, _ in model.named_modules() if within is None or name.startswith(within)]
    matched = {t: [n for n in names if n == t or n.endswith(f".{t}")] for t in target_modules}
    missing = [t for t, found in matched.items() if not found]
    if missing:
        where = "" if within is None else f" under {within!r}"
        raise ValueError(f"LoRA target modules {list(target_modules)} not found in the model{where} "
                         f"(missing: {missing})")
    targets = list(target_modules) if within is None else sorted({n for found in matched.values() for n in found})
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=targets,
                        lora_dropout=settings.dropout)
    return get_peft_model(model, config)


def save_lora_adapter(model: nn.Module, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the LoRA adapter of a peft model alone (`adapter_config.json`, `adapter_model.safetensors`).

    Written by `atomic_directory` (kind `peft`): an earlier adapter export is replaced, any other non-empty
    folder refused unless `overwrite` (then only the adapter's files are replaced); load it with
    `peft.PeftModel.from_pretrained(build_depth_model(...), directory)`.
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} is not a peft model: nothing to save as an adapter")
    with atomic_directory(directory, "peft", overwrite) as staging:
        model.save_pretrained(staging)
    return Path(directory)


def merge_lora_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """`model` (the adapter's base, weights loaded) with the peft adapter folder `directory` merged in."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory} is not a peft adapter folder (no adapter_config.json)")
    try:
        adapted = PeftModel.from_pretrained(model, directory)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointMismatchError(f"the LoRA adapter {directory} does not fit this base model: {error}") from error
    return adapted.merge_and_unload()
