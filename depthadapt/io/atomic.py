"""Atomic writes: a file or folder appears whole or not at all, so a killed job never leaves a torn output."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_directory", "atomic_path", "atomic_write", "file_sha256"]

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



@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder next to `directory`; on success it replaces `directory` (else removed)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)



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
