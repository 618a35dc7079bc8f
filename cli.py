"""depthadapt command line: `python cli.py {fit,validate,test,predict} --config CONFIG.yaml`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI


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


class DepthAdaptCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, and this project's defaults."""

    def before_instantiate_classes(self) -> None:
        """Choose the precision from the hardware unless the config or command line set it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("precision") is None:
            config.trainer.precision = default_precision()


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
    torch.set_float32_matmul_precision("high")
    return DepthAdaptCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def run_from_shell() -> None:
    """``python cli.py ...``: a bad argument, file or checkpoint ends with one clear line, not a traceback
    (``DEPTHADAPT_TRACEBACK=1`` shows it)."""
    try:
        main()
    except (ValueError, OSError) as err:
        if os.environ.get("DEPTHADAPT_TRACEBACK"):
            raise
        print(f"error: {err}\n(DEPTHADAPT_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_from_shell()
