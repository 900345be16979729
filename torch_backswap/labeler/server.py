"""A small local web server for painting patch labels (``backswap label``); the state behind it is a
:class:`~torch_backswap.labeler.session.LabelSession`.

Standard library only (:class:`http.server.ThreadingHTTPServer`), bound to ``127.0.0.1``.

Routes (everything else is 404, there is no directory listing):

* ``GET /`` and ``GET /static/labeler.{js,css}`` — the page, from a fixed table (no file-system mapping).
* ``GET /img/<id>`` — one image under ``image_dir``; ids are checked by
  :class:`~torch_backswap.labeler.catalog.ImageCatalog` (``..``, absolute, encoded → 400; outside,
  missing, symlink escaping, non-image → 404).
* ``GET /api/state`` — grid size, counts, segmenter/retraining status.
* ``GET /api/image?id=`` — the cells to show: the saved label, else the segmenter's tight pre-fill, else empty.
* ``GET /api/next?current=`` — the next image to label (most uncertain with a segmenter and ``active``,
  else the next unlabeled one in folder order).
* ``GET /api/neighbor?id=&step=±1`` — folder-order neighbour (used by "previous" after a reload).
* ``POST /api/label`` ``{"id", "mask"}`` — store one image's cells; the labels file is rewritten
  durably (:meth:`PatchLabels.write`: unique temporary file, ``fsync``, :func:`os.replace`) before the
  answer is sent.
* ``POST /api/skip`` ``{"id"}`` — do not offer this image again in this session.

POSTs must be ``application/json`` and come from the page's own origin; every request must carry a
``Host`` of ``127.0.0.1:<port>`` or ``localhost:<port>`` (DNS-rebinding guard).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import torch

from .catalog import ImageCatalog, InvalidImageId
from .session import LabelSession

__all__ = ["LabelServer", "serve_labeler"]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/labeler.js": ("labeler.js", "text/javascript; charset=utf-8"),
    "/static/labeler.css": ("labeler.css", "text/css; charset=utf-8"),
}
_MAX_BODY = 1 << 20
_CSP = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "backswap-labeler"
    sys_version = ""

    # --------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in {f"127.0.0.1:{port}", f"localhost:{port}"}

    # --------------------------------------------------------------- GET
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            self._get()
        except InvalidImageId as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
        except Exception as exc:  # pragma: no cover - reported to the page
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _get(self) -> None:
        if not self._host_ok():
            return self._error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        parts = urlsplit(self.path)
        route, query = parts.path, parse_qs(parts.query)
        session = self.server.session

        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        if route in _STATIC:
            name, ctype = _STATIC[route]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            return self._send(
                HTTPStatus.OK, body, ctype, {"Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
                                             "X-Frame-Options": "DENY"}
            )
        if route == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if route.startswith("/img/"):
            try:
                image_id = unquote(route[len("/img/"):], errors="strict")
            except UnicodeDecodeError:
                raise InvalidImageId("image id is not valid UTF-8 after URL decoding") from None
            path, mime = session.catalog.resolve(image_id)
            return self._send(HTTPStatus.OK, path.read_bytes(), mime, {"Cache-Control": "private, max-age=3600"})
        if route == "/api/state":
            return self._json(HTTPStatus.OK, session.state())
        if route == "/api/image":
            image_id = arg("id")
            if image_id is None:
                return self._error(HTTPStatus.BAD_REQUEST, "missing id")
            return self._json(HTTPStatus.OK, session.image_info(image_id))
        if route == "/api/next":
            current = arg("current")
            if current is not None:
                ImageCatalog.check_id(current)
            return self._json(HTTPStatus.OK, {"id": session.next_id(current)})
        if route == "/api/neighbor":
            image_id, step = arg("id"), arg("step")
            if image_id is None or step not in ("-1", "1"):
                return self._error(HTTPStatus.BAD_REQUEST, "need id and step=-1|1")
            return self._json(HTTPStatus.OK, {"id": session.neighbor(image_id, int(step))})
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    # --------------------------------------------------------------- POST
    def do_POST(self) -> None:
        try:
            self._post()
        except InvalidImageId as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:  # pragma: no cover
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _post(self) -> None:
        if not self._host_ok():
            return self._error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        origin = self.headers.get("Origin")
        port = self.server.server_address[1]
        if origin is not None and origin not in {f"http://127.0.0.1:{port}", f"http://localhost:{port}"}:
            return self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > _MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, f"body length must be 1..{_MAX_BODY}, got {length}")
        try:
            payload = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "body is not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            return self._error(HTTPStatus.BAD_REQUEST, "body must be an object with a string 'id'")
        session = self.server.session
        route = urlsplit(self.path).path
        if route == "/api/label":
            count = session.save(payload["id"], payload.get("mask"))
            return self._json(HTTPStatus.OK, {"ok": True, "labeled": count})
        if route == "/api/skip":
            session.skip(payload["id"])
            return self._json(HTTPStatus.OK, {"ok": True})
        return self._error(HTTPStatus.NOT_FOUND, "not found")


class LabelServer(ThreadingHTTPServer):
    """The labeling web server, bound to 127.0.0.1. ``serve_forever()`` to run, ``close()`` to stop.

    Args:
        session: the :class:`LabelSession` holding labels and order.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        verbose: log every request to stderr.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, session: LabelSession, port: int = 0, *, verbose: bool = False) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
        self.session = session
        self.verbose = verbose
        self._thread: threading.Thread | None = None
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start(self) -> threading.Thread:
        """Serve from a daemon thread (for tests and notebooks); returns the thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="labeler-http", daemon=True
        )
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop serving (if started with :meth:`start`) and release the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> LabelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_labeler(
    image_dir: str | os.PathLike,
    grid_size: int = 16,
    out: str | os.PathLike = "labels.csv",
    segmenter: torch.nn.Module | str | None = None,
    port: int = 0,
    active: bool = True,
    retrain_every: int | None = None,
    paper_format: bool = False,
    *,
    chunk_size: int = 32,
    retrain_kwargs: dict[str, Any] | None = None,
    finetune_fn: Callable[..., Any] | None = None,
    verbose: bool = False,
) -> LabelServer:
    """Build (but do not start) the labeling server.

    Args:
        image_dir: folder of images to label (searched recursively; ids are relative POSIX paths).
        grid_size: S, cells per side of the grid.
        out: labels file; resumed from if it exists, rewritten atomically after every image.
        segmenter: ``PatchSegmenter``, a name/path for ``PatchSegmenter.from_pretrained``, or ``None``.
        port: TCP port on 127.0.0.1 (0 = any free port; read ``server.url``).
        active: with a segmenter, offer the most uncertain image next; otherwise folder order.
        retrain_every: with a segmenter, fine-tune it in the background every N new labels.
        paper_format: write the paper's ``masks.csv`` layout (``info,mask``).
        chunk_size: images scored per active-selection step.
        retrain_kwargs: forwarded to ``finetune_segmenter`` (e.g. ``epochs``, ``lr``, ``batch_size``).
        finetune_fn: replaces ``finetune_segmenter`` (tests, custom training loops).
        verbose: log requests to stderr.

    Returns:
        A :class:`LabelServer`; call ``serve_forever()`` (blocking) or ``start()`` (thread), then ``close()``.
    """
    if isinstance(segmenter, (str, os.PathLike)):
        from ..segmenter import PatchSegmenter

        segmenter = PatchSegmenter.from_pretrained(segmenter)
    session = LabelSession(
        image_dir,
        grid_size,
        out,
        segmenter,
        active=active,
        retrain_every=retrain_every,
        paper_format=paper_format,
        chunk_size=chunk_size,
        retrain_kwargs=retrain_kwargs,
        finetune_fn=finetune_fn,
    )
    session.resume()
    return LabelServer(session, port, verbose=verbose)
