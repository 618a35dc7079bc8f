"""Every command-line entry point (`cli.py` subcommands, `python -m depthadapt.export`) through a table of bad inputs:
exit code != 0, one line on stderr naming the argument or file, no traceback. `depthadapt.annotate` has its own table
(tests/test_annotate.py). Rows run in-process (the entry points' shell wrappers, `cli.run_from_shell` and
`depthadapt.export.main`); two subprocess rows check the real shell (interpreter start, logging, warnings)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import cli
from depthadapt import export
from depthadapt.models import build_depth_model, save_hf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "tests" / "configs" / "test.yaml")
WESTAR_CONFIG = str(ROOT / "config_yaml" / "westar.yaml")
TINY = str(ROOT / "checkpoints" / "tiny_foundation_140.pth")


class Payload:
    """Unpickling this would run `os.system`: what a malicious checkpoint does."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The bad inputs: an official .pth, a malicious pickle, checkpoints of other experiments, broken folders."""
    root = tmp_path_factory.mktemp("bad")
    (root / "images").mkdir()
    torch.save(build_depth_model("vitt").state_dict(), root / "official.pth")
    (root / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=5))
    lightning = {"pytorch-lightning_version": "2.6.0", "state_dict": {}}
    card = {"encoder": "vitt", "head": "metric", "max_depth": 20.0, "checkpoint": None, "input_size": 70}
    torch.save({**lightning, "hyper_parameters": {"_class_path": "lightning_modules.WeSTARAdapter", "model": card}},
               root / "westar.ckpt")
    other_card = {**card, "encoder": "vits", "head": "relative"}
    torch.save({**lightning, "hyper_parameters": {"_class_path": "lightning_modules.SupervisedDepth",
                                                  "model": other_card}}, root / "other_card.ckpt")
    (root / "folder").mkdir()
    (root / "file.txt").write_text("mine")
    (root / "notes").mkdir()
    (root / "notes" / "notes.txt").write_text("mine")
    (root / "model.json").write_text('{"unrelated": true}')
    (root / "bad_config").mkdir()
    (root / "bad_config" / "config.json").write_text("{not json")
    save_hf(build_depth_model("vitt"), root / "no_weight_map")
    (root / "no_weight_map" / "model.safetensors").unlink()
    (root / "no_weight_map" / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    (root / "card.yaml").write_text("encoder: vitt\ncheckpoint: x.pth\nlayers: 4\n")
    (root / "da3.yaml").write_text(f"family: da3\nencoder: da3-small\ncheckpoint: {TINY}\n")
    (root / "old_data.yaml").write_text("data:\n  init_args:\n    ordinal_file: labels.jsonl\n")
    return root


# (row id, arguments given the files folder, what the one line must name)
CLI_ROWS: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("missing official checkpoint", lambda f: ["predict", "--config", str(ROOT / "config_yaml" / "predict.yaml"),
                                               "--data.image_dir", str(f / "images")],
     ["checkpoints/depth_anything_v2_vits.pth", cli.OFFICIAL_WEIGHTS, cli.SHIPPED_CARD]),
    ("unknown option", lambda f: ["test", "--config", TEST_CONFIG, "--data.bogus", "1"], ['"data"', "bogus"]),
    ("option renamed into a settings group", lambda f: ["fit", "--config", WESTAR_CONFIG, "--model.lora_rank", "4"],
     ["lora_rank", "model.lora.rank"]),
    ("WeSTAR loss option renamed into its group", lambda f: ["fit", "--config", WESTAR_CONFIG, "--model.weak_weight",
                                                             "0"], ["weak_weight", "model.loss.weak_weight"]),
    ("older config with a renamed option", lambda f: ["fit", "--config", WESTAR_CONFIG, "--config",
                                                      str(f / "old_data.yaml")],
     ["ordinal_file", "data.weak_labels.ordinal_file"]),
    ("missing config", lambda f: ["fit", "--config", str(f / "nope.yaml")], ["nope.yaml"]),
    ("unknown subcommand", lambda f: ["frobnicate"], ["frobnicate"]),
    ("threads below 1", lambda f: ["test", "--config", TEST_CONFIG, "--num_threads", "0"], ["--num_threads"]),
    ("official .pth as --ckpt_path", lambda f: ["test", "--config", TEST_CONFIG, "--data.image_dir", str(f / "images"),
                                                "--ckpt_path", str(f / "official.pth")],
     ["official.pth", "not a Lightning checkpoint", "--model.model"]),
    ("malicious pickle as --ckpt_path", lambda f: ["test", "--config", TEST_CONFIG, "--ckpt_path",
                                                   str(f / "evil.ckpt")],
     ["evil.ckpt", "pickle of Python objects", "system"]),
    ("another experiment's checkpoint", lambda f: ["test", "--config", TEST_CONFIG, "--ckpt_path",
                                                   str(f / "westar.ckpt")],
     ["westar.ckpt", "lightning_modules.WeSTARAdapter", "lightning_modules.SupervisedDepth"]),
    ("another model card's checkpoint", lambda f: ["fit", "--config", TEST_CONFIG, "--ckpt_path",
                                                   str(f / "other_card.ckpt")],
     ["other_card.ckpt", "encoder 'vits' vs 'vitt'", "head 'relative' vs 'metric'"]),
]

EXPORT_ROWS: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("official into a folder", lambda f: [TINY, str(f / "folder"), "--to", "official"], ["folder", "is a folder"]),
    ("onnx into a folder", lambda f: [TINY, str(f / "folder"), "--to", "onnx"], ["folder", "is a folder"]),
    ("onnx over a foreign file", lambda f: [TINY, str(f / "file.txt"), "--to", "onnx"], ["file.txt", "--overwrite"]),
    ("hf onto a file", lambda f: [TINY, str(f / "file.txt"), "--to", "hf"], ["file.txt", "is a file"]),
    ("hf into a foreign folder", lambda f: [TINY, str(f / "notes"), "--to", "hf"], ["notes", "--overwrite"]),
    ("weights named like their sidecar", lambda f: [TINY, str(f / "x.json"), "--to", "official"],
     ["x.json", "sidecar"]),
    ("sidecar over a foreign file", lambda f: [TINY, str(f / "model.pth"), "--to", "official"],
     ["model.json", "--overwrite"]),
    ("invalid config.json", lambda f: [str(f / "bad_config"), str(f / "o1.pth"), "--to", "official"],
     ["bad_config/config.json"]),
    ("shard index without weight_map", lambda f: [str(f / "no_weight_map"), str(f / "o2.pth"), "--to", "official",
                                                  "--encoder", "vitt"],
     ["model.safetensors.index.json", "weight_map"]),
    ("malicious pickle", lambda f: [str(f / "evil.ckpt"), str(f / "o3.pth"), "--to", "official", "--encoder", "vitt"],
     ["evil.ckpt", "pickle of Python objects"]),
    ("missing checkpoint", lambda f: [str(f / "gone.pth"), str(f / "o4.pth"), "--to", "official"], ["gone.pth"]),
    ("a DA3 card", lambda f: [str(f / "da3.yaml"), str(f / "o6.onnx"), "--to", "onnx"], ["da3", "Depth Anything V2"]),
    ("unknown card field", lambda f: [str(f / "card.yaml"), str(f / "o5.pth"), "--to", "official"],
     ["card.yaml", "layers"]),
]


def assert_one_line(stderr: str, names: list[str]) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "weights_only=False" not in lines[0]


@pytest.mark.parametrize(("args", "names"), [row[1:] for row in CLI_ROWS], ids=[row[0] for row in CLI_ROWS])
def test_cli_bad_input_is_one_line(files: Path, args, names, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # as from the shell: the arguments are `args` alone
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit) as exit_:
        cli.run_from_shell(args(files))
    torch.set_num_threads(threads)
    assert exit_.value.code == 2
    assert_one_line(capsys.readouterr().err, names)


@pytest.mark.parametrize(("args", "names"), [row[1:] for row in EXPORT_ROWS], ids=[row[0] for row in EXPORT_ROWS])
def test_export_bad_input_is_one_line(files: Path, args, names, capsys) -> None:
    before = {p: p.stat().st_mtime_ns for p in files.rglob("*")}
    assert export.main(args(files)) == 2
    assert_one_line(capsys.readouterr().err, names)
    assert {p: p.stat().st_mtime_ns for p in files.rglob("*")} == before  # nothing written, nothing removed


def shell_error_lines(stderr: str) -> list[str]:
    """stderr without the log records the run printed before failing (`Seed set`, `INFO ...`)."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("INFO ", "Seed set"))]


def test_shell_entry_points_exit_with_one_line(files: Path) -> None:
    runs = [
        [sys.executable, "cli.py", "predict", "--config", "config_yaml/predict.yaml",
         "--data.image_dir", str(files / "images")],
        [sys.executable, "-m", "depthadapt.export", str(files / "evil.ckpt"), str(files / "o.onnx"), "--to", "onnx",
         "--encoder", "vitt"],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEPTHADAPT_TRACEBACK": ""}
    started = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for command in runs]  # side by side: each is mostly interpreter start-up
    for process, name in zip(started, ["checkpoints/depth_anything_v2_vits.pth", "evil.ckpt"], strict=True):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, stderr
        lines = shell_error_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], stderr
        assert "Traceback" not in stderr and "warn" not in stderr.lower()
