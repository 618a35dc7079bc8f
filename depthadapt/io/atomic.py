"""Atomic writes: a file or folder appears whole or not at all, so a killed job never leaves a torn output."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["EXPORT_RECORD", "ExistingOutputError", "atomic_directory", "atomic_path", "atomic_write",
           "check_export_directory", "check_replaceable_file", "file_sha256"]

_tmp_counter = itertools.count()



@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success rename it onto ``path``.

    Parent folders are created. If the body raises, the temporary file is removed and an existing
    ``path`` is left untouched, so a killed or failing job never leaves a half-written file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the path of the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}-{next(_tmp_counter)}{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"nothing was written to the temporary file for {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)



class ExistingOutputError(FileExistsError):
    """An output path that holds something this job did not write; it is never replaced without being asked to."""


EXPORT_RECORD = "depthadapt_export.json"
"""The file in an exported folder that names the export's kind and every file it wrote (and may replace)."""


def _read_export_record(directory: Path) -> dict | None:
    """The record of an earlier export into ``directory``, or None when there is none (or it is not ours)."""
    try:
        record = json.loads((directory / EXPORT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        return None
    # only plain relative names inside the folder: a doctored record must not point the clean-up elsewhere
    record["files"] = [name for name in record["files"] if isinstance(name, str) and name
                       and not Path(name).is_absolute() and ".." not in Path(name).parts]
    return record


def _write_export_record(directory: Path, kind: str, files: list[str]) -> None:
    with atomic_path(directory / EXPORT_RECORD) as tmp:
        tmp.write_text(json.dumps({"kind": kind, "files": sorted(files)}, indent=1) + "\n")


def check_export_directory(directory: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """Raise unless ``directory`` may receive a ``kind`` export: absent, empty, an earlier ``kind`` export, or
    any folder with ``overwrite`` (only the export's own files are replaced then). A file there is an error."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ExistingOutputError(f"{directory} is a file; the {kind} export is a folder: give a folder path")
    if not directory.is_dir() or overwrite or not any(directory.iterdir()):
        return
    record = _read_export_record(directory)
    if record is None or record.get("kind") != kind:
        raise ExistingOutputError(
            f"{directory} is not empty and not an earlier {kind} export: give a new or empty folder, or --overwrite "
            "(overwrite=True) to replace only the files the export writes"
        )


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success its files become ``directory``'s, recorded in ``EXPORT_RECORD``.

    Nothing is deleted that an export did not write: a new or empty ``directory`` is replaced by the staging
    folder in one rename; otherwise (an earlier ``kind`` export, or any folder with ``overwrite``) each staged
    file replaces its namesake atomically, the files the earlier export recorded and this one does not write are
    removed, and every other file is kept. ``check_export_directory`` runs first; if the body raises, nothing
    changes.
    """
    directory = Path(directory)
    check_export_directory(directory, kind, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if not p.is_dir())
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        if not directory.exists():
            _write_export_record(staging, kind, written)
            staging.rename(directory)
            return
        record = _read_export_record(directory)
        earlier = record["files"] if record is not None and record.get("kind") == kind else []
        stale = [name for name in earlier if name not in written and name != EXPORT_RECORD]
        _write_export_record(directory, kind, sorted({*earlier, *written}))  # a killed merge leaves it complete
        for name in written:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, directory / name)
        for name in stale:
            (directory / name).unlink(missing_ok=True)
        _write_export_record(directory, kind, written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)



def check_replaceable_file(path: str | os.PathLike, what: str, earlier: Callable[[Path], bool],
                           overwrite: bool = False) -> None:
    """Raise unless the file ``path`` may be written: absent, an earlier ``what`` (``earlier(path)``), or with
    ``overwrite``. A folder there is always an error."""
    path = Path(path)
    if path.is_dir():
        raise ExistingOutputError(f"{path} is a folder; the {what} is a file: give a file path")
    if path.exists() and not overwrite and not earlier(path):
        raise ExistingOutputError(
            f"{path} exists and is not an earlier {what}: give a new path, or --overwrite (overwrite=True) to "
            "replace it"
        )



def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object]) -> Path:
    """Call ``write_fn(tmp_path)`` and atomically move the result onto ``path``; return ``path``."""
    with atomic_path(path) as tmp:
        write_fn(tmp)
    return Path(path)



def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
