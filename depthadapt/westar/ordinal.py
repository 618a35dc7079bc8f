"""Sparse ordinal depth labels: simulation from depth (what a person would click) and JSON Lines files.

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
from typing import Literal, get_args

import torch

from depthadapt.io import IMAGE_SUFFIXES, UnreadableFileError, atomic_path

__all__ = [
    "EXACT_LABELS",
    "PADDING_ROW",
    "ClickPlacement",
    "OrdinalFileError",
    "OrdinalRecord",
    "OrdinalSimulation",
    "check_pairs",
    "image_key",
    "labelled_images",
    "pad_pairs",
    "read_ordinal_jsonl",
    "read_ordinal_records",
    "simulate_ordinal_pairs",
    "write_ordinal_jsonl",
    "write_ordinal_records",
]

PADDING_ROW: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0, 0.0)
"""The row that pads a batch's pairs to a common length (any row with y1 < 0 is padding)."""


class OrdinalFileError(ValueError):
    """A malformed weak-label file; the message names the file and the line."""


ClickPlacement = Literal["uniform", "objects"]
"""Where a simulated annotator clicks: any valid pixel alike, or every object (instance id) alike whatever its size."""


@dataclass(frozen=True)
class OrdinalSimulation:
    """A simulated annotator of WeSTAR's weak labels, drawing from ground-truth depth what a person would click.

    On ``label_fraction`` of the images (chosen by image index, ``labelled_images``) it makes ``anchors`` samples
    as the annotation tool asks for them: an anchor, a point farther and a point closer (depth beyond the anchor's
    by more than ``relative_margin``), giving three transitively consistent pairs. ``clicks`` says where the three
    points fall: ``uniform`` over the valid pixels, or ``objects``: each object of the instance map equally likely
    (people click on things: a small object gets as many clicks as a wall), uniform within it. Then the person's
    limits: a pair whose depths differ by less than ``equal_tolerance`` (relative) is answered "equal"; an ordered
    answer is reversed with chance ``flip_rate``; each recorded point is off by Gaussian ``click_jitter`` pixels
    (standard deviation, per axis), so pairs near depth edges may be recorded on the other side of the edge.
    ``seed`` varies the draws; an image's labels depend on (seed, image index) only. ``EXACT_LABELS`` is the
    oracle: every image, uniform clicks, a 5 % margin, no "equal" answer, no error, no jitter.
    """

    label_fraction: float = 0.2
    anchors: int = 5
    clicks: ClickPlacement = "objects"
    relative_margin: float = 0.0
    equal_tolerance: float = 0.05
    flip_rate: float = 0.1
    click_jitter: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("label_fraction", 0.0 < self.label_fraction <= 1.0, "in (0, 1]"),
            ("anchors", self.anchors >= 1, ">= 1"),
            ("clicks", self.clicks in get_args(ClickPlacement), f"one of {', '.join(get_args(ClickPlacement))}"),
            ("relative_margin", 0.0 <= self.relative_margin < 1.0, "in [0, 1)"),
            ("equal_tolerance", self.equal_tolerance >= 0.0, ">= 0"),
            ("flip_rate", 0.0 <= self.flip_rate <= 0.5, "in [0, 0.5] (above 0.5 the answers are mostly wrong)"),
            ("click_jitter", self.click_jitter >= 0.0, ">= 0 pixels"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(
                    f"data.weak_labels.ordinal_simulation.{name} must be {rule}, got {getattr(self, name)!r}"
                )


EXACT_LABELS = OrdinalSimulation(label_fraction=1.0, clicks="uniform", relative_margin=0.05, equal_tolerance=0.0,
                                 flip_rate=0.0, click_jitter=0.0)
"""The oracle (the upper bound): exact pairs with a 5 % depth margin on every image."""


def _click_weights(allowed: torch.Tensor, objects: torch.Tensor | None) -> torch.Tensor:
    """Click probabilities (unnormalised) over the N entries where ``allowed`` (N bool): uniform, or each object id
    of ``objects`` (N int64, None for uniform) equally likely and uniform within it."""
    weights = allowed.double()
    if objects is not None:
        area = torch.bincount(objects[allowed], minlength=int(objects.max()) + 1).double()
        weights = weights / area[objects].clamp_min(1.0)
    return weights


def simulate_ordinal_pairs(
    depth: torch.Tensor,
    valid: torch.Tensor,
    simulation: OrdinalSimulation = EXACT_LABELS,
    instances: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The pairs ``simulation``'s annotator gives for one H x W metric depth map -> P x 5 float32, P = 3 x anchors.

    Anchors (distinct) are drawn among the valid pixels (finite depth > 0) that have both a farther and a closer
    pixel beyond the margin; fewer rows come back when fewer pixels qualify. Triplets are (anchor, far, -1),
    (anchor, close, +1), (far, close, +1) before the annotator's "equal" answers, errors and jitter (see
    ``OrdinalSimulation``). ``instances`` (H x W ids) is needed for ``clicks: objects``. ``generator`` (a CPU
    generator) makes it deterministic; the work is done on the CPU, the result is on depth's device.
    """
    if depth.dim() != 2 or valid.shape != depth.shape:
        raise ValueError(f"depth and valid must be H x W, got {tuple(depth.shape)} and {tuple(valid.shape)}")
    objects = None
    if simulation.clicks == "objects":
        if instances is None or instances.shape != depth.shape:
            raise ValueError(
                "data.weak_labels.ordinal_simulation.clicks objects needs an H x W instance map per image "
                "(data.weak_labels.instance_source ground_truth on the synthetic domains, sam2 or superpixels); or "
                "set clicks to uniform"
            )
        objects = instances.cpu().long().clamp_min(0).flatten()
    height, width = depth.shape
    values = depth.detach().float().cpu().flatten()
    usable = valid.cpu().bool().flatten() & torch.isfinite(values) & (values > 0)
    index = usable.nonzero().flatten()
    values = values[usable]
    objects = None if objects is None else objects[usable]
    margin = simulation.relative_margin
    sorted_values = values.sort(stable=True).values
    has_far = torch.searchsorted(sorted_values, values * (1 + margin), right=True) < len(values)
    has_close = torch.searchsorted(sorted_values, values * (1 - margin)) > 0
    candidates = has_far & has_close
    count = min(simulation.anchors, int(candidates.sum()))
    if count == 0:
        return torch.zeros(0, 5, device=depth.device)
    anchors = torch.multinomial(_click_weights(candidates, objects), count, generator=generator)
    points = []
    for anchor in anchors.tolist():
        far = torch.multinomial(_click_weights(values > values[anchor] * (1 + margin), objects), 1, generator=generator)
        close = torch.multinomial(_click_weights(values < values[anchor] * (1 - margin), objects), 1,
                                  generator=generator)
        points.append([anchor, int(far), int(close)])
    chosen = torch.tensor(points)  # count x 3 (anchor, far, close), entries of `values`
    first, second = chosen[:, [0, 0, 1]].flatten(), chosen[:, [1, 2, 2]].flatten()
    label = torch.tensor([-1.0, 1.0, 1.0]).repeat(count)
    d1, d2 = values[first], values[second]
    label = torch.where((d1 - d2).abs() < simulation.equal_tolerance * torch.minimum(d1, d2), 0.0, label)
    flips = torch.rand(len(label), generator=generator) < simulation.flip_rate
    label = torch.where(flips, -label, label)
    pixel = index[chosen]  # count x 3 flat pixel indices
    coords = torch.stack([pixel // width, pixel % width], -1).double()  # count x 3 x 2 (y, x)
    coords = coords + simulation.click_jitter * torch.randn(coords.shape, generator=generator, dtype=torch.float64)
    limit = torch.tensor([height - 1, width - 1], dtype=torch.float64)
    coords = coords.round().clamp(torch.zeros(2, dtype=torch.float64), limit).float()
    rows = torch.cat([coords[:, [0, 0, 1]].reshape(-1, 2), coords[:, [1, 2, 2]].reshape(-1, 2), label[:, None]], 1)
    return rows.to(depth.device)


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
