"""BackgroundBank: the inpainted backgrounds of a training set, ready to be sampled at swap time.

A bank holds ``uint8`` backgrounds ``(N, 3, H, W)`` (4x smaller than float32 and what a composite reads
anyway) and the class label of the image each came from. This module is the *store*: sampling
(:meth:`~BackgroundBank.sample_indices`, :meth:`~BackgroundBank.gather`, :meth:`~BackgroundBank.sample`),
devices and files. Building a bank (segment → loose mask → inpaint) is :func:`torch_backswap.build.build_bank`;
a bank larger than device memory is :class:`torch_backswap.streaming.StreamingBackgroundBank` (same
sampling interface).

Files (:mod:`torch_backswap.bankfiles`): :meth:`~BackgroundBank.save` writes one safetensors file (or, with
``shard_size``, a directory of shards plus ``manifest.json``); :meth:`~BackgroundBank.load` reads either and
verifies format version and checksums.

Devices and processes
---------------------
* The bank always keeps its CPU tensors; :meth:`to` returns a bank that *additionally* caches the
  tensors on another device (the CPU tensors are shared, not copied). :meth:`cpu` gives the CPU view back
  for free — DataLoader workers use it, they never touch CUDA.
* :meth:`share_memory_` moves the CPU tensors to shared memory so forked / spawned workers read one copy.
* Pickling a bank pickles only its CPU tensors (with ``torch.multiprocessing`` these travel as shared
  memory); an unpickled bank lives on the CPU — call :meth:`to` again in the main process if needed.

Distributed data-parallel training (``torchrun --nproc_per_node=N train.py``)
---------------------------------------------------------------------------
Every rank loads the bank (or opens a :class:`~torch_backswap.streaming.StreamingBackgroundBank` on its own
device when the bank is larger than device memory), makes one swap from **one seed shared by all ranks**, and
puts it in the DataLoader's collate::

    dist.init_process_group("nccl")                       # gloo on CPU
    rank, device = dist.get_rank(), torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    bank = BackgroundBank.load("bank/")                   # or StreamingBackgroundBank("bank/", device, max_bytes=8 << 30)
    swap = BackgroundSwap(bank, seed=0)                   # the same seed on every rank
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler, num_workers=8,
                        collate_fn=BackgroundSwapCollate(swap),                  # collate, then one batched swap
                        generator=torch.Generator().manual_seed(1000 + rank))   # per-rank worker seeds
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, alpha, labels in loader:              # samples (image, ObjectAlpha, label), swapped
            ...

The swap derives its stream from ``(seed, rank)`` in the main process and from ``(seed, worker seed)`` in
a worker. The DataLoader draws its workers' seeds from its ``generator`` (default: the rank's global RNG,
which DDP scripts usually seed alike on every rank), so give it a per-rank generator as above: then every
rank and every worker has its own stream, two ranks never produce the same swap for the same step, and a
rerun with the same seeds repeats every swap (``tests/test_distributed.py`` runs this pattern on 2 ranks).

Example:
    >>> import torch
    >>> bank = BackgroundBank(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    >>> idx = bank.sample_indices(3, generator=torch.Generator().manual_seed(0))
    >>> bank.gather(idx, size=16).shape
    torch.Size([3, 3, 16, 16])
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ._image import resize_uint8
from .bankfiles import (
    BANK_FORMAT,
    BankManifest,
    read_bank_file,
    shard_name,
    write_bank_file,
    write_shard,
)

__all__ = ["BANK_FORMAT", "STRATEGIES", "BackgroundBank", "Bank", "as_bank"]

STRATEGIES = ("class_balanced", "uniform", "other_class")
_SHARD_FILE = re.compile(r"shard-\d{5,}(-[0-9a-f]{8})?\.safetensors")  # the shard names save() and build_bank write


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


@runtime_checkable
class Bank(Protocol):
    """What a swap reads from a bank of backgrounds: :class:`BackgroundBank` (in memory) and
    :class:`~torch_backswap.streaming.StreamingBackgroundBank` (streamed from shards) are both one.

    ``labels``: int64 ``(N,)`` class of each background's source image, on :attr:`device`."""

    labels: Tensor

    @property
    def device(self) -> torch.device: ...

    @property
    def present_classes(self) -> list[int]: ...

    def sample_indices(self, n: int, labels: Tensor | Sequence[int] | None = None, strategy: str = "class_balanced",
                       generator: torch.Generator | None = None) -> Tensor: ...

    def gather(self, indices: Tensor | Sequence[int], size: int | Sequence[int] | None = None) -> Tensor: ...

    def to(self, device: torch.device | str) -> "Bank": ...

    def cpu(self) -> "Bank": ...

    def share_memory_(self) -> "Bank": ...


def as_bank(bank: Bank | str | os.PathLike, name: str = "bank") -> Bank:
    """A :class:`Bank` as given, or the :class:`BackgroundBank` saved at a path (``TypeError`` for anything else)."""
    if isinstance(bank, (str, os.PathLike)):
        return BackgroundBank.load(bank)
    if not isinstance(bank, Bank):
        missing = [m for m in ("labels", "device", "present_classes", "sample_indices", "gather", "to", "cpu",
                               "share_memory_") if not hasattr(bank, m)]
        raise TypeError(f"{name} must be a BackgroundBank, a StreamingBackgroundBank (any Bank) or a path to a saved "
                        f"bank, got {type(bank).__name__} (missing {missing})")
    return bank


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
            raise ValueError(f"backgrounds must be uint8, got dtype {backgrounds.dtype} (use torch_backswap._image.to_uint8_rgb)")
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

    def _with_tensors(self, backgrounds: Tensor, labels: Tensor) -> BackgroundBank:
        new = object.__new__(BackgroundBank)
        new.classes = None if self.classes is None else list(self.classes)
        new.metadata = dict(self.metadata)
        new._cpu_backgrounds = self._cpu_backgrounds
        new._cpu_labels = self._cpu_labels
        new.backgrounds = backgrounds
        new.labels = labels
        new._index_cache = self._index_cache
        return new

    def to(self, device: torch.device | str) -> BackgroundBank:
        """A bank caching its tensors on ``device`` (returns a new bank; the CPU tensors are shared)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.cpu()
        if device == self.device:
            return self
        return self._with_tensors(self._cpu_backgrounds.to(device), self._cpu_labels.to(device))

    def cpu(self) -> BackgroundBank:
        """The CPU view of this bank (no copy; safe to use in DataLoader workers)."""
        if self.device.type == "cpu":
            return self
        return self._with_tensors(self._cpu_backgrounds, self._cpu_labels)

    def share_memory_(self) -> BackgroundBank:
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
        present, counts, starts, order = self._index()
        if check_strategy(n, strategy) == "uniform":
            return torch.randint(len(self), (n,), generator=generator).to(self.device)
        cls_pos = draw_class_positions(n, present, labels, strategy, generator)
        u = torch.rand(n, generator=generator)
        within = (u * counts[cls_pos]).long().clamp_max(counts[cls_pos] - 1)
        idx = order[starts[cls_pos] + within]
        return idx.to(self.device)

    def gather(self, indices: Tensor | Sequence[int], size: int | Sequence[int] | None = None) -> Tensor:
        """Backgrounds ``indices`` → a fresh uint8 ``(n, 3, H, W)`` tensor on the bank's device.

        ``size`` (int or ``(H, W)``) resizes on the fly (antialiased bilinear, stays uint8) when it differs
        from the bank's resolution. Indices out of ``[0, len(bank))`` raise ``IndexError`` naming them.
        """
        idx = check_indices(indices, len(self)).to(self.device)
        out = self.backgrounds.index_select(0, idx)
        size = _as_size(size)
        if size is not None and size != self.size:
            out = resize_uint8(out, size).contiguous()
        return out

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

        :meth:`sample_indices` then :meth:`gather`; see them for the arguments. With ``return_indices``
        also returns the ``(n,)`` indices (their classes: ``bank.labels[idx]``).
        """
        idx = self.sample_indices(n, labels, strategy, generator)
        out = self.gather(idx, size)
        return (out, idx) if return_indices else out

    # ------------------------------------------------------------------------------------------------
    # files
    # ------------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, shard_size: int | None = None) -> Path:
        """Write the bank durably; returns ``path``.

        Without ``shard_size``: one ``.safetensors`` file (tensors ``backgrounds``, ``labels``; JSON
        metadata and a checksum in its header). With ``shard_size``: ``path`` is a directory of
        ``shard-XXXXX.safetensors`` files of ``shard_size`` backgrounds each plus ``manifest.json`` (the
        layout :func:`~torch_backswap.build.build_bank` writes). Every file goes through a unique temporary
        file, ``fsync`` and rename, so concurrent savers of one path never collide and a crash never leaves
        half a file. Over an existing sharded bank, the new shards never replace a file of the old one (they take
        free names, ``shard-XXXXX-<token>.safetensors`` where taken), the manifest is swapped last, atomically,
        and only then the old bank's shards are removed: a crash leaves the old bank or the new one, whole.
        """
        path = Path(path)
        if shard_size is None:
            return write_bank_file(path, self._cpu_backgrounds, self._cpu_labels, self.classes, self.metadata)
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        path.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        shards = []
        for k, s in enumerate(range(0, len(self), shard_size)):
            name = shard_name(k)
            if (path / name).exists():  # a file of the bank being replaced: never touch it before the manifest
                name = f"shard-{k:05d}-{token}.safetensors"
            shards.append(write_shard(path, k, self._cpu_backgrounds[s : s + shard_size],
                                      self._cpu_labels[s : s + shard_size], self.classes, {}, name=name))
        BankManifest(path, self.size, self.classes, shard_size, shards, {}, dict(self.metadata)).write()  # the switch
        keep = {info.file for info in shards}
        for stale in path.glob("shard-*.safetensors"):  # the old bank's shards, and those of a save that crashed
            if stale.name not in keep and _SHARD_FILE.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> BackgroundBank:
        """Read a bank file or a sharded bank directory (safetensors only; never unpickles).

        A directory is verified against its manifest (every shard present, size and sha256 as recorded);
        a file against its format, version and checksum. Problems raise
        :class:`~torch_backswap._io.BackswapFileError` (a ``ValueError``) naming the file; a missing path, manifest
        or shard raises its subclass :class:`~torch_backswap._io.BackswapFileNotFoundError` (also a
        ``FileNotFoundError``).
        """
        path = Path(path)
        if path.is_dir():
            manifest = BankManifest.read(path)
            backgrounds, labels = manifest.load_tensors()
            meta = dict(manifest.metadata)
            if manifest.builder:
                meta.setdefault("builder", manifest.builder)
            return cls(backgrounds, labels, manifest.classes, meta).to(device)
        backgrounds, labels, classes, meta = read_bank_file(path)
        return cls(backgrounds, labels, classes, meta).to(device)


def check_strategy(n: int, strategy: str) -> str:
    """Check ``n`` (non-negative int) and ``strategy`` (one of :data:`STRATEGIES`); returns ``strategy``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


def check_indices(indices: Tensor | Sequence[int], n: int) -> Tensor:
    """``indices`` as a CPU or device int64 ``(k,)`` tensor, each in ``[0, n)`` (else ``IndexError``)."""
    idx = torch.as_tensor(indices)
    if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"indices must be a 1-D integer tensor, got dtype {idx.dtype} shape {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (bool((idx < 0).any()) or bool((idx >= n).any())):
        bad = idx[(idx < 0) | (idx >= n)][:5].tolist()
        raise IndexError(f"indices must be in [0, {n}) for a bank of {n} backgrounds, got {bad}")
    return idx


def draw_class_positions(
    n: int, present: Tensor, labels: Tensor | Sequence[int] | None, strategy: str, generator: torch.Generator | None
) -> Tensor:
    """Positions ``(n,)`` into ``present`` (sorted class ids) of the background class of each sample.

    ``"class_balanced"``: uniform over the present classes; ``"other_class"``: uniform over the present
    classes except the sample's own label. Shared by every bank so all of them draw the same random numbers.
    """
    k = present.shape[0]
    if strategy == "class_balanced":
        return torch.randint(k, (n,), generator=generator)
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
    return r + (is_present & (r >= pos)).long()
