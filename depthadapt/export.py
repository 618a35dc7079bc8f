"""Convert any checkpoint this project reads to the official `.pth`, a transformers folder or ONNX.

    python -m depthadapt.export CHECKPOINT --encoder vits [--head relative|metric] [--max-depth M]
        [--checkpoint-prefix teacher] [--base BASE.pth] --to official|hf|onnx OUT

CHECKPOINT: an official `.pth`, a transformers Depth Anything folder, a Lightning `.ckpt` of this project
(a WeSTAR run: its LoRA student by default, `--checkpoint-prefix teacher` for the EMA teacher; LoRA merged),
or a peft LoRA adapter folder on `--base`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from depthadapt.models import (
    ENCODER_CONFIGS,
    HEADS,
    CheckpointMismatchError,
    DepthAnythingV2,
    UnreadableCheckpointError,
    build_depth_model,
    export_onnx,
    merge_lora_adapter,
    onnx_relative_error,
    save_hf,
    save_official,
)
from depthadapt.models.weights.onnx import DEFAULT_OPSET

EXPORT_FORMATS = ("official", "hf", "onnx")
EXPORT_SUFFIXES = {"official": ".pth", "hf": "_hf", "onnx": ".onnx"}  # appended to a stem by `export_all`
CHECK_SIZES = ((518, 518), (266, 350))  # where the export command compares onnxruntime with torch


def export_model(model: nn.Module, fmt: str, out: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (LoRA merged) to `out` in `fmt`: `official` (`.pth` + `.json` sidecar), `hf` (a folder), `onnx`."""
    if fmt == "official":
        return save_official(model, out)
    if fmt == "hf":
        return save_hf(model, out)
    if fmt == "onnx":
        return export_onnx(model, out, opset=opset)
    raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


def export_all(
    model: nn.Module, formats: Sequence[str], directory: str | os.PathLike, stem: str = "adapted_model"
) -> list[Path]:
    """`export_model` in each of `formats` into `directory` as `<stem>.pth`, `<stem>_hf/`, `<stem>.onnx`."""
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"export formats must be among {', '.join(EXPORT_FORMATS)}, got {unknown}")
    return [export_model(model, fmt, Path(directory) / f"{stem}{EXPORT_SUFFIXES[fmt]}") for fmt in formats]


def load_model(
    checkpoint: str | os.PathLike,
    encoder: str,
    head: str = "relative",
    max_depth: float = 80.0,
    checkpoint_prefix: str | None = None,
    base: str | os.PathLike | None = None,
) -> DepthAnythingV2:
    """A model from any checkpoint this project reads; a peft adapter folder is merged onto `base`."""
    checkpoint = Path(checkpoint)
    if (checkpoint / "adapter_config.json").is_file():
        if base is None:
            raise ValueError(f"{checkpoint} is a LoRA adapter: pass the model it adapts with --base BASE.pth")
        return merge_lora_adapter(build_depth_model(encoder, head, max_depth, base), checkpoint)
    if base is not None:
        raise ValueError(f"--base is only for a LoRA adapter folder; {checkpoint} is a full checkpoint")
    return build_depth_model(encoder, head, max_depth, checkpoint, checkpoint_prefix)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The export command's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m depthadapt.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help=".pth, transformers folder, Lightning .ckpt or peft adapter folder")
    parser.add_argument("out", help="output file (.pth, .onnx) or folder (hf)")
    parser.add_argument("--encoder", required=True, choices=sorted(ENCODER_CONFIGS))
    parser.add_argument("--head", default="relative", choices=HEADS)
    parser.add_argument("--max-depth", type=float, default=80.0, help="metres, for a metric head")
    parser.add_argument("--to", required=True, choices=EXPORT_FORMATS, dest="fmt")
    parser.add_argument("--checkpoint-prefix", default=None, help="which model of a .ckpt, e.g. teacher")
    parser.add_argument("--base", default=None, help="the base checkpoint of a LoRA adapter folder")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--skip-check", action="store_true", help="do not compare onnxruntime with torch")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export command; returns the exit status (2 on a bad checkpoint or argument)."""
    args = parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.encoder, args.head, args.max_depth, args.checkpoint_prefix, args.base)
        out = export_model(model, args.fmt, args.out, opset=args.opset)
    except (FileNotFoundError, CheckpointMismatchError, UnreadableCheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.fmt}, {args.encoder}, {args.head} head)")
    if args.fmt == "onnx" and not args.skip_check:
        error = onnx_relative_error(model, out, CHECK_SIZES)
        print(f"onnxruntime vs torch at {CHECK_SIZES}: max relative difference {error:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
