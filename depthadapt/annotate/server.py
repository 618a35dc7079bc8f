"""The annotation session (images, their sizes, optional depth overlays) and its web server (FastAPI + uvicorn)."""

from __future__ import annotations

import functools
import logging
import posixpath
import socket
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from depthadapt.annotate.store import LabelConflictError, LabelStore
from depthadapt.io import IMAGE_SUFFIXES, UnreadableFileError, colorize_depth, list_image_files, read_depth, read_image
from depthadapt.westar import OrdinalRecord

__all__ = ["AnnotationSession", "create_app", "find_depth_map", "open_session", "serve"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DEPTH_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".exr")
"""Raw depth (or disparity) maps the overlay reads, after ``<name>_color.png`` (the prediction job's colour map)."""


def find_depth_map(depth_dir: Path, name: str) -> Path | None:
    """The overlay of image ``name``: ``<stem>_color.png`` or ``<stem>`` + a depth suffix under ``depth_dir``."""
    stem = posixpath.splitext(name)[0]
    for candidate in (f"{stem}_color.png", *(stem + suffix for suffix in DEPTH_SUFFIXES)):
        if (depth_dir / candidate).is_file():
            return depth_dir / candidate
    return None


@dataclass
class AnnotationSession:
    """What the server serves: readable ``images`` under ``root`` with their (height, width), the ``unreadable``
    ones with the reason, the label ``store`` and the optional ``depth_dir`` of overlays."""

    root: Path
    images: list[str]
    sizes: list[tuple[int, int]]
    store: LabelStore
    unreadable: dict[str, str] = field(default_factory=dict)
    depth_dir: Path | None = None


def open_session(
    images: str | Path, output: str | Path, pairs_per_image: int = 5, depth_dir: str | Path | None = None,
    force: bool = False,
) -> AnnotationSession:
    """Check the folder (every image is decoded once; unreadable ones are listed and left out) and the labels file."""
    root = Path(images)
    if not root.is_dir():
        raise ValueError(f"--images {root} is not a folder: give the folder of images to label")
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise ValueError(f"--depth-dir {depth_dir} is not a folder: give the folder of depth maps, or leave it out")
    names = list_image_files(root)
    if not names:
        raise ValueError(f"--images {root} holds no image ({' '.join(sorted(IMAGE_SUFFIXES))}), even in subfolders")
    readable, sizes, unreadable = [], [], {}
    for name in names:
        try:
            sizes.append(read_image(root / name).shape[:2])
            readable.append(name)
        except UnreadableFileError as err:
            unreadable[name] = err.reason
            log.warning("skipping unreadable image %s: %s", root / name, err.reason)
    if not readable:
        raise ValueError(f"none of the {len(names)} images under --images {root} can be read, e.g. {names[0]}: "
                         f"{unreadable[names[0]]}")
    store = LabelStore(output, readable, pairs_per_image, force=force)
    return AnnotationSession(root, readable, sizes, store, unreadable, None if depth_dir is None else Path(depth_dir))


class PairsBody(BaseModel):
    """Pair rows [y1, x1, y2, x2, label] to add or undo."""

    pairs: list[list[int]]


class SkipBody(BaseModel):
    """Whether the image is skipped."""

    skipped: bool


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def create_app(session: AnnotationSession) -> FastAPI:
    """The web app: the page (``/``), its static files and the JSON API under ``/api``."""
    app = FastAPI(title="depthadapt ordinal annotation", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    store = session.store

    def image_index(index: int) -> str:
        if not 0 <= index < len(session.images):
            raise HTTPException(404, f"no image {index}: the session has {len(session.images)}")
        return session.images[index]

    def progress(records: dict[str, OrdinalRecord]) -> dict:
        return {
            "done": [store.is_done(records.get(name)) for name in session.images],
            "pairs": sum(len(r.pairs) for r in records.values()),
            "first_unfinished": store.first_unfinished(records),
        }

    def labels(index: int) -> dict:
        name = image_index(index)
        records = store.records()
        record = records.get(name, OrdinalRecord(name))
        height, width = session.sizes[index]
        has_depth = session.depth_dir is not None and find_depth_map(session.depth_dir, name) is not None
        return {"index": index, "image": name, "pairs": record.pairs, "skipped": record.skipped,
                "height": height, "width": width, "depth": has_depth, "progress": progress(records)}

    def change(index: int, action, *args) -> dict:
        name = image_index(index)
        try:
            action(name, *args)
        except LabelConflictError as err:
            raise HTTPException(409, str(err)) from None
        except TimeoutError as err:
            raise HTTPException(503, str(err)) from None
        return labels(index)

    @functools.lru_cache(maxsize=16)
    def encoded(kind: str, index: int) -> bytes:
        name = session.images[index]
        if kind == "image":
            return _png(read_image(session.root / name))
        path = find_depth_map(session.depth_dir, name)
        if path.name.endswith("_color.png"):
            rgb = read_image(path)
        else:
            values = read_depth(path)
            rgb = colorize_depth(values, valid=values > 0)
        height, width = session.sizes[index]
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
        return _png(rgb)

    def picture(kind: str, index: int) -> Response:
        image_index(index)
        if kind == "depth" and (session.depth_dir is None or find_depth_map(session.depth_dir,
                                                                            session.images[index]) is None):
            raise HTTPException(404, f"no depth map for {session.images[index]} under --depth-dir")
        try:
            return Response(encoded(kind, index), media_type="image/png", headers={"Cache-Control": "no-cache"})
        except UnreadableFileError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/session")
    def get_session() -> dict:
        return {
            "images": session.images, "root": str(session.root), "output": str(store.output),
            "pairs_per_image": store.pairs_per_image, "unreadable": session.unreadable,
            "depth_overlay": session.depth_dir is not None, "progress": progress(store.records()),
        }

    @app.get("/api/labels/{index}")
    def get_labels(index: int) -> dict:
        return labels(index)

    @app.post("/api/labels/{index}/pairs")
    def add_pairs(index: int, body: PairsBody) -> dict:
        image_index(index)
        height, width = session.sizes[index]
        for row in body.pairs:
            if len(row) != 5 or not (0 <= row[0] < height and 0 <= row[2] < height and 0 <= row[1] < width
                                     and 0 <= row[3] < width):
                raise HTTPException(422, f"pair {row} lies outside the {height} x {width} image")
        try:
            return change(index, store.add_pairs, body.pairs)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None

    @app.post("/api/labels/{index}/undo")
    def undo(index: int, body: PairsBody) -> dict:
        return change(index, store.undo, body.pairs)

    @app.post("/api/labels/{index}/skip")
    def skip(index: int, body: SkipBody) -> dict:
        return change(index, store.set_skipped, body.skipped)

    @app.get("/api/image/{index}.png", include_in_schema=False)
    def image(index: int) -> Response:
        return picture("image", index)

    @app.get("/api/depth/{index}.png", include_in_schema=False)
    def depth(index: int) -> Response:
        return picture("depth", index)

    return app


def serve(session: AnnotationSession, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the session until interrupted; prints the URL (port 0 picks a free port)."""
    import uvicorn

    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): pass another --port (0 picks a free "
                         "one) or --host") from None
    bound = sock.getsockname()[1]
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    done = sum(session.store.is_done(r) for r in session.store.records().values())
    print(f"labelling {len(session.images)} images of {session.root} into {session.store.output} "
          f"({done} done, {session.store.pairs_per_image} samples per image)", flush=True)
    if session.unreadable:
        print(f"skipped {len(session.unreadable)} unreadable images: {', '.join(session.unreadable)}", flush=True)
    print(f"open http://{shown}:{bound}/ in a browser (Ctrl+C stops; every label is saved as it is made)",
          flush=True)
    config = uvicorn.Config(create_app(session), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
