"""The annotation session (images, their sizes, optional depth overlays) and its web server (FastAPI + uvicorn).

Who may use the server: a request must name a host the server answers to (``Host``: the loopback names and the
``--host`` it listens on; DNS rebinding is refused), carry the session's token (the printed URL's ``?token=``,
which the first visit turns into a cookie, as Jupyter does) and, to change anything, come from the page's own
origin (``Origin`` / ``Sec-Fetch-Site``). Bodies are capped at `MAX_BODY_BYTES`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import posixpath
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from depthadapt.annotate.store import LabelConflictError, LabelStore
from depthadapt.io import IMAGE_SUFFIXES, UnreadableFileError, colorize_depth, list_image_files, read_depth, read_image
from depthadapt.westar import OrdinalRecord

__all__ = ["AnnotationSession", "LOOPBACK_HOSTS", "create_app", "find_depth_map", "listen", "open_session", "serve",
           "served_hosts"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DEPTH_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".exr")
"""Raw depth (or disparity) maps the overlay reads, after ``<name>_color.png`` (the prediction job's colour map)."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""Host names (as in a ``Host`` header, IPv6 in brackets) that every server answers to."""
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
MAX_BODY_BYTES = 16 * 1024
"""The page sends at most two pair rows (about 100 bytes) a request."""
SAFE_METHODS = ("GET", "HEAD")


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
    if not readable:
        raise ValueError(f"none of the {len(names)} images under --images {root} can be read, e.g. {names[0]}: "
                         f"{unreadable[names[0]]}")
    store = LabelStore(output, readable, pairs_per_image, force=force)
    for name, reason in unreadable.items():  # after every check, so that bad input is one line
        log.warning("skipping unreadable image %s: %s", root / name, reason)
    return AnnotationSession(root, readable, sizes, store, unreadable, None if depth_dir is None else Path(depth_dir))


Coordinate = Annotated[StrictInt, Field(ge=0)]
Label = Annotated[StrictInt, Field(ge=-1, le=1)]


class PairsBody(BaseModel):
    """Pair rows [y1, x1, y2, x2, label] to add or undo: JSON integers only (no "1", 1.0, true, NaN)."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[tuple[Coordinate, Coordinate, Coordinate, Coordinate, Label]] = Field(min_length=1)

    def rows(self) -> list[list[int]]:
        return [list(row) for row in self.pairs]


class SkipBody(BaseModel):
    """Whether the image is skipped: a JSON boolean."""

    model_config = ConfigDict(extra="forbid")
    skipped: StrictBool


def served_hosts(host: str) -> list[str] | None:
    """The ``Host`` names a server listening on ``host`` answers to: the loopback names and ``host`` itself;
    None (any name) for a wildcard address such as 0.0.0.0, where the token alone guards it."""
    if host in WILDCARD_ADDRESSES:
        return None
    name = (f"[{host}]" if ":" in host else host).lower()
    return list(dict.fromkeys([*LOOPBACK_HOSTS, name]))


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another page (another site, port or scheme)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """422 with what is wrong where, without echoing the input (NaN or infinity would not encode as JSON)."""
    problems = [f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in err.errors()]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return JSONResponse({"detail": "; ".join(problems[:3]) + more}, status_code=422)


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def create_app(session: AnnotationSession, *, token: str, hosts: Sequence[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The web app: the page (``/``), its static files and the JSON API under ``/api``.

    Every request must carry ``token``: as ``?token=`` (on ``/`` it is kept in a cookie and the page reloaded
    without it) or as that cookie. ``hosts``: the ``Host`` names accepted (`served_hosts`), None for any. Requests
    that change labels must come from the page's own origin.
    """
    app = FastAPI(title="depthadapt ordinal annotation", docs_url=None, redoc_url=None,
                  openapi_url=None, exception_handlers={RequestValidationError: _validation_error})
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    store = session.store
    cookie = "depthadapt-annotate-" + hashlib.sha256(token.encode()).hexdigest()[:12]  # one per server

    def is_token(value: str | None) -> bool:
        return value is not None and secrets.compare_digest(value.encode(), token.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in SAFE_METHODS and not _same_origin(request):
            origin = request.headers.get("origin") or request.headers.get("sec-fetch-site")
            return JSONResponse({"detail": f"refused: a request from another web page ({origin}) may not change "
                                 "the labels; only the annotation page may"}, status_code=403)
        if is_token(request.query_params.get("token")):
            if request.method == "GET" and request.url.path == "/":  # the printed URL: keep the token in a cookie
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(cookie, token, httponly=True, samesite="lax")
                return response
            return await call_next(request)
        if is_token(request.cookies.get(cookie)):
            return await call_next(request)
        message = ("this annotation server needs its token: open the address it printed when it started "
                   "(http://…/?token=…); a restarted server has a new one")
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=401)
        return PlainTextResponse(message, status_code=401)

    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY_BYTES)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["*"] if hosts is None else list(hosts),
                       www_redirect=False)

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
        except ValueError as err:  # pairs the store refuses: duplicates, over the cap
            raise HTTPException(422, str(err)) from None
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
            if values.size == 0:
                raise UnreadableFileError(path, f"empty depth map (shape {values.shape})")
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
        rows = body.rows()
        for row in rows:
            if not (row[0] < height and row[2] < height and row[1] < width and row[3] < width):
                raise HTTPException(422, f"pair {row} lies outside the {height} x {width} image")
        return change(index, store.add_pairs, rows)

    @app.post("/api/labels/{index}/undo")
    def undo(index: int, body: PairsBody) -> dict:
        return change(index, store.undo, body.rows())

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


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket listening on ``host``:``port`` (port 0 picks a free one); ValueError naming both if it cannot."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise ValueError(f"cannot listen on --host {host} --port {port} ({err.strerror or err}): pass another "
                         "--port (0 picks a free one) or --host") from None


def serve(session: AnnotationSession, sock: socket.socket, host: str) -> None:
    """Serve the session on ``sock`` (from `listen`, on ``host``) until interrupted; prints the URL with a new
    token."""
    import uvicorn

    bound = sock.getsockname()[1]
    shown = socket.gethostname() if host in WILDCARD_ADDRESSES else host
    shown = f"[{shown}]" if ":" in shown else shown
    token = secrets.token_urlsafe(24)
    done = sum(session.store.is_done(r) for r in session.store.records().values())
    print(f"labelling {len(session.images)} images of {session.root} into {session.store.output} "
          f"({done} done, {session.store.pairs_per_image} samples per image)", flush=True)
    if session.unreadable:
        print(f"skipped {len(session.unreadable)} unreadable images: {', '.join(session.unreadable)}", flush=True)
    hosts = served_hosts(host)
    if hosts is None or not set(hosts) <= set(LOOPBACK_HOSTS):
        print(f"listening on {host or 'every address'}, not only on this computer: anyone on the network who has "
              "the address below (with its token) can see the images and change the labels", flush=True)
    print(f"open http://{shown}:{bound}/?token={token} in a browser (Ctrl+C stops; every label is saved as it is "
          "made)", flush=True)
    config = uvicorn.Config(create_app(session, token=token, hosts=hosts), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
