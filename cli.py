"""depthadapt command line: `python cli.py {fit,validate,test,predict} --config CONFIG.yaml`."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, Namespace
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

from depthadapt.models import read_checkpoint
from depthadapt.models.card import DepthModelCard
from depthadapt.westar import WeSTARLossSettings


def default_precision() -> str:
    """bf16-mixed on a GPU that supports it, 32-true otherwise (the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


DEFAULT_CONFIG = Path(__file__).resolve().parent / "config_yaml" / "westar.yaml"
"""The experiment a subcommand runs when no `--config` is given (WeSTAR on the synthetic target domain)."""
SUBCOMMANDS = ("fit", "validate", "test", "predict")

TRAINER_DEFAULTS: dict[str, Any] = {
    "default_root_dir": "outputs",  # logs, checkpoints and saved configs stay out of the working directory
    # The same config and seed give the same numbers; "warn" rather than True: a few CUDA kernels (bicubic
    # upsampling's backward) have no deterministic version and would stop the run.
    "deterministic": "warn",
}


OFFICIAL_WEIGHTS = "https://github.com/DepthAnything/Depth-Anything-V2"
"""Where the official Depth Anything V2 checkpoints are released (named in the missing-checkpoint error)."""
SHIPPED_CARD = "config_yaml/models/tiny_foundation_140.yaml"
"""A committed model card that runs without any download (named in the missing-checkpoint error)."""
CARD_FACTS = ("family", "encoder", "head", "max_depth", "input_size", "mean", "std")
"""What makes a model card another model: a checkpoint whose card differs in one of these is another experiment's."""
RENAMED_OPTIONS = {
    "model": {"lora_rank": "lora.rank", "lora_alpha": "lora.alpha", "lora_targets": "lora.targets",
              "lora_dropout": "lora.dropout", "tukey_c": "fit.tukey_c", "inlier_sigmas": "fit.inlier_sigmas",
              "min_points": "fit.min_points",
              **{field.name: f"loss.{field.name}" for field in dataclasses.fields(WeSTARLossSettings)}},
    "data": {name: f"weak_labels.{name}" for name in
             ("instance_source", "mask_cache_dir", "superpixels", "ordinal_file", "ordinal_simulation")},
}
"""Options that moved into a settings group (``LoraSettings``, ``SparseFitOptions``, ``WeSTARLossSettings``,
``WeakLabelSources``): an older config that sets one is told the new name. Only names no task or datamodule still takes
flat."""
log = logging.getLogger("depthadapt.cli")


def quiet_lightning() -> None:
    """Drop Lightning's advertising tips (litmodels, litlogger) and the LeafSpec deprecation warning it triggers in
    torch: neither says anything about the run."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litmodels" not in str(record.msg) and "litlogger" not in str(record.msg)


def card_differences(recorded: Any, configured: Namespace) -> list[str]:
    """`field: recorded vs configured` for each fact of `CARD_FACTS` in which two model cards differ."""
    recorded = dataclasses.asdict(recorded) if isinstance(recorded, DepthModelCard) else dict(recorded)
    configured = configured.as_dict()
    differences = []
    for name in (fact for fact in CARD_FACTS if fact in recorded):
        ours, theirs = recorded.get(name), configured.get(name)
        if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
            ours, theirs = [float(v) for v in ours], [float(v) for v in theirs]
        if ours != theirs:
            differences.append(f"{name} {recorded.get(name)!r} vs {configured.get(name)!r}")
    return differences


def is_card(value: Any) -> bool:
    """Whether a parsed config value is a model card (a Namespace with the card's fields)."""
    return isinstance(value, Namespace) and "encoder" in value and "checkpoint" in value


class DepthAdaptCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, and this project's defaults."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        """`num_threads`: torch's CPU threads; results on the CPU depend on it, so the saved config records it."""
        parser.add_argument(
            "--num_threads", type=int | None, default=None,
            help="torch CPU threads (default: torch's choice, recorded in the saved config); same numbers need the "
                 "same thread count",
        )

    def before_instantiate_classes(self) -> None:
        """Set the thread count, choose the precision from the hardware unless set, check the cards' checkpoints."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("num_threads")
        if threads is not None and threads < 1:
            raise ValueError(f"--num_threads must be >= 1 (torch CPU threads), got {threads}")
        if threads is not None:
            torch.set_num_threads(threads)
        config.num_threads = torch.get_num_threads()
        log.info("torch CPU threads: %d (num_threads; results on the CPU depend on it)", config.num_threads)
        if config.trainer.get("precision") is None:
            config.trainer.precision = default_precision()
        model = config.get("model")
        for name, value in (vars(model.init_args).items() if isinstance(model, Namespace) and "init_args" in model
                            else []):
            if is_card(value) and value.checkpoint is not None and not Path(value.checkpoint).exists():
                raise FileNotFoundError(
                    f"checkpoint not found: {value.checkpoint} (--model.{name}). Official Depth Anything V2 weights "
                    f"are released at {OFFICIAL_WEIGHTS}; a committed model runs now: --model.{name} {SHIPPED_CARD}"
                )

    def _parse_ckpt_path(self) -> None:
        """Refuse a `--ckpt_path` that is not a Lightning checkpoint of the configured experiment (task class and
        model cards); then Lightning's own handling (its hyper-parameters update the config)."""
        config = self.config.get(self.config.get("subcommand") or "", None)
        path = config.get("ckpt_path") if config is not None else None
        if not path or not Path(path).is_file():
            return super()._parse_ckpt_path()
        raw = read_checkpoint(path)
        if not isinstance(raw, dict) or "pytorch-lightning_version" not in raw:
            raise ValueError(
                f"--ckpt_path {path} is not a Lightning checkpoint (.ckpt of a run): a model's weights go into the "
                "model card instead, e.g. --model.model \"{encoder: vits, checkpoint: " + str(path) + "}\""
            )
        hparams = raw.get("hyper_parameters") or {}
        model = config.model
        recorded_class = hparams.get("_class_path")
        if recorded_class is not None and recorded_class != model.class_path:
            raise ValueError(
                f"--ckpt_path {path} was written by {recorded_class} but the config runs {model.class_path}: give "
                "the config of that run (its config.yaml beside the logs) or a checkpoint of this experiment"
            )
        for name, value in vars(model.init_args).items():
            recorded = hparams.get(name)
            if is_card(value) and isinstance(recorded, (DepthModelCard, dict)) and card_differences(recorded, value):
                raise ValueError(
                    f"--ckpt_path {path} was trained with another model card ({name}: "
                    f"{'; '.join(card_differences(recorded, value))}, checkpoint vs config): give the config of "
                    "that run or a checkpoint of this experiment"
                )
        return super()._parse_ckpt_path()


def with_default_config(args: list[str]) -> list[str]:
    """`SUBCOMMAND ...` without `--config` -> `SUBCOMMAND --config DEFAULT_CONFIG ...` (the default experiment)."""
    if args and args[0] in SUBCOMMANDS and not any(a == "--config" or a.startswith("--config=") for a in args):
        return [args[0], "--config", str(DEFAULT_CONFIG), *args[1:]]
    return args


def main(args: ArgsType = None, run: bool = True) -> DepthAdaptCLI:
    """Entry point; `args` as a list (tests) or None (sys.argv). Without `--config`: config_yaml/westar.yaml."""
    if args is None:
        sys.argv[1:] = with_default_config(sys.argv[1:])
    elif isinstance(args, list):
        args = with_default_config(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_lightning()
    torch.set_float32_matmul_precision("high")
    return DepthAdaptCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},  # errors reach `run_from_shell`, which prints them as one line
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def one_line(error: BaseException) -> str:
    """The message of `error` on one line: of a jsonargparse dump of every union alternative, the reason that is
    not "Expected a <class 'NoneType'>" (the key it is about kept in front)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    noise = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
             "- Expected a <class 'NoneType'>")
    reasons = [line.removeprefix("- ") for line in lines[1:] if not line.startswith(noise)]
    reasons = [line for line in reasons if not line.startswith("Problem with given class_path")] or reasons
    if not reasons:
        message = lines[0]
    else:
        head = lines[0].split(":")[0] + ": " if lines[0].startswith("Parser key") else ""
        message = head + reasons[0]
    return with_rename_hint(message)


def with_rename_hint(message: str) -> str:
    """``message``, plus the new name when it refuses an option that moved into a settings group
    (``RENAMED_OPTIONS``)."""
    found = re.match(r"""Parser key "(\w+)": Option '(\w+)' is not accepted""", message)
    moved = RENAMED_OPTIONS.get(found.group(1), {}).get(found.group(2)) if found else None
    if moved is None:
        return message
    return f"{message}: it moved to {found.group(1)}.{moved} (in a config: under init_args.{moved.split('.')[0]})"


def run_from_shell(args: list[str] | None = None) -> None:
    """``python cli.py ...``: a bad argument, file or checkpoint ends with one clear line on stderr and exit code 2,
    not a traceback (``DEPTHADAPT_TRACEBACK=1`` shows it). `args`: as `main` (None: sys.argv)."""
    try:
        main(args)
    except (ArgumentError, ValueError, OSError) as err:
        if os.environ.get("DEPTHADAPT_TRACEBACK"):
            raise
        print(f"error: {one_line(err)} (DEPTHADAPT_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_from_shell()
