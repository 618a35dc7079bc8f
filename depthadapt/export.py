"""Convert any checkpoint this project reads to the official `.pth`, a transformers folder or ONNX.

    python -m depthadapt.export SOURCE OUT --to official|hf|onnx [--encoder vits] [--head relative|metric]
        [--max-depth M] [--input-size N] [--checkpoint-prefix teacher] [--base BASE.pth] [--overwrite]

SOURCE: a model card (`config_yaml/models/*.yaml`: encoder, head, input size and its weights), an official `.pth`,
a transformers Depth Anything folder, a Lightning `.ckpt` of this project (a WeSTAR run: its LoRA student by default,
`--checkpoint-prefix teacher` for the EMA teacher; LoRA merged), or a peft LoRA adapter folder on `--base`.
Encoder, head, max depth, input size and normalisation come from the card or what the checkpoint records (an
official `.pth` without our sidecar: encoder from its weights, head from its name, input size 518); the options
override them. The export records the input size and normalisation: the transformers `preprocessor_config.json`,
the ONNX metadata, the official `.json` sidecar.

OUT is written only where the export may: a new path, an earlier export of the same kind (replaced), or with
`--overwrite` (a folder keeps every file the export does not write).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from depthadapt.io import check_export_directory, check_replaceable_file
from depthadapt.models import (
    ENCODER_CONFIGS,
    HEADS,
    DepthModelCard,
    export_onnx,
    merge_lora_adapter,
    onnx_relative_error,
    save_hf,
    save_official,
)
from depthadapt.models.da3.export import DA3_EXPORT_SUFFIXES, da3_network, export_da3
from depthadapt.models.loader import checkpoint_card
from depthadapt.models.weights.official import check_official_target
from depthadapt.models.weights.onnx import DEFAULT_OPSET, is_onnx_export
from depthadapt.models.weights.transformers import HF_EXPORT_KIND

EXPORT_FORMATS = ("official", "hf", "onnx")
EXPORT_SUFFIXES = {"official": ".pth", "hf": "_hf", "onnx": ".onnx"}  # appended to a stem by `export_all`
CHECK_SIZES = ((518, 518), (266, 350), (100, 130))  # where the export command compares onnxruntime with torch
CARD_SUFFIXES = (".yaml", ".yml")


def check_export_target(fmt: str, out: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise (one line naming `out`) unless an export in `fmt` may write `out`; see the module docstring."""
    if fmt == "official":
        check_official_target(out, overwrite)
    elif fmt == "hf":
        check_export_directory(out, HF_EXPORT_KIND, overwrite)
    elif fmt == "onnx":
        check_replaceable_file(out, "ONNX export of depthadapt", is_onnx_export, overwrite)
    else:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    card: DepthModelCard | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (LoRA merged) to `out` in `fmt`: `official` (`.pth` + `.json` sidecar), `hf` (a folder), `onnx`.

    `card` says how the model is run (input size, normalisation; the official 518 / ImageNet without one); the
    export records it. A target that is not an earlier export of the same kind is refused unless `overwrite`.
    A Depth Anything 3 model: `official` is its hub folder (`export_da3`).
    """
    if da3_network(model) is not None:
        return export_da3(model, fmt, out, opset, overwrite)
    preprocessing = (card or DepthModelCard()).preprocessing
    if fmt == "official":
        return save_official(model, out, overwrite, preprocessing)
    if fmt == "hf":
        return save_hf(model, out, overwrite, preprocessing)
    if fmt == "onnx":
        return export_onnx(model, out, opset=opset, overwrite=overwrite, preprocessing=preprocessing)
    raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


def export_all(
    model: nn.Module,
    formats: Sequence[str],
    directory: str | os.PathLike,
    stem: str = "adapted_model",
    card: DepthModelCard | None = None,
) -> list[Path]:
    """`export_model` in each of `formats` into `directory` as `<stem>.pth`, `<stem>_hf/`, `<stem>.onnx`.

    Every target is checked before anything is written (an earlier export of the same kind is replaced).
    """
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"export formats must be among {', '.join(EXPORT_FORMATS)}, got {unknown}")
    suffixes = DA3_EXPORT_SUFFIXES if da3_network(model) is not None else EXPORT_SUFFIXES
    targets = [(fmt, Path(directory) / f"{stem}{suffixes.get(fmt, '')}") for fmt in formats]
    if suffixes is EXPORT_SUFFIXES:
        for fmt, out in targets:
            check_export_target(fmt, out)
    return [export_model(model, fmt, out, card=card) for fmt, out in targets]


def source_card(
    source: str | os.PathLike,
    encoder: str | None = None,
    head: str | None = None,
    max_depth: float | None = None,
    input_size: int | None = None,
    checkpoint_prefix: str | None = None,
    base: str | os.PathLike | None = None,
) -> DepthModelCard:
    """The card of what `source` holds (see the module docstring); given arguments override its facts.

    For a peft adapter folder it is the card of `base`, the model the adapter is merged onto.
    """
    source = Path(source)
    if (source / "adapter_config.json").is_file():
        if base is None:
            raise ValueError(f"{source} is a LoRA adapter: pass the model it adapts with --base BASE.pth")
        card = checkpoint_card(base)
    elif base is not None:
        raise ValueError(f"--base is only for a LoRA adapter folder; {source} is a full checkpoint")
    elif source.suffix in CARD_SUFFIXES:
        if checkpoint_prefix is not None:
            raise ValueError("--checkpoint-prefix is for a checkpoint; a model card states its own checkpoint_prefix")
        card = DepthModelCard.from_yaml(source)
    else:
        card = checkpoint_card(source, checkpoint_prefix)
    given = {"encoder": encoder, "head": head, "max_depth": max_depth, "input_size": input_size}
    return dataclasses.replace(card, **{name: value for name, value in given.items() if value is not None})


def load_model(card: DepthModelCard, adapter: str | os.PathLike | None = None) -> nn.Module:
    """The card's model, with the peft adapter folder `adapter` merged in when one is given."""
    if card.checkpoint is None:
        raise ValueError("the model card has no checkpoint: there are no weights to export")
    if card.family != "dav2":
        raise ValueError(f"the export writes Depth Anything V2 models; {card.checkpoint} is a {card.family} model")
    model = card.build()
    return model if adapter is None else merge_lora_adapter(model, adapter)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The export command's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m depthadapt.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="model card .yaml, .pth, transformers folder, .ckpt or peft adapter folder")
    parser.add_argument("out", help="output file (.pth, .onnx) or folder (hf)")
    parser.add_argument("--to", required=True, choices=EXPORT_FORMATS, dest="fmt")
    parser.add_argument("--encoder", default=None, choices=sorted(ENCODER_CONFIGS), help="default: as recorded")
    parser.add_argument("--head", default=None, choices=HEADS, help="default: as recorded (relative for a bare .pth)")
    parser.add_argument("--max-depth", type=float, default=None, help="metres, for a metric head")
    parser.add_argument("--input-size", type=int, default=None, help="the shorter network side the model runs at")
    parser.add_argument("--checkpoint-prefix", default=None, help="which model of a .ckpt, e.g. teacher")
    parser.add_argument("--base", default=None, help="the base checkpoint of a LoRA adapter folder")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an OUT that is not an earlier export (only the export's files are replaced)")
    parser.add_argument("--skip-check", action="store_true", help="do not compare onnxruntime with torch")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export command; returns the exit status (2 on a bad source, target or argument: one line)."""
    args = parse_args(argv)
    try:
        check_export_target(args.fmt, args.out, args.overwrite)
        card = source_card(args.checkpoint, args.encoder, args.head, args.max_depth, args.input_size,
                           args.checkpoint_prefix, args.base)
        adapter = args.checkpoint if args.base is not None else None
        model = load_model(card, adapter)
        out = export_model(model, args.fmt, args.out, opset=args.opset, card=card, overwrite=args.overwrite)
    except (OSError, ValueError) as error:  # every error of ours, and the checkpoint readers', is one of these
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.fmt}, {card.encoder}, {card.head} head, input size {card.input_size})")
    if args.fmt == "onnx" and not args.skip_check:
        error = onnx_relative_error(model, out, CHECK_SIZES)
        print(f"onnxruntime vs torch at {CHECK_SIZES}: max relative difference {error:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
