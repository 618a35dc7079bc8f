"""The compact metric student of papers/003 (Sec. 3.3), trained on a folder of pseudo-labels."""

from __future__ import annotations

from depthadapt.metrics import format_comparison_table
from depthadapt.pseudo_labels import TABLE_COLUMNS
from lightning_modules.supervised import SupervisedDepth


class PseudoLabelStudent(SupervisedDepth):
    """``SupervisedDepth`` with a metric head and the paper's student settings as defaults.

    Depth Anything V2 Small (``vits``), SiLog (lambda 0.5), AdamW with the encoder at 5e-6 and the decoder
    at 10x, evaluated at the KITTI input of 196 px (196 x 644). Train on the labels of ``PseudoLabelWriter``
    with ``ImageFolderDataModule(depth_dir=<labels>, depth_scale=1/256, hflip=true)`` (horizontal flips come
    from the datamodule); ``labels`` names the training labels in the printed Table 3 row.
    """

    def __init__(
        self,
        encoder: str = "vits",
        max_depth: float = 80.0,
        checkpoint: str | None = None,
        checkpoint_prefix: str | None = None,
        input_size: int = 196,
        lr: float = 5e-6,
        decoder_lr_factor: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        silog_lambda: float = 0.5,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
        labels: str = "pseudo-labels",
    ) -> None:
        super().__init__(
            encoder=encoder, head="metric", max_depth=max_depth, checkpoint=checkpoint,
            checkpoint_prefix=checkpoint_prefix, input_size=input_size, lr=lr, decoder_lr_factor=decoder_lr_factor,
            weight_decay=weight_decay, warmup_steps=warmup_steps, silog_lambda=silog_lambda,
            eval_min_depth=eval_min_depth, eval_max_depth=eval_max_depth, eval_crop=eval_crop,
        )

    def on_test_epoch_end(self) -> None:
        """Log ``test/<metric>`` and print the paper's Table 3 row of this student."""
        values = self._log_metrics(self.test_metrics, "test")
        if self.trainer.is_global_zero:
            title = f"student ({self.hparams.encoder}) against ground truth, {int(values['images'])} images"
            print(format_comparison_table({self.hparams.labels: values}, columns=TABLE_COLUMNS, title=title))
