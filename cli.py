"""depthadapt command line: `python cli.py {fit,validate,test,predict} --config CONFIG.yaml`."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI


def default_precision() -> str:
    """bf16-mixed on a GPU that supports it, 32-true otherwise (the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


TRAINER_DEFAULTS: dict[str, Any] = {
    "default_root_dir": "outputs",  # logs, checkpoints and saved configs stay out of the working directory
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "outputs", "name": "depthadapt"},
    },
}


class DepthAdaptCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, and this project's defaults."""

    def before_instantiate_classes(self) -> None:
        """Choose the precision from the hardware unless the config or command line set it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("precision") is None:
            config.trainer.precision = default_precision()


def main(args: ArgsType = None, run: bool = True) -> DepthAdaptCLI:
    """Entry point; `args` as a list (tests) or None (sys.argv)."""
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


if __name__ == "__main__":
    main()
