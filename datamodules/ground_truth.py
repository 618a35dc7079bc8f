"""How ground truth is found and read: the depth file of an image (by suffix, a ``depth_name`` pattern such as TUM's
``{stem_without:_color}_depth.png``, or a two-column association file), the ``depth_scale`` that turns stored values
into metres (required and checked), and the size images are served at."""

from __future__ import annotations

import math
import posixpath
import re
from pathlib import Path

__all__ = ["DEPTH_SCALES", "check_depth_name", "check_depth_scale", "depth_name_of", "nearest_multiple",
           "read_association_file"]

DEPTH_SCALES = ("KITTI 16-bit PNG: 0.00390625 (1/256); millimetres (NYU raw, Redwood, ScanNet): 0.001; "
                "TUM RGB-D: 0.0002 (1/5000); metres (.npy, float TIFF): 1.0")
"""The usual ``depth_scale`` conventions (stored value x depth_scale = metres), for messages."""
_DEPTH_NAME_FIELD = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


def check_depth_scale(depth_scale: float | None) -> float:
    """``depth_scale`` as a float, or a ValueError listing the usual conventions when it is unset or not > 0."""
    if depth_scale is None:
        raise ValueError(f"data.depth_scale is not set: the factor from the depth files' stored values to metres "
                         f"({DEPTH_SCALES})")
    if isinstance(depth_scale, bool) or not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"data.depth_scale must be a positive number, got {depth_scale!r} ({DEPTH_SCALES})")
    return float(depth_scale)


def check_depth_name(depth_name: str) -> str:
    """A ``depth_name`` pattern, or a ValueError: ``{stem}`` or ``{stem_without:SUFFIX}`` and nothing else in braces."""
    fields = _DEPTH_NAME_FIELD.findall(depth_name)
    rest = _DEPTH_NAME_FIELD.sub("", depth_name)
    # {stem} takes no argument, {stem_without:X} needs one; no other field, no stray brace
    well_formed = len(fields) == 1 and (fields[0] == ("stem", "") or (fields[0][0] == "stem_without" and fields[0][1]))
    if not well_formed or "{" in rest or "}" in rest:
        raise ValueError(f"data.depth_name must hold one {{stem}} or {{stem_without:SUFFIX}} (e.g. "
                         f"'{{stem_without:_color}}_depth.png'), got {depth_name!r}")
    return depth_name


def depth_name_of(depth_name: str, name: str) -> str | None:
    """The depth file's relative path for the image with relative path ``name`` by the pattern ``depth_name``;
    None when the image does not fit it (its stem lacks the suffix of ``{stem_without:SUFFIX}``)."""
    stem = posixpath.splitext(name)[0]
    field, suffix = _DEPTH_NAME_FIELD.search(depth_name).groups()
    if field == "stem_without":
        if not stem.endswith(suffix):
            return None
        stem = stem[: len(stem) - len(suffix)]
    return _DEPTH_NAME_FIELD.sub(lambda _: stem.replace("\\", "\\\\"), depth_name)


def read_association_file(path: str | Path) -> dict[str, str]:
    """Image -> depth relative paths from a text file of ``image depth`` lines, or TUM's ``associate.py`` output
    (``time image time depth``); blank and ``#`` lines skipped. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"association file {path} does not exist")
    pairs: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 4):
            raise ValueError(f"{path}, line {number}: expected 'image depth' or 'time image time depth' "
                             f"(TUM's associate.py), got {len(fields)} fields")
        image, depth = (fields[0], fields[1]) if len(fields) == 2 else (fields[1], fields[3])
        image = image.removeprefix("./")
        if image in pairs:
            raise ValueError(f"{path}, line {number}: {image} is listed twice")
        pairs[image] = depth.removeprefix("./")
    if not pairs:
        raise ValueError(f"association file {path} lists no image")
    return pairs


def nearest_multiple(size: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``size`` (at least ``multiple``)."""
    return max(multiple, int(math.floor(size / multiple + 0.5)) * multiple)
