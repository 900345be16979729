"""A small local web server for painting patch labels (``backswap label``).

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

import copy
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import torch
from torch import Tensor

from ..segmenter import eval_mode, segment_logits
from .active import ActiveSelector, cell_uncertainty, segmenter_features
from .catalog import ImageCatalog, InvalidImageId

__all__ = ["LabelServer", "LabelSession", "serve_labeler"]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/labeler.js": ("labeler.js", "text/javascript; charset=utf-8"),
    "/static/labeler.css": ("labeler.css", "text/css; charset=utf-8"),
}
_MAX_BODY = 1 << 20
_CSP = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


def _load_image(path: Path, size: int) -> Tensor:
    """Decode one image to a (3, size, size) uint8 tensor (RGB, bilinear resize)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


class LabelSession:
    """The state behind the page: labels, order, segmenter. Thread-safe (one re-entrant lock).

    Args:
        image_dir: folder of images; ids are POSIX paths relative to it.
        grid_size: S, cells per side.
        out: labels file. Resumed from when it exists (either format), rewritten after every image.
        segmenter: a ``PatchSegmenter`` (or any module mapping (B,3,H,W) uint8 → (B,S,S) logits),
            or ``None`` for painting from scratch.
        active: with a segmenter, offer the most uncertain image next (see :mod:`.active`).
        retrain_every: with a segmenter, fine-tune a copy in a background thread after every N new labels
            and swap it in when done. ``None``/0: never.
        paper_format: write the paper's ``masks.csv`` (``info,mask``) instead of ``image,grid_size,mask``.
        chunk_size: images scored per active-selection step.
        threshold: cell probability above which the pre-fill marks a cell (default: the tight threshold).
        retrain_kwargs: extra keyword arguments for ``finetune_segmenter``.
        finetune_fn: replaces :func:`torch_backswap.finetune.finetune_segmenter` (same call signature:
            ``(segmenter, image_dir, labels, **kwargs) -> (segmenter, history)``).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        grid_size: int = 16,
        out: str | os.PathLike = "labels.csv",
        segmenter: torch.nn.Module | None = None,
        *,
        active: bool = True,
        retrain_every: int | None = None,
        paper_format: bool = False,
        chunk_size: int = 32,
        threshold: float | None = None,
        retrain_kwargs: dict[str, Any] | None = None,
        finetune_fn: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
        if retrain_every is not None and (not isinstance(retrain_every, int) or retrain_every < 0):
            raise ValueError(f"retrain_every must be a non-negative int or None, got {retrain_every!r}")
        self.catalog = ImageCatalog(image_dir)
        self.grid_size = grid_size
        self.out = Path(out)
        self.paper_format = paper_format
        self.segmenter = segmenter
        self.active = bool(active) and segmenter is not None
        self.retrain_every = retrain_every or 0
        self.retrain_kwargs = dict(retrain_kwargs or {})
        self.finetune_fn = finetune_fn
        if threshold is None:
            threshold = 0.67
            if segmenter is not None:
                from ..segmenter import TIGHT_THRESHOLD

                threshold = TIGHT_THRESHOLD
        self.threshold = float(threshold)
        self.lock = threading.RLock()
        self.labels: dict[str, str] = {}
        self.skipped: set[str] = set()
        self.model_version = 0
        self.new_since_retrain = 0
        self.retrain_thread: threading.Thread | None = None
        self.retrain_count = 0
        self.retrain_error: str | None = None
        self.selector = (
            ActiveSelector(self.catalog.chunk, self._score_ids, chunk_size=chunk_size) if self.active else None
        )

    # ------------------------------------------------------------------ persistence
    def resume(self) -> int:
        """Load ``out`` if it exists; returns the number of labels loaded."""
        if not self.out.exists():
            return 0
        from ..labels import PatchLabels

        existing = PatchLabels.read(self.out)
        if len(existing) and existing.grid_size != self.grid_size:
            raise ValueError(
                f"grid_size={self.grid_size} does not match the {existing.grid_size}x{existing.grid_size} "
                f"labels already in {str(self.out)!r}; pass --grid {existing.grid_size} or another --out"
            )
        with self.lock:
            for image_id, grid in existing.items():
                self.labels[image_id] = "".join("1" if v else "0" for v in grid.flatten().tolist())
        return len(existing)

    def _write(self) -> None:
        from ..labels import PatchLabels

        ids = list(self.labels)
        s = self.grid_size
        grids = torch.tensor([[c == "1" for c in self.labels[i]] for i in ids], dtype=torch.bool).view(-1, s, s)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        PatchLabels(ids=ids, grids=grids).write(self.out, format="paper" if self.paper_format else "backswap")

    # ------------------------------------------------------------------ segmenter
    def _input_size(self) -> int:
        return int(getattr(self.segmenter, "input_size", 224) or 224)

    def cell_probabilities(self, ids: Sequence[str]) -> Tensor:
        """Segmenter cell probabilities, (len(ids), S, S) float32. Undecodable images give all zeros."""
        return self._predict(ids, features=False)[0]

    def _predict(self, ids: Sequence[str], features: bool) -> tuple[Tensor, Tensor | None]:
        """Cell probabilities and (with ``features``) unit-norm image features for active selection."""
        assert self.segmenter is not None
        size = self._input_size()
        images, ok = [], []
        for image_id in ids:
            try:
                path, _ = self.catalog.resolve(image_id)
                images.append(_load_image(path, size))
                ok.append(True)
            except Exception:  # a corrupt file must not stop the session
                images.append(torch.zeros(3, size, size, dtype=torch.uint8))
                ok.append(False)
        batch = torch.stack(images)
        feats = None
        with self.lock:
            if features:
                device = next((t.device for t in self.segmenter.parameters()), torch.device("cpu"))
                with eval_mode(self.segmenter) as model:
                    logits, feats = segmenter_features(model, batch.to(device))
                logits, feats = logits.float().cpu(), feats.cpu()
            else:
                logits = segment_logits(self.segmenter, batch).float().cpu()
        if logits.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(
                f"segmenter predicts a {tuple(logits.shape[-2:])} grid but grid_size={self.grid_size}"
            )
        prob = torch.sigmoid(logits)
        prob[~torch.tensor(ok)] = 0.0
        return prob, feats

    def _score_ids(self, ids: Sequence[str]) -> tuple[Tensor, Tensor]:
        prob, feats = self._predict(ids, features=True)
        return cell_uncertainty(prob), feats

    # ------------------------------------------------------------------ queries
    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "grid_size": self.grid_size,
                "labeled": len(self.labels),
                "skipped": len(self.skipped),
                "images_known": self.catalog.known,
                "images_total": self.catalog.known if self.catalog.exhausted else None,
                "out": str(self.out),
                "format": "paper" if self.paper_format else "backswap",
                "segmenter": self.segmenter is not None,
                "active": self.active,
                "model_version": self.model_version,
                "retrain_every": self.retrain_every,
                "retraining": self.retrain_thread is not None and self.retrain_thread.is_alive(),
                "retrain_count": self.retrain_count,
                "retrain_error": self.retrain_error,
            }

    def image_info(self, image_id: str) -> dict[str, Any]:
        """Cells to show for one image. Raises InvalidImageId / FileNotFoundError."""
        self.catalog.resolve(image_id)
        info: dict[str, Any] = {"id": image_id, "position": self.catalog.position(image_id), "uncertainty": None}
        with self.lock:
            saved = self.labels.get(image_id)
            info["labeled"] = saved is not None
            info["skipped"] = image_id in self.skipped
        if saved is not None:
            info.update(mask=saved, source="label")
        elif self.segmenter is not None:
            prob = self.cell_probabilities([image_id])
            cells = (prob[0] > self.threshold).flatten().tolist()
            info.update(mask="".join("1" if v else "0" for v in cells), source="segmenter")
            info["uncertainty"] = float(cell_uncertainty(prob)[0])
        else:
            info.update(mask="0" * self.grid_size**2, source="empty")
        return info

    def _excluded(self, current: str | None):
        return lambda i: i in self.labels or i in self.skipped or i == current

    def next_id(self, current: str | None = None) -> str | None:
        """Id of the next image to offer, or ``None`` when everything is labeled or skipped."""
        with self.lock:
            excluded = self._excluded(current)
            if self.selector is not None:
                return self.selector.pick(excluded)
            start = 0
            if current is not None:
                pos = self.catalog.position(current)
                start = pos + 1 if pos is not None else 0
            pos = start
            while (image_id := self.catalog.get(pos)) is not None:
                if not excluded(image_id):
                    return image_id
                pos += 1
            for pos in range(min(start, self.catalog.known)):
                image_id = self.catalog.get(pos)
                if image_id is not None and not excluded(image_id):
                    return image_id
            return None

    def neighbor(self, image_id: str, step: int) -> str | None:
        """Folder-order neighbour of ``image_id`` (``step`` = -1 or +1)."""
        ImageCatalog.check_id(image_id)
        with self.lock:
            pos = self.catalog.position(image_id)
            if pos is None or pos + step < 0:
                return None
            return self.catalog.get(pos + step)

    # ------------------------------------------------------------------ updates
    def save(self, image_id: str, mask: str) -> int:
        """Store one image's cells and rewrite the labels file durably; returns the label count."""
        s2 = self.grid_size**2
        if not isinstance(mask, str) or len(mask) != s2 or set(mask) - {"0", "1"}:
            raise ValueError(f"mask must be a string of {s2} '0'/'1' characters, got {str(mask)[:80]!r}")
        self.catalog.resolve(image_id)
        with self.lock:
            is_new = image_id not in self.labels
            self.labels[image_id] = mask
            self.skipped.discard(image_id)
            self._write()
            if is_new:
                self.new_since_retrain += 1
            if (
                self.segmenter is not None
                and self.retrain_every
                and self.new_since_retrain >= self.retrain_every
                and not (self.retrain_thread is not None and self.retrain_thread.is_alive())
            ):
                self.start_retrain()
            return len(self.labels)

    def skip(self, image_id: str) -> None:
        ImageCatalog.check_id(image_id)
        with self.lock:
            self.skipped.add(image_id)

    # ------------------------------------------------------------------ retraining
    def start_retrain(self) -> threading.Thread:
        """Fine-tune a copy of the segmenter on the current labels in a daemon thread."""
        from ..labels import PatchLabels

        with self.lock:
            if self.segmenter is None:
                raise RuntimeError("retraining needs a segmenter")
            ids = list(self.labels)
            s = self.grid_size
            grids = torch.tensor([[c == "1" for c in self.labels[i]] for i in ids], dtype=torch.bool).view(-1, s, s)
            snapshot = PatchLabels(ids=ids, grids=grids)
            model = copy.deepcopy(self.segmenter)
            self.new_since_retrain = 0
            thread = threading.Thread(target=self._retrain, args=(model, snapshot), name="labeler-retrain", daemon=True)
            self.retrain_thread = thread
        thread.start()
        return thread

    def _retrain(self, model: torch.nn.Module, labels: Any) -> None:
        try:
            finetune = self.finetune_fn
            if finetune is None:
                from ..finetune import finetune_segmenter as finetune

            kwargs = {"epochs": 10, "progress": False}
            kwargs.update(self.retrain_kwargs)
            result = finetune(model, str(self.catalog.root), labels, **kwargs)
            best = result[0] if isinstance(result, tuple) else result
            with self.lock:
                self.segmenter = best
                self.model_version += 1
                self.retrain_count += 1
                self.retrain_error = None
                if self.selector is not None:
                    self.selector.invalidate()
        except Exception as exc:  # reported on the page, the session goes on with the old model
            with self.lock:
                self.retrain_error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)


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
