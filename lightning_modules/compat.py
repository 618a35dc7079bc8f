"""Work-arounds for Lightning's behaviour, each a small callback with the upstream issue it answers."""

from __future__ import annotations

from typing import Any

from lightning import Callback, LightningModule, Trainer


class ResumeEpochEndCheckpoints(Callback):
    """Resume an epoch-end checkpoint as "that epoch is complete", so a fit with ``max_steps`` continues.

    Lightning (2.6) saves epoch-end checkpoints with the epoch processed but not yet completed; resumed in a
    step-limited run, it processes that epoch a second time and stops early with "max_epochs reached" (measured:
    step 8 of 12). Upstream: Lightning-AI/pytorch-lightning#19617 (resuming at an epoch boundary with ``max_steps``).
    Callbacks restore before the loops do, so the loop state is mended before Lightning reads it.
    """

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        epoch, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
        if not epoch or not batches or not batches.get("is_last_batch"):
            return
        for part in ("total", "current"):
            if epoch[part]["completed"] == epoch[part]["processed"] - 1:
                epoch[part]["completed"] = epoch[part]["processed"]
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False
