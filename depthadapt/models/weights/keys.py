"""Weights of this project's models, the leaf of ``depthadapt.models.weights``: the official key roots, the errors,
strict state-dict checks and the safe reading of a checkpoint file.

Every file is read with ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers (plus
the few harmless classes Lightning stores in its hyper-parameters), never code to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["MODEL_KEY_ROOTS", "CheckpointMismatchError", "UnreadableCheckpointError", "allow_in_checkpoints",
           "check_state_dict", "describe_checkpoint_error", "listing", "read_checkpoint", "safe_globals"]

MODEL_KEY_ROOTS = ("pretrained.", "depth_head.")



_MAX_LISTED = 20



class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys, shapes or recorded settings do not match the model."""



class UnreadableCheckpointError(ValueError):
    """A checkpoint file that cannot be read safely: corrupt, truncated, or holding pickled code."""



def listing(title: str, names: list[str]) -> str:
    shown = "\n    ".join(names[:_MAX_LISTED])
    more = f"\n    ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"  {title} ({len(names)}):\n    {shown}{more}"



_CHECKPOINT_CLASSES: list[type] = []


def allow_in_checkpoints(cls: type) -> type:
    """Allow a data-only class of this project (e.g. a model card) in the checkpoints ``read_checkpoint`` reads."""
    if cls not in _CHECKPOINT_CLASSES:
        _CHECKPOINT_CLASSES.append(cls)
    return cls


def safe_globals() -> list[Any]:
    """Classes Lightning may pickle into a `.ckpt`'s hyper-parameters that carry data only."""
    allowed: list[Any] = [
        argparse.Namespace,
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.WindowsPath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
    ]
    with contextlib.suppress(ImportError):
        from jsonargparse import Namespace

        allowed.append(Namespace)
    return [*allowed, *_CHECKPOINT_CLASSES]


_REFUSED = (
    "depthadapt reads checkpoints with torch.load(weights_only=True) and never runs code from a file; ask for the "
    "weights as a plain state dict of tensors or as safetensors"
)


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickled_globals(path: Path) -> list[str]:
    """The Python objects (`module.name`) a plain pickle file would import, read without unpickling; [] for a
    torch.save zip file or a file that is not a pickle."""
    if zipfile.is_zipfile(path):
        return []
    names: list[str] = []
    strings: list[Any] = []  # the strings pushed so far, for STACK_GLOBAL's module and name
    memo: dict[Any, Any] = {}
    try:
        with open(path, "rb") as file:
            for opcode, arg, _ in pickletools.genops(file):
                if opcode.name in _STRING_OPS:
                    strings.append(arg)
                elif opcode.name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                    strings.append(memo.get(arg))
                elif opcode.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle, or a truncated one: what was found so far
        pass
    return list(dict.fromkeys(names))


def describe_checkpoint_error(path: Path, error: BaseException) -> UnreadableCheckpointError:
    """A clear one-line error for a checkpoint `torch.load` could not read: names the file, says what it is and
    what to do (never torch's advice to load it unsafely)."""
    text = str(error)
    blocked = re.search(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", text)
    if blocked:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # a plain pickle, not a torch.save zip file
            names = ""
        return UnreadableCheckpointError(
            f"{path} holds pickled Python objects, not only weights ({names or blocked.group(1) or blocked.group(2)}): "
            f"refused. {_REFUSED}"
        )
    objects = pickled_globals(path)
    if objects:
        return UnreadableCheckpointError(
            f"{path} is a pickle of Python objects, not only weights ({', '.join(objects)}): refused, nothing in it "
            f"was run. {_REFUSED}"
        )
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand:
        return UnreadableCheckpointError(
            f"cannot read checkpoint {path}: not a file torch.save wrote (pickle operation {operand.group(1)} is not "
            "allowed in a weights-only load), so it is corrupt or a pickle of Python objects; nothing in it was run. "
            "Download or export it again (as a state dict of tensors or as safetensors)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    reason = lines[0] if lines else type(error).__name__
    return UnreadableCheckpointError(
        f"cannot read checkpoint {path}: {reason}. The file is truncated, corrupt or not written by torch.save "
        "(depthadapt reads checkpoints with torch.load(weights_only=True)); download or export it again"
    )



def read_checkpoint(path: str | os.PathLike) -> Any:
    """`torch.load` a `.pth` / `.ckpt` on the CPU safely (`weights_only=True`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (an official .pth, a Lightning .ckpt or a transformers folder)"
        )
    try:
        # torch warns about pickle protocols and retrying with weights_only=False: the error we raise says enough
        with torch.serialization.safe_globals(safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise describe_checkpoint_error(path, error) from error



def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = [f"checkpoint {source} does not match the model:"]
        if missing:
            parts.append(listing("missing keys", missing))
        if unexpected:
            parts.append(listing("unexpected keys", unexpected))
        if wrong_shape:
            parts.append(listing("wrong shapes", wrong_shape))
        parts.append("  (is `encoder` or `head` set to what the checkpoint was trained with?)")
        raise CheckpointMismatchError("\n".join(parts))

