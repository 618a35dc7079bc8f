"""Sparse ordinal depth labels: simulation from depth (what an annotator would give) and JSON Lines files.

A pair row is (y1, x1, y2, x2, label), label +1 if point 1 is farther, -1 if closer, 0 if equal. Batches
hold B x P x 5 float tensors padded with `PADDING_ROW` (y1 = -1), which `depthadapt.losses.ordinal_loss`
skips. On disk: one JSON object per line, `{"image": "relative/path.png", "pairs": [[y1, x1, y2, x2, label],
...]}`, integers only (the annotation tool adds `"skipped": true` to images its annotator skipped). Images are
matched to samples by `image_key`, which ignores the suffix, "./" and the path separator.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from depthadapt.io import IMAGE_SUFFIXES, UnreadableFileError, atomic_path

__all__ = [
    "PADDING_ROW",
    "OrdinalFileError",
    "OrdinalRecord",
    "check_pairs",
    "image_key",
    "labelled_images",
    "pad_pairs",
    "read_ordinal_jsonl",
    "read_ordinal_records",
    "simulate_batch",
    "simulate_ordinal_pairs",
    "write_ordinal_jsonl",
    "write_ordinal_records",
]

PADDING_ROW: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0, 0.0)
"""The row that pads a batch's pairs to a common length (any row with y1 < 0 is padding)."""


class OrdinalFileError(ValueError):
    """A malformed weak-label file; the message names the file and the line."""


def simulate_ordinal_pairs(
    depth: torch.Tensor,
    valid: torch.Tensor,
    num_anchors: int = 5,
    relative_margin: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ordinal pairs an annotator would give for one H x W metric depth map -> P x 5 float32, P = 3 x anchors.

    Anchors are drawn uniformly, without repetition, among the valid pixels (finite depth > 0) that have
    both a farther point (d > d_anchor * (1 + m)) and a closer one (d < d_anchor * (1 - m)); one of each is
    drawn uniformly. Each triplet gives (anchor, far, -1), (anchor, close, +1) and (far, close, +1), which
    are transitively consistent. Fewer rows come back when fewer pixels qualify as anchors. `generator`
    (a CPU generator) makes it deterministic; the work is done on the CPU, the result is on depth's device.
    """
    if depth.dim() != 2 or valid.shape != depth.shape:
        raise ValueError(f"depth and valid must be H x W, got {tuple(depth.shape)} and {tuple(valid.shape)}")
    if num_anchors < 0 or not 0.0 <= relative_margin < 1.0:
        raise ValueError(f"need num_anchors >= 0 and 0 <= relative_margin < 1, got {num_anchors}, {relative_margin}")
    values = depth.detach().float().cpu()
    usable = valid.cpu().bool() & torch.isfinite(values) & (values > 0)
    coords = usable.nonzero().float()
    values = values[usable]
    sorted_values, order = values.sort(stable=True)
    # Candidates of pixel i: farther ones are sorted positions [far_start, n), closer ones [0, close_end).
    far_start = torch.searchsorted(sorted_values, values * (1 + relative_margin), right=True)
    close_end = torch.searchsorted(sorted_values, values * (1 - relative_margin))
    candidates = torch.randperm(len(values), generator=generator)
    candidates = candidates[(far_start[candidates] < len(values)) & (close_end[candidates] > 0)][:num_anchors]
    far_start, close_end = far_start[candidates], close_end[candidates]
    draws = torch.rand(2, len(candidates), generator=generator, dtype=torch.float64)
    far_count = len(values) - far_start
    far = order[far_start + (draws[0] * far_count).long().clamp_max(far_count - 1)]
    close = order[(draws[1] * close_end).long().clamp_max(close_end - 1)]
    anchor, far, close = coords[candidates], coords[far], coords[close]
    farther, closer = torch.ones(len(candidates), 1), -torch.ones(len(candidates), 1)
    triplets = torch.stack(
        [
            torch.cat([anchor, far, closer], 1),
            torch.cat([anchor, close, farther], 1),
            torch.cat([far, close, farther], 1),
        ],
        dim=1,
    )
    return triplets.reshape(-1, 5).to(depth.device)


def pad_pairs(pairs: Sequence[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Stack per-image P_i x 5 pair tensors into B x P x 5 float32, padded with `PADDING_ROW` to P = `length`.

    `length` defaults to the longest P_i; a shorter `length` than some P_i is an error.
    """
    longest = max((len(p) for p in pairs), default=0)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length {length} is shorter than an image's {longest} pairs")
    batch = torch.tensor(PADDING_ROW).repeat(len(pairs), length, 1)
    for index, rows in enumerate(pairs):
        batch[index, : len(rows)] = rows.detach().float().cpu()
    return batch


def simulate_batch(
    depth: torch.Tensor,
    valid: torch.Tensor,
    num_anchors: int = 5,
    relative_margin: float = 0.05,
    seed: int | torch.Tensor = 0,
) -> torch.Tensor:
    """`simulate_ordinal_pairs` for B x H x W depth and valid -> B x (3 num_anchors) x 5, padded with y1 = -1.

    `seed`: an int (image b uses seed + b) or a tensor of B per-sample seeds (e.g. dataset indices, so an
    image's pairs do not depend on the batch it is in). The same seeds give the same pairs.
    """
    if depth.dim() != 3 or valid.shape != depth.shape:
        raise ValueError(f"depth and valid must be B x H x W, got {tuple(depth.shape)} and {tuple(valid.shape)}")
    if isinstance(seed, torch.Tensor):
        seeds = [int(s) for s in seed.reshape(-1).tolist()]
    else:
        seeds = [int(seed) + b for b in range(len(depth))]
    if len(seeds) != len(depth):
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for a batch of {len(depth)}")
    pairs = [
        simulate_ordinal_pairs(d, v, num_anchors, relative_margin, torch.Generator().manual_seed(s))
        for d, v, s in zip(depth, valid, seeds, strict=True)
    ]
    return pad_pairs(pairs, 3 * num_anchors).to(depth.device)


def labelled_images(index: torch.Tensor, fraction: float) -> torch.Tensor:
    """Which images carry weak labels when only ``fraction`` of a dataset is labelled: dataset indices (B,) ->
    bool (B,). Decided by the index alone (a multiplicative hash spread over [0, 1)), so an image is labelled or
    not whatever its batch, epoch or seed, and the labelled share of any large index range is ``fraction``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the labelled fraction must be in (0, 1], got {fraction}")
    spread = (index.long() * 2654435761) % 2**32  # Knuth's multiplicative hash: consecutive indices spread apart
    return spread.double() / 2**32 < fraction


def image_key(name: str, root: str | os.PathLike | None = None) -> str:
    """The key that matches an image name across spellings: "/" separators, no "./", no image suffix.

    With ``root`` (the image folder), an absolute name under it, or one that starts with ``root`` as written,
    becomes relative to it: ``.\\street\\target\\000000.PNG``, ``street/target/000000`` and
    ``/data/frames/street/target/000000.png`` (root ``/data/frames``) all give ``street/target/000000``.
    """
    text = name.strip().replace("\\", "/")
    if root is not None:
        root_path = Path(root)
        if posixpath.isabs(text):
            with contextlib.suppress(ValueError):
                text = Path(text).resolve().relative_to(root_path.resolve()).as_posix()
        else:
            text = posixpath.normpath(text)
            prefix = posixpath.normpath(root_path.as_posix()) + "/"
            if prefix != "./" and text.startswith(prefix):
                text = text[len(prefix):]
    text = posixpath.normpath(text)
    stem, suffix = posixpath.splitext(text)
    return stem if suffix.lower() in IMAGE_SUFFIXES else text


@dataclass
class OrdinalRecord:
    """One line of a weak-label file: the image's relative path, its integer pair rows and whether an annotator
    skipped it (``"skipped": true`` on disk, written only when true; readers of pairs ignore it)."""

    image: str
    pairs: list[list[int]] = field(default_factory=list)
    skipped: bool = False

    def to_json(self) -> str:
        """The record as one JSON object (no newline)."""
        line: dict[str, object] = {"image": self.image, "pairs": self.pairs}
        if self.skipped:
            line["skipped"] = True
        return json.dumps(line)


def check_pairs(pairs: object) -> list[list[int]]:
    """Validate ``[[y1, x1, y2, x2, label], ...]`` (integers, coordinates >= 0, label -1/0/1) -> integer rows."""
    if not isinstance(pairs, list):
        raise ValueError(f"'pairs' must be a list of [y1, x1, y2, x2, label] rows, got {type(pairs).__name__}")
    for index, row in enumerate(pairs):
        if not isinstance(row, list) or len(row) != 5:
            raise ValueError(f"pair {index}: expected [y1, x1, y2, x2, label], got {row!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer() for v in row):
            raise ValueError(f"pair {index}: values must be integers, got {row!r}")
        if min(row[:4]) < 0:
            raise ValueError(f"pair {index}: negative pixel coordinate in {row!r}")
        if row[4] not in (-1, 0, 1):
            raise ValueError(f"pair {index}: label {row[4]!r} is not -1 (closer), 0 (equal) or 1 (farther)")
    return [[int(v) for v in row] for row in pairs]


def write_ordinal_records(path: str | os.PathLike, records: Iterable[OrdinalRecord]) -> Path:
    """Write records as JSON Lines atomically and durably (temporary file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    lines = []
    for record in records:
        try:
            check_pairs(record.pairs)
        except ValueError as err:
            raise ValueError(f"cannot write {path}: image {record.image!r}: {err}") from None
        lines.append(record.to_json() + "\n")
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as file:
            file.write("".join(lines))
            file.flush()
            os.fsync(file.fileno())
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def write_ordinal_jsonl(path: str | os.PathLike, records: Mapping[str, torch.Tensor | Sequence]) -> Path:
    """Write {image relative path: P x 5 pairs} as JSON Lines, atomically; padding rows (y1 < 0) are left out."""
    lines = []
    for image, pairs in records.items():
        rows = torch.as_tensor(pairs, dtype=torch.float64).reshape(-1, 5)
        rows = [[int(v) if float(v).is_integer() else v for v in row] for row in rows[rows[:, 0] >= 0].tolist()]
        lines.append(OrdinalRecord(image, rows))
    return write_ordinal_records(path, lines)


def read_ordinal_records(path: str | os.PathLike) -> list[OrdinalRecord]:
    """Read a weak-label JSON Lines file -> its records in file order; blank lines are skipped.

    Raises `OrdinalFileError` naming the file and line for bad JSON, a missing or wrong "image" or "pairs",
    a row that is not 5 integers, a negative coordinate, a label outside {-1, 0, 1}, a "skipped" that is not
    a boolean or an image given twice (also under two spellings, see `image_key`); `UnreadableFileError` if
    the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(path, "file does not exist")
    records: list[OrdinalRecord] = []
    first_line: dict[str, tuple[int, str]] = {}
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"]:
                    raise ValueError('expected an object {"image": "relative/path.png", "pairs": [...]}')
                image = record["image"]
                key = image_key(image)
                if key in first_line:
                    seen_line, seen = first_line[key]
                    spelling = "" if seen == image else f" as {seen!r}"
                    raise ValueError(f"duplicate image {image!r} (first on line {seen_line}{spelling})")
                if "pairs" not in record:
                    raise ValueError(f'image {image!r} has no "pairs"')
                skipped = record.get("skipped", False)
                if not isinstance(skipped, bool):
                    raise ValueError(f'"skipped" of image {image!r} must be true or false, got {skipped!r}')
                records.append(OrdinalRecord(image, check_pairs(record["pairs"]), skipped))
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                raise OrdinalFileError(f"{path}, line {number}: {err}") from None
            first_line[key] = (number, image)
    return records


def read_ordinal_jsonl(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weak-label JSON Lines file -> {image relative path: P x 5 float32 pairs} (`read_ordinal_records`);
    ``"skipped": true`` lines are left out, whatever pairs they hold."""
    return {
        record.image: torch.tensor(record.pairs, dtype=torch.float32).reshape(-1, 5)
        for record in read_ordinal_records(path)
        if not record.skipped
    }
