"""A relative model made metric per image by a few known depths (projected LiDAR, a survey): 1 / d = s * out + t."""

from __future__ import annotations

import dataclasses
from typing import Any

from depthadapt.alignment.sparse import SparseFitOptions, align_to_sparse
from depthadapt.models.card import DepthModelCard
from lightning_modules.base import DepthTask

DEFAULT_FIT = SparseFitOptions()


class SparseAlignedDepth(DepthTask):
    """Predict with a relative model (``model``: its card) and align each image to its sparse metric points.

    The datamodule gives the points as the sample's ``depth`` (a map with few valid pixels, or a CSV of x, y, metres:
    ``ImageFolderDataModule(depth_suffix=".csv", predict_with_depth=true)``). Per image the scale and shift of
    ``1 / depth = scale * out + shift`` are fitted as ``fit`` says (``SparseFitOptions``: ``method`` ``tukey``, a
    Tukey biweight M-estimate with the tuning constant ``tukey_c``; ``ransac`` with a threshold of ``inlier_sigmas``
    robust standard deviations; ``lstsq``: see ``depthadapt.alignment.sparse``); images with fewer than
    ``min_points`` points or no fit with a positive scale are flagged as fallbacks in the records, which
    ``DepthMapWriter`` does not write as metric. ``predict`` gives metric depth maps (PNG, npy, point clouds).
    """

    def __init__(self, model: DepthModelCard, fit: SparseFitOptions = DEFAULT_FIT) -> None:
        if model.head != "relative":
            raise ValueError(f"sparse alignment calibrates a relative model: the card's head is {model.head}")
        super().__init__()
        self.save_hyperparameters()
        self.card = model
        self.model = self.build_model(model).requires_grad_(False).eval()
        self.fit = fit

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """``{"name", "kind": "metric", "depth": B x H x W metres, "records": per-image fit}``."""
        if not self.has_images(batch):
            return None
        if "depth" not in batch:
            raise ValueError(
                "sparse alignment needs each image's metric points as its depth map: set data.depth_dir (maps with "
                "few valid pixels, or .csv files of x, y, metres) and data.predict_with_depth true"
            )
        aligned = align_to_sparse(self.card.infer(self.model, batch["image"]), batch["depth"], self.fit)
        records = [
            {"scale": float(s), "shift": float(t), "points": int(n), "inliers": int(i), "fallback": bool(f)}
            for s, t, n, i, f in zip(aligned.scale, aligned.shift, aligned.points, aligned.inliers, aligned.fallback,
                                     strict=True)
        ]
        return {"name": batch["name"], "kind": "metric", "depth": aligned.depth.cpu(), "records": records}

    def manifest(self) -> dict[str, Any]:
        """What wrote a prediction folder: the relative model's card and the fit settings."""
        return {"task": type(self).__name__, "model": self.card.describe(), "fit": dataclasses.asdict(self.fit)}
