"""Output manifests: the file that marks a folder as a job's output and records what wrote it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from depthadapt.io.atomic import atomic_path

__all__ = ["MANIFEST_NAME", "OutputManifestError", "check_output_manifest"]

MANIFEST_NAME = "depthadapt_manifest.json"
"""The file that marks a folder as a job's output and records what wrote it (model, checkpoint, settings)."""



class OutputManifestError(ValueError):
    """An output folder holds results of another model or other settings than the job about to write there."""



def check_output_manifest(directory: str | os.PathLike, manifest: dict, overwrite: bool = False) -> bool:
    """Record ``manifest`` (JSON-able: model, checkpoint hash, head, input size, ...) in ``directory``.

    Returns True when the folder already holds outputs of this very manifest (a resume: finished items may be
    skipped), False for a new folder or with ``overwrite`` (everything is written anew). A folder whose manifest
    differs is an error naming the differing fields, unless ``overwrite`` or the folder holds no output yet.
    """
    path = Path(directory) / MANIFEST_NAME
    manifest = json.loads(json.dumps(manifest))  # the JSON form, as it will be read back
    only_manifest = path.is_file() and all(p.name == MANIFEST_NAME for p in Path(directory).iterdir())
    if path.is_file() and not overwrite and not only_manifest:  # a folder without outputs is free to take
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise OutputManifestError(f"{path} is unreadable ({err}): remove it, or set overwrite: true") from err
        differing = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
        if not differing:
            return True
        shown = "; ".join(f"{k}: {previous.get(k)!r} -> {manifest.get(k)!r}" for k in differing[:6])
        raise OutputManifestError(
            f"{directory} holds outputs written with other settings ({shown}): choose another output folder, "
            "or set the writer's overwrite: true to write them anew"
        )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return False
