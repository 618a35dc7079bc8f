"""Checkpoints are read without running pickled code; unreadable files and wrong heads fail clearly."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import torch

from depthadapt.models import (
    CheckpointMismatchError,
    UnreadableCheckpointError,
    build_depth_model,
    load_checkpoint,
    save_official,
)
from depthadapt.models.card import DepthModelCard

pytestmark = pytest.mark.unit


class Payload:
    """Unpickling this creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def vitt_state() -> dict[str, torch.Tensor]:
    return build_depth_model("vitt").state_dict()


@pytest.mark.parametrize("kind", ["pth", "ckpt", "raw_pickle", "raw_pickle5"])
def test_pickle_payload_never_runs(tmp_path: Path, vitt_state, kind: str, recwarn) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"evil.{'pth' if kind.startswith('raw_pickle') else kind}"
    if kind == "pth":
        torch.save({**vitt_state, "extra": Payload(marker)}, path)
    elif kind == "ckpt":
        torch.save({"state_dict": vitt_state, "hyper_parameters": {"x": Payload(marker)}}, path)
    else:
        path.write_bytes(pickle.dumps({"pretrained.x": Payload(marker)}, protocol=2 if kind == "raw_pickle" else 5))
    with pytest.raises(UnreadableCheckpointError) as error:
        build_depth_model("vitt", checkpoint=path)
    message = str(error.value)
    assert str(path) in message and "weights_only=True" in message and "\n" not in message
    assert "pickle" in message and "Python objects" in message and "open" in message  # what it is and holds
    assert "truncated" not in message and "corrupt" not in message
    assert "weights_only=False" not in message and not [w for w in recwarn if "weights_only" in str(w.message)]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [("truncated.pth", None), ("random.pth", bytes(range(256)) * 8), ("empty.ckpt", b"")],
)
def test_corrupt_files_name_the_file(tmp_path: Path, vitt_state, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(vitt_state, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableCheckpointError, match="(?i)download or export it again") as error:
        build_depth_model("vitt", checkpoint=path)
    assert f"cannot read checkpoint {path}" in str(error.value)


def test_missing_file_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        build_depth_model("vitt", checkpoint=tmp_path / "nope.ckpt")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointMismatchError, match="merge_lora_adapter"):
        build_depth_model("vitt", checkpoint=tmp_path / "adapter")


def test_lightning_hyper_parameters_load_safely(tmp_path: Path, vitt_state) -> None:
    path = tmp_path / "run.ckpt"
    hparams = {"model": DepthModelCard(encoder="vitt"), "config": argparse.Namespace(a=1), "root": Path("/x")}
    torch.save({"state_dict": {f"model.{k}": v for k, v in vitt_state.items()}, "hyper_parameters": hparams}, path)
    loaded = build_depth_model("vitt", checkpoint=path)
    assert torch.equal(loaded.state_dict()["pretrained.pos_embed"], vitt_state["pretrained.pos_embed"])
    with pytest.raises(CheckpointMismatchError, match=r"head 'relative' \(the model has 'metric'\)"):
        build_depth_model("vitt", head="metric", checkpoint=path)


def test_exported_head_is_recorded_and_checked(tmp_path: Path) -> None:
    metric = build_depth_model("vitt", head="metric", max_depth=20.0)
    path = save_official(metric, tmp_path / "adapted_model.pth")
    assert json.loads((tmp_path / "adapted_model.json").read_text())["head"] == "metric"
    assert all(k.startswith(("pretrained.", "depth_head.")) for k in torch.load(path, weights_only=True))
    build_depth_model("vitt", head="metric", max_depth=20.0, checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match=r"adapted_model.json.*head 'metric' \(the model has 'relative'"):
        build_depth_model("vitt", checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match=r"max_depth 20.0 \(the model has 80.0\)"):
        build_depth_model("vitt", head="metric", max_depth=80.0, checkpoint=path)


def test_official_file_names_warn_on_the_other_head(tmp_path: Path, vitt_state) -> None:
    metric_name = tmp_path / "depth_anything_v2_metric_hypersim_vitt.pth"
    relative_name = tmp_path / "depth_anything_v2_vitt.pth"
    for path in (metric_name, relative_name):
        torch.save(vitt_state, path)
    with pytest.warns(UserWarning, match="looks like a metric checkpoint"):
        load_checkpoint(build_depth_model("vitt"), metric_name)
    with pytest.warns(UserWarning, match="looks like a relative checkpoint"):
        load_checkpoint(build_depth_model("vitt", head="metric"), relative_name)
