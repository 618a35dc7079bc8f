"""The labels file of an annotation session: every change is a locked read-modify-write, saved at once.

Each change re-reads the file, applies itself and rewrites the file atomically and durably
(`depthadapt.westar.ordinal.write_ordinal_records`), holding a process-wide lock (two browser tabs on one server) and a
file lock on ``<output>.lock`` (two servers on one file), so concurrent writers never lose or corrupt a label and a
killed server loses nothing that was acknowledged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from depthadapt.westar import OrdinalRecord, check_pairs, image_key, read_ordinal_records, write_ordinal_records

__all__ = ["LabelConflictError", "LabelStore"]

_PROCESS_LOCK = threading.Lock()
LOCK_TIMEOUT_S = 30.0
MAX_PAIRS_FACTOR = 10
"""An image takes at most this many times the pairs that make it done; more is refused (a runaway client)."""


class LabelConflictError(ValueError):
    """The labels of an image changed since the page read them (another tab or server): reload the page."""


class LabelStore:
    """The ordinal labels of ``images`` (paths relative to the image folder) in the JSON Lines file ``output``.

    An image is done when it has ``3 * pairs_per_image`` pairs (each structured sample is an anchor with a farther
    and a closer point: three pairs) or was skipped; it takes at most ``MAX_PAIRS_FACTOR`` times that many. Lines
    for images not in ``images`` are an error unless ``force``, and are then kept as they are. The folder of
    ``output`` is made and must be writable.
    """

    def __init__(self, output: str | Path, images: Sequence[str], pairs_per_image: int, force: bool = False) -> None:
        if pairs_per_image < 1:
            raise ValueError(f"--pairs-per-image must be >= 1, got {pairs_per_image}")
        if not images:
            raise ValueError("a label store needs at least one image")
        self.output = Path(output)
        self.images = list(images)
        self.pairs_per_image = pairs_per_image
        self.max_pairs = MAX_PAIRS_FACTOR * 3 * pairs_per_image
        self.file_lock = FileLock(self.output.with_name(self.output.name + ".lock"), timeout=LOCK_TIMEOUT_S)
        if self.output.exists() and not self.output.is_file():
            raise ValueError(f"--output {self.output} is not a file: give the path of the labels file (.jsonl)")
        try:  # now rather than at the first label
            self.output.parent.mkdir(parents=True, exist_ok=True)
            Path(self.file_lock.lock_file).open("a").close()
        except (FileExistsError, NotADirectoryError) as err:
            raise ValueError(f"--output {self.output} cannot be written: {err.filename} is not a folder") from None
        except OSError as err:
            raise ValueError(f"--output {self.output} cannot be written ({err.strerror or err}): give a path in a "
                             "folder you can write") from None
        self._names: dict[str, str] = {}
        for name in self.images:
            if (key := image_key(name)) in self._names:
                raise ValueError(f"{self._names[key]} and {name} differ only by their extension, so their labels "
                                 "would share one key: rename one")
            self._names[key] = name
        try:
            existing = self._read()
        except UnicodeDecodeError as err:
            raise ValueError(f"--output {self.output} is not a labels file: not UTF-8 text ({err.reason} at byte "
                             f"{err.start}); give a new path or the .jsonl file this tool wrote") from None
        foreign = [record.image for record in existing if image_key(record.image) not in self._names]
        if foreign and not force:
            raise ValueError(
                f"{self.output} holds labels for {len(foreign)} image(s) that are not in this folder: expected names "
                f"like {self.images[0]!r}, found {foreign[0]!r}. Give the --images folder it was made for or another "
                "--output, or pass --force to keep those lines and add this folder's labels to the file"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _PROCESS_LOCK:
            try:
                with self.file_lock:
                    yield
            except Timeout:
                raise TimeoutError(
                    f"{self.file_lock.lock_file} stayed locked for {LOCK_TIMEOUT_S:.0f} s: another process is "
                    "writing the labels; try again"
                ) from None

    def _read(self) -> list[OrdinalRecord]:
        return read_ordinal_records(self.output) if self.output.exists() else []

    def records(self) -> dict[str, OrdinalRecord]:
        """{image name: its record} for the images of this session that have one (the file's current state)."""
        return {self._names[key]: r for r in self._read() if (key := image_key(r.image)) in self._names}

    def is_done(self, record: OrdinalRecord | None) -> bool:
        """True when ``record`` has all its structured samples or was skipped."""
        return record is not None and (record.skipped or len(record.pairs) >= 3 * self.pairs_per_image)

    def first_unfinished(self, records: dict[str, OrdinalRecord] | None = None) -> int | None:
        """Index of the first image that is neither done nor skipped; None when all are."""
        records = self.records() if records is None else records
        return next((i for i, name in enumerate(self.images) if not self.is_done(records.get(name))), None)

    def _change(self, image: str, change: Callable[[OrdinalRecord], None]) -> OrdinalRecord:
        if image not in self.images:
            raise KeyError(f"{image!r} is not an image of this session")
        key = image_key(image)
        with self._locked():
            records = self._read()
            record = next((r for r in records if image_key(r.image) == key), None)
            if record is None:
                record = OrdinalRecord(image)
                records.append(record)
            change(record)
            order = {name: i for i, name in enumerate(self.images)}
            kept = [r for r in records if r.pairs or r.skipped]
            # This session's images in folder order, then any kept foreign lines in their order.
            kept.sort(key=lambda r: order.get(self._names.get(image_key(r.image), ""), len(order)))
            write_ordinal_records(self.output, kept)
        return record

    def add_pairs(self, image: str, pairs: list[list[int]]) -> OrdinalRecord:
        """Append pair rows to ``image`` (un-skipping it) and save; returns its record. A pair of one pixel with
        itself, a pair of two points already compared on the image and more than ``max_pairs`` are refused."""
        rows = check_pairs(pairs)

        def change(record: OrdinalRecord) -> None:
            if len(record.pairs) + len(rows) > self.max_pairs:
                raise ValueError(f"{image} would have {len(record.pairs) + len(rows)} pairs, over the limit of "
                                 f"{self.max_pairs} ({MAX_PAIRS_FACTOR} x the {3 * self.pairs_per_image} that make "
                                 "it done)")
            compared = {frozenset((tuple(row[:2]), tuple(row[2:4]))) for row in record.pairs}
            for row in rows:
                points = frozenset((tuple(row[:2]), tuple(row[2:4])))
                if len(points) == 1:
                    raise ValueError(f"pair {row} compares pixel {row[:2]} of {image} with itself")
                if points in compared:
                    raise ValueError(f"pair {row}: these two points of {image} are already compared")
                compared.add(points)
            record.pairs.extend(rows)
            record.skipped = False

        return self._change(image, change)

    def undo(self, image: str, pairs: list[list[int]]) -> OrdinalRecord:
        """Remove ``pairs``, which must be the last rows of ``image``, and save (`LabelConflictError` if not)."""
        rows = check_pairs(pairs)

        def change(record: OrdinalRecord) -> None:
            if not rows or record.pairs[-len(rows):] != rows:
                raise LabelConflictError(
                    f"the last pairs of {image} are not the ones to undo: they changed in another tab or server; "
                    "reload the page"
                )
            del record.pairs[-len(rows):]

        return self._change(image, change)

    def set_skipped(self, image: str, skipped: bool) -> OrdinalRecord:
        """Mark ``image`` skipped (done whatever its pairs) or not, and save."""

        def change(record: OrdinalRecord) -> None:
            record.skipped = skipped

        return self._change(image, change)
