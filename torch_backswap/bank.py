"""BackgroundBank: the inpainted backgrounds of a training set, ready to be sampled at swap time.

A bank holds ``uint8`` backgrounds ``(N, 3, H, W)`` (4x smaller than float32 and what a composite reads
anyway) and the class label of the image each came from. Build it once with :meth:`BackgroundBank.build`
(segment → loose mask → inpaint, in batches, on any device), :meth:`save` / :meth:`load` it as one
safetensors file whose header carries the JSON metadata, and :meth:`sample` backgrounds per batch.

Devices and processes
---------------------
* The bank always keeps its CPU tensors; :meth:`to` returns a bank that *additionally* caches the
  tensors on another device (the CPU tensors are shared, not copied). :meth:`cpu` gives the CPU view back
  for free — DataLoader workers use it, they never touch CUDA.
* :meth:`share_memory_` moves the CPU tensors to shared memory so forked / spawned workers read one copy.
* Pickling a bank pickles only its CPU tensors (with ``torch.multiprocessing`` these travel as shared
  memory); an unpickled bank lives on the CPU — call :meth:`to` again in the main process if needed.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["BackgroundBank", "STRATEGIES", "BANK_FORMAT"]

STRATEGIES = ("class_balanced", "uniform", "other_class")
BANK_FORMAT = "torch-backswap/background-bank"
_BANK_VERSION = 1


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or an (H, W) pair, got {size!r}") from None
    if h < 2 or w < 2:
        raise ValueError(f"size must be at least 2x2, got {size!r}")
    return h, w


def to_uint8_rgb(images: Tensor, name: str = "images") -> Tensor:
    """``(B, C, H, W)`` uint8 or float in [0, 1] with C in {1, 3, 4} → uint8 ``(B, 3, H, W)``.

    Grayscale is repeated to 3 channels, the alpha channel of RGBA is dropped, floats are rounded.
    NaN / inf raise ``ValueError``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    c = images.shape[1]
    if c not in (1, 3, 4):
        raise ValueError(f"{name} must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c}")
    if c == 1:
        images = images.expand(-1, 3, -1, -1)
    elif c == 4:
        images = images[:, :3]
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contain NaN or inf values")
    return (images.float() * 255.0).clamp_(0, 255).add_(0.5).to(torch.uint8)


def _resize_uint8(images: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, list(size), antialias=True)


def _item_to_tensor(item: Any) -> Tensor:
    """One image (PIL, tensor (C,H,W) or (H,W), tv_tensors.Image) → uint8 (3, H, W)."""
    from PIL import Image as PILImage

    if isinstance(item, PILImage.Image):
        from torchvision.transforms.v2 import functional as TF

        item = TF.pil_to_tensor(item.convert("RGB"))
    if not isinstance(item, Tensor):
        raise TypeError(f"images must be tensors or PIL images, got {type(item).__name__}")
    t = item.as_subclass(Tensor)
    if t.ndim == 2:
        t = t[None]
    return to_uint8_rgb(t[None])[0]


def _collate_images(batch: list, size: tuple[int, int] | None) -> tuple[Tensor, Tensor | None]:
    """Collate ``image`` or ``(image, label, ...)`` samples into uint8 ``(B,3,H,W)`` at ``size`` + labels."""
    images, labels = [], []
    for sample in batch:
        if isinstance(sample, dict):
            img = sample.get("image", next(iter(sample.values())))
            lab = sample.get("label", sample.get("labels"))
        elif isinstance(sample, (tuple, list)):
            img = sample[0]
            lab = sample[1] if len(sample) > 1 else None
        else:
            img, lab = sample, None
        t = _item_to_tensor(img)
        if size is None:
            size = tuple(t.shape[-2:])
        images.append(_resize_uint8(t[None], size)[0])
        labels.append(lab)
    lab_t = None if any(lab is None for lab in labels) else torch.as_tensor([int(x) for x in labels], dtype=torch.long)
    return torch.stack(images), lab_t


def _segmenter_name(segmenter: Any) -> str | None:
    if isinstance(segmenter, str):
        return segmenter
    for attr in ("name_or_path", "_name_or_path", "pretrained_name"):
        value = getattr(segmenter, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return str(value)
    return type(segmenter).__name__ if segmenter is not None else None


class BackgroundBank:
    """Inpainted backgrounds with the class label of their source image.

    Args:
        backgrounds: uint8 ``(N, 3, H, W)``.
        labels: integer ``(N,)`` source-class labels (stored as int64).
        classes: optional class names (``classes[label]``).
        metadata: JSON-serialisable dict (resolution, segmenter, inpainter, thresholds, ...).
    """

    def __init__(
        self,
        backgrounds: Tensor,
        labels: Tensor | Sequence[int],
        classes: Sequence[str] | None = None,
        metadata: dict | None = None,
    ) -> None:
        if not isinstance(backgrounds, Tensor) or backgrounds.ndim != 4 or backgrounds.shape[1] != 3:
            raise ValueError(
                f"backgrounds must be a uint8 (N, 3, H, W) tensor, got {getattr(backgrounds, 'shape', type(backgrounds))}"
            )
        if backgrounds.dtype != torch.uint8:
            raise ValueError(f"backgrounds must be uint8, got dtype {backgrounds.dtype} (use to_uint8_rgb)")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != backgrounds.shape[0]:
            raise ValueError(f"labels must be a ({backgrounds.shape[0]},) tensor, got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        if backgrounds.shape[0] == 0:
            raise ValueError("backgrounds must contain at least one image, got N=0")
        labels = labels.to(torch.long)
        if bool((labels < 0).any()):
            raise ValueError(f"labels must be >= 0, got min {int(labels.min())}")
        if classes is not None:
            classes = [str(c) for c in classes]
            if int(labels.max()) >= len(classes):
                raise ValueError(f"classes has {len(classes)} names but labels go up to {int(labels.max())}")
        self.classes: list[str] | None = classes
        self.metadata: dict = dict(metadata or {})
        device = backgrounds.device
        self._cpu_backgrounds = backgrounds.detach().cpu().contiguous()
        self._cpu_labels = labels.detach().cpu().contiguous()
        self.backgrounds = backgrounds.detach().contiguous() if device.type != "cpu" else self._cpu_backgrounds
        self.labels = labels.to(device)
        self._index_cache: tuple | None = None

    # ------------------------------------------------------------------------------------------------
    # basics
    # ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.backgrounds.shape[0])

    @property
    def device(self) -> torch.device:
        return self.backgrounds.device

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored backgrounds."""
        return int(self.backgrounds.shape[-2]), int(self.backgrounds.shape[-1])

    @property
    def present_classes(self) -> list[int]:
        """Sorted class indices that have at least one background."""
        return self._index()[0].tolist()

    def __repr__(self) -> str:
        return (
            f"BackgroundBank(n={len(self)}, size={self.size}, classes={self.classes or self.present_classes}, "
            f"device={self.device})"
        )

    def _with_tensors(self, backgrounds: Tensor, labels: Tensor) -> "BackgroundBank":
        new = object.__new__(BackgroundBank)
        new.classes = None if self.classes is None else list(self.classes)
        new.metadata = dict(self.metadata)
        new._cpu_backgrounds = self._cpu_backgrounds
        new._cpu_labels = self._cpu_labels
        new.backgrounds = backgrounds
        new.labels = labels
        new._index_cache = self._index_cache
        return new

    def to(self, device: torch.device | str) -> "BackgroundBank":
        """A bank caching its tensors on ``device`` (returns a new bank; the CPU tensors are shared)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.cpu()
        if device == self.device:
            return self
        return self._with_tensors(self._cpu_backgrounds.to(device), self._cpu_labels.to(device))

    def cpu(self) -> "BackgroundBank":
        """The CPU view of this bank (no copy; safe to use in DataLoader workers)."""
        if self.device.type == "cpu":
            return self
        return self._with_tensors(self._cpu_backgrounds, self._cpu_labels)

    def share_memory_(self) -> "BackgroundBank":
        """Move the CPU tensors to shared memory (in place) so DataLoader workers share one copy."""
        self._cpu_backgrounds.share_memory_()
        self._cpu_labels.share_memory_()
        return self

    def is_shared(self) -> bool:
        return self._cpu_backgrounds.is_shared()

    def __getstate__(self) -> dict:
        return {
            "backgrounds": self._cpu_backgrounds,
            "labels": self._cpu_labels,
            "classes": self.classes,
            "metadata": self.metadata,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["backgrounds"], state["labels"], state["classes"], state["metadata"])

    # ------------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------------

    def _index(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(present classes, counts, start offsets, order) on CPU, cached."""
        if self._index_cache is None:
            labels = self._cpu_labels
            order = torch.argsort(labels, stable=True)
            present, counts = torch.unique(labels, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            self._index_cache = (present, counts, starts, order)
        return self._index_cache

    def sample_indices(
        self,
        n: int,
        labels: Tensor | Sequence[int] | None = None,
        strategy: str = "class_balanced",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Indices ``(n,)`` (int64, on the bank's device) of sampled backgrounds.

        Strategies:
            * ``"class_balanced"`` (paper): a source class uniformly among the classes present, then a
              background of that class uniformly — breaks the class/background correlation.
            * ``"uniform"``: any background uniformly (keeps the dataset's class frequencies).
            * ``"other_class"``: a class uniformly among the present classes *other than* the sample's own
              label (needs ``labels``; a bank with a single class raises ``ValueError``).

        Args:
            n: number of samples.
            labels: ``(n,)`` class indices of the foregrounds (or ``(n, K)`` soft labels → argmax); only
                ``"other_class"`` needs them.
            strategy: one of :data:`STRATEGIES`.
            generator: CPU ``torch.Generator`` for reproducibility (default: global RNG).
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        present, counts, starts, order = self._index()
        k = present.shape[0]
        if strategy == "uniform":
            idx = torch.randint(len(self), (n,), generator=generator)
            return idx.to(self.device)
        if strategy == "class_balanced":
            cls_pos = torch.randint(k, (n,), generator=generator)
        else:
            if labels is None:
                raise ValueError("strategy='other_class' needs the foreground labels, got labels=None")
            if k < 2:
                raise ValueError(
                    f"strategy='other_class' needs a bank with at least 2 classes, but this bank only has class "
                    f"{present.tolist()}; use strategy='class_balanced' or 'uniform', or build the bank from more classes"
                )
            lab = torch.as_tensor(labels).detach().cpu()
            if lab.ndim == 2:
                lab = lab.argmax(dim=1)
            if lab.ndim != 1 or lab.shape[0] != n:
                raise ValueError(f"labels must have shape ({n},) or ({n}, K), got {tuple(torch.as_tensor(labels).shape)}")
            lab = lab.long()
            pos = torch.searchsorted(present, lab)
            is_present = (pos < k) & (present[pos.clamp_max(k - 1)] == lab)
            n_allowed = k - is_present.long()
            r = (torch.rand(n, generator=generator) * n_allowed).long().clamp_max(n_allowed - 1)
            cls_pos = r + (is_present & (r >= pos)).long()
        u = torch.rand(n, generator=generator)
        within = (u * counts[cls_pos]).long().clamp_max(counts[cls_pos] - 1)
        idx = order[starts[cls_pos] + within]
        return idx.to(self.device)

    def sample(
        self,
        n: int,
        labels: Tensor | Sequence[int] | None = None,
        strategy: str = "class_balanced",
        generator: torch.Generator | None = None,
        *,
        size: int | Sequence[int] | None = None,
        return_indices: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample ``n`` backgrounds: uint8 ``(n, 3, H, W)`` on the bank's device (a fresh tensor).

        ``size`` resizes on the fly (antialiased bilinear, stays uint8) when it differs from the bank's
        resolution. See :meth:`sample_indices` for ``labels``, ``strategy`` and ``generator``.
        With ``return_indices`` also returns the ``(n,)`` indices (their classes: ``bank.labels[idx]``).
        """
        idx = self.sample_indices(n, labels, strategy, generator)
        out = self.backgrounds.index_select(0, idx)
        size = _as_size(size)
        if size is not None and size != self.size:
            out = _resize_uint8(out, size).contiguous()
        return (out, idx) if return_indices else out

    # ------------------------------------------------------------------------------------------------
    # persistence
    # ------------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.safetensors`` file (tensors ``backgrounds``, ``labels``; JSON metadata in its header).

        Atomic (temporary file + ``os.replace``). Returns the path.
        """
        from safetensors.torch import save_file

        path = Path(path)
        meta = dict(self.metadata)
        meta.update({"format": BANK_FORMAT, "version": _BANK_VERSION, "resolution": list(self.size), "count": len(self)})
        meta["classes"] = self.classes
        header = {"backswap": json.dumps(meta, sort_keys=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file({"backgrounds": self._cpu_backgrounds, "labels": self._cpu_labels}, str(tmp), metadata=header)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "BackgroundBank":
        """Read a bank written by :meth:`save` (safetensors only; never unpickles)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"background bank file not found: {str(path)!r}")
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            keys = set(f.keys())
            if not {"backgrounds", "labels"} <= keys:
                raise ValueError(f"{str(path)!r} is not a background bank (tensors {sorted(keys)})")
            backgrounds = f.get_tensor("backgrounds")
            labels = f.get_tensor("labels")
        try:
            meta = json.loads(header.get("backswap", "{}"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} has unreadable bank metadata: {err}") from None
        if meta.get("format", BANK_FORMAT) != BANK_FORMAT:
            raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, expected {BANK_FORMAT!r}")
        classes = meta.pop("classes", None)
        for key in ("format", "version", "resolution", "count"):
            meta.pop(key, None)
        bank = cls(backgrounds, labels, classes, meta)
        return bank.to(device)

    # ------------------------------------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        images: Tensor | Sequence | torch.utils.data.Dataset,
        labels: Tensor | Sequence[int] | None = None,
        segmenter: Any = None,
        inpainter: Any = "pyramid",
        *,
        holes: Tensor | None = None,
        size: int | Sequence[int] | None = None,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        loose_threshold: float | None = None,
        classes: Sequence[str] | None = None,
        num_workers: int = 0,
        progress: bool = True,
        metadata: dict | None = None,
    ) -> "BackgroundBank":
        """Segment every image, fill its loose mask with the inpainter and keep the uint8 result.

        Args:
            images: uint8/float tensor ``(N, C, H, W)`` (C in 1/3/4), a sequence of images (PIL / tensors), or
                a map-style dataset whose items are ``image`` or ``(image, label, ...)`` /
                ``{"image": ..., "label": ...}``.
            labels: ``(N,)`` class labels (optional when the dataset yields them).
            segmenter: a :class:`~torch_backswap.segmenter.PatchSegmenter`, a name / path for
                ``PatchSegmenter.from_pretrained``, or any callable ``images -> (B, S, S) logits``.
                Not needed when ``holes`` are given.
            inpainter: name or object for :func:`~torch_backswap.inpaint.get_inpainter`.
            holes: optional ``(N, 1, H, W)`` given hole masks (bool / float > 0.5) instead of a segmenter
                (resized to ``size`` with nearest neighbour).
            size: bank resolution ``(H, W)`` or int; every image is resized to it (antialiased; the aspect
                ratio is not kept). Default: the first image's size.
            batch_size: images per segment-and-inpaint step.
            device: where segmentation and inpainting run (the bank is returned on this device).
            loose_threshold: foreground probability above which a pixel is a hole (default
                :data:`~torch_backswap.segmenter.LOOSE_THRESHOLD` = 0.1, the paper's loose mask).
            classes: class names stored in the metadata.
            num_workers: DataLoader workers to decode a dataset.
            progress: show a tqdm bar (unit: images, so it reports images/s).
            metadata: extra JSON-serialisable metadata to store.

        After building, ``bank.build_stats`` holds ``{"images", "seconds", "images_per_s"}``.
        """
        from tqdm.auto import tqdm

        from .inpaint import get_inpainter
        from .segmenter import LOOSE_THRESHOLD, TIGHT_THRESHOLD, PatchSegmenter, segment_probability

        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        loose = LOOSE_THRESHOLD if loose_threshold is None else float(loose_threshold)
        if not 0.0 <= loose <= 1.0:
            raise ValueError(f"loose_threshold must be in [0, 1], got {loose_threshold!r}")
        device = torch.device(device)
        size = _as_size(size)
        if segmenter is None and holes is None:
            raise ValueError("BackgroundBank.build needs a segmenter (or given holes), got segmenter=None")
        seg_name = _segmenter_name(segmenter)
        if isinstance(segmenter, (str, os.PathLike)):
            segmenter = PatchSegmenter.from_pretrained(segmenter)
        was_training = None
        if isinstance(segmenter, torch.nn.Module):
            was_training = segmenter.training
            segmenter = segmenter.eval().to(device)
        fill = get_inpainter(inpainter)

        batches, total, given_labels = cls._batches(images, labels, size, batch_size, num_workers)
        out_bg: list[Tensor] = []
        out_lab: list[Tensor] = []
        done = 0
        start = time.perf_counter()
        bar = tqdm(total=total, unit="img", desc="building background bank", disable=not progress)
        try:
            for x, lab in batches:
                if size is None:
                    size = tuple(x.shape[-2:])
                x = _resize_uint8(x, size).to(device)
                b = x.shape[0]
                with torch.no_grad():
                    if holes is not None:
                        hole = holes[done : done + b]
                        if hole.shape[0] != b:
                            raise ValueError(f"holes has {holes.shape[0]} masks for {total} images")
                        hole = hole.to(device)
                        hole = hole > 0.5 if hole.dtype.is_floating_point else hole.bool()
                        if tuple(hole.shape[-2:]) != size:
                            hole = torch.nn.functional.interpolate(hole.float(), size=size, mode="nearest") > 0.5
                    else:
                        hole = segment_probability(segmenter, x, size) > loose
                    # uint8 in -> uint8 out: the inpainter rounds exactly as to_uint8_rgb would
                    filled = fill(x, hole)
                out_bg.append(to_uint8_rgb(filled) if filled.dtype != torch.uint8 else filled)
                if lab is not None:
                    out_lab.append(lab.to(torch.long).cpu())
                done += b
                bar.update(b)
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(images_per_s=f"{done / elapsed:.0f}")
        finally:
            bar.close()
            if was_training:
                segmenter.train()
        seconds = time.perf_counter() - start
        if done == 0:
            raise ValueError("BackgroundBank.build got no images")
        if given_labels is not None:
            all_labels = given_labels
        elif len(out_lab) == len(out_bg):
            all_labels = torch.cat(out_lab)
        else:
            raise ValueError("BackgroundBank.build needs labels: pass labels= or a dataset yielding (image, label)")
        if all_labels.shape[0] != done:
            raise ValueError(f"labels has {all_labels.shape[0]} entries for {done} images")
        meta = {
            "segmenter": None if holes is not None else seg_name,
            "inpainter": repr(fill),
            "loose_threshold": loose,
            "tight_threshold": TIGHT_THRESHOLD,
            "source_count": done,
        }
        meta.update(metadata or {})
        bank = cls(torch.cat(out_bg), all_labels.to(device), classes, meta)
        bank.build_stats = {"images": done, "seconds": seconds, "images_per_s": done / max(seconds, 1e-9)}
        return bank

    @staticmethod
    def _batches(
        images: Any, labels: Any, size: tuple[int, int] | None, batch_size: int, num_workers: int
    ) -> tuple[Iterable[tuple[Tensor, Tensor | None]], int, Tensor | None]:
        given = None if labels is None else torch.as_tensor(labels).long().flatten()
        if isinstance(images, Tensor):
            x = images
            if x.ndim == 3:
                x = x[None]
            if x.ndim != 4:
                raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
            n = x.shape[0]
            if given is not None and given.shape[0] != n:
                raise ValueError(f"labels has {given.shape[0]} entries for {n} images")

            def gen():
                for i in range(0, n, batch_size):
                    chunk = to_uint8_rgb(x[i : i + batch_size])
                    yield chunk, None if given is None else given[i : i + batch_size]

            return gen(), n, given
        if not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
            raise TypeError(f"images must be a tensor, a sequence or a map-style dataset, got {type(images).__name__}")
        loader = torch.utils.data.DataLoader(
            images,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=partial(_collate_images, size=size),
        )
        return iter(loader), len(images), given
