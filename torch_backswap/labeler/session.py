"""The state behind the labelling page (``backswap label``): labels, the order images are offered in, the segmenter.

:class:`LabelSession` is plain Python, thread-safe (one re-entrant lock) and independent of HTTP: the page's
server (:mod:`.server`) calls it, and so can a test or a notebook. Labels are rewritten durably after every
image (:meth:`PatchLabels.write`); with a segmenter it pre-fills cells, offers the most uncertain image next
(:mod:`.active`) and can fine-tune a copy in a background thread.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..segmenter import eval_mode, segment_logits
from .active import ActiveSelector, cell_uncertainty, segmenter_features
from .catalog import ImageCatalog

__all__ = ["LabelSession"]


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
