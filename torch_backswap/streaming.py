"""StreamingBackgroundBank: sample from a bank larger than device memory.

A bounded, class-balanced *working set* of backgrounds lives on the device (at most ``max_bytes``,
staging buffer included); a background thread refills it block by block from the memory-mapped shards
(each shard's ``backgrounds`` tensor mapped in place with ``numpy.memmap`` at the offset its safetensors
header gives, checked with ``safe_open`` on open: only the images read are paged in) while :meth:`sample` keeps drawing
from what is resident — a sample waits at most for one block's device copy, never for the disk.

How sampling stays class-balanced over the *whole* bank:

* every present class owns a fixed share of the working-set slots (equal shares; a class with fewer
  backgrounds than its share keeps all of them resident and leaves the spare slots to the others);
* a class's slots hold a window of a fixed random permutation of that class's backgrounds; each refill
  replaces the oldest ``block`` slots (spread over the classes) with the next backgrounds of the
  permutation, so the window slides around the whole class and every background spends the same share
  of time resident;
* :meth:`sample_indices` picks the class exactly like :class:`~torch_backswap.bank.BackgroundBank` (the
  same random draws: uniform over the present classes for ``"class_balanced"``), then a resident
  background of that class uniformly.

Indices are *global* (positions in the whole bank), so ``bank.labels[idx]`` gives the classes
(provenance) and :meth:`gather` can fetch any index (a non-resident one is read from disk).

Same interface as :class:`~torch_backswap.bank.BackgroundBank` (``sample_indices``, ``gather``,
``sample``, ``labels``, ``classes``, ``size``, ``device``, ``present_classes``, ``len``, ``to``, ``cpu``,
``share_memory_``, picklable). Under DDP create one per rank on its own device: the working set's
permutations are seeded from ``(seed, rank)``, so each rank holds and streams different backgrounds.

Reproducibility: with ``background=False`` the refills run inside :meth:`sample` at fixed points (every
``refill_every`` sampled images), so a seeded generator gives the same backgrounds on every run; with the
background thread the class of each draw is still reproducible but which background of the class is
resident depends on timing.

Example:
    >>> import tempfile, torch
    >>> from torch_backswap.bank import BackgroundBank
    >>> path = tempfile.mkdtemp() + "/bank"
    >>> _ = BackgroundBank(torch.zeros(40, 3, 8, 8, dtype=torch.uint8), torch.arange(40) % 4).save(path, shard_size=16)
    >>> bank = StreamingBackgroundBank(path, max_bytes=16 * 3 * 8 * 8, block=4, background=False)
    >>> len(bank), bank.resident, bank.sample(6).shape
    (40, 12, torch.Size([6, 3, 8, 8]))
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._io import BackswapFileError, BackswapFileNotFoundError
from ._dist import current_rank
from ._image import resize_uint8
from .bank import (
    _as_size,
    check_indices,
    check_strategy,
    draw_class_positions,
)
from .bankfiles import BankManifest, read_bank_header

__all__ = ["StreamingBackgroundBank"]


def _quotas(counts: list[int], slots: int) -> list[int]:
    """Equal shares of ``slots`` per class, a class never getting more than it has (water-filling)."""
    quota = [0] * len(counts)
    open_ = [c for c in range(len(counts))]
    left = slots
    while open_ and left > 0:
        share = max(left // len(open_), 1)
        for c in list(open_):
            take = min(share, counts[c] - quota[c], left)
            quota[c] += take
            left -= take
            if quota[c] == counts[c]:
                open_.remove(c)
            if left == 0:
                break
    return quota


def _map_backgrounds(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """The ``backgrounds`` tensor of a (checked) bank file as a read-only ``numpy.memmap`` ``(count, 3, H, W)``."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        begin, end = json.loads(f.read(n))["backgrounds"]["data_offsets"]
    if end - begin != count * 3 * size[0] * size[1]:
        raise BackswapFileError(path, f"tensor 'backgrounds' spans {end - begin} bytes, expected {count} x 3 x {size}")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n + begin, shape=(count, 3, *size))


class StreamingBackgroundBank:
    """A sharded (or single-file) bank sampled through a bounded working set on ``device``.

    Args:
        path: a sharded bank directory (``manifest.json`` + shards) or one bank file.
        device: where the working set lives and :meth:`sample` returns backgrounds.
        max_bytes: cap on the working set plus its staging buffer, in bytes (e.g. ``8 * 2**30``).
        block: backgrounds replaced per refill (default: 1/8 of the working set).
        refill_every: sampled images between two refills (default: ``block``; the working set then turns
            over as fast as it is consumed).
        seed: seed of the per-class permutations (combined with the distributed rank).
        background: refill from a background thread (default) or synchronously inside :meth:`sample`.
        verify: check every shard's sha256 against the manifest on open (reads the whole bank once).
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu", max_bytes: int = 2**30, *,
                 block: int | None = None, refill_every: int | None = None, seed: int = 0, background: bool = True,
                 verify: bool = False) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        self._settings = {"max_bytes": max_bytes, "block": block, "refill_every": refill_every, "seed": seed,
                          "background": background, "verify": verify}
        if self.path.is_dir():
            manifest = BankManifest.read(self.path)
            manifest.verify(checksums=verify)
            files = [self.path / s.file for s in manifest.shards]
            self.classes, (h, w) = manifest.classes, manifest.resolution
        elif self.path.is_file():
            files = [self.path]
            meta = read_bank_header(self.path)
            self.classes, (h, w) = meta.get("classes"), meta["resolution"]
        else:
            raise BackswapFileNotFoundError(self.path, "background bank not found (no bank file or sharded bank "
                                                       "directory)")
        self._maps, labels, starts = [], [], [0]
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as handle:
                    read_bank_header(f, handle)
                    labels.append(handle.get_tensor("labels"))
            except BackswapFileError:
                raise
            except Exception as err:
                raise BackswapFileError(f, f"not a readable safetensors file ({type(err).__name__}: {err})") from err
            self._maps.append(_map_backgrounds(f, labels[-1].shape[0], (h, w)))
            starts.append(starts[-1] + labels[-1].shape[0])
        self._starts = torch.tensor(starts)
        self._device = torch.device(device)
        self._size = (int(h), int(w))
        cpu_labels = torch.cat(labels)
        self.labels = cpu_labels.to(self._device)
        self._present, counts = torch.unique(cpu_labels, return_counts=True)
        self._counts = counts
        image_bytes = 3 * h * w
        k = len(self._present)
        capacity = int(max_bytes) // image_bytes
        self._block = min(int(block) if block is not None else max(1, capacity // 9), len(cpu_labels))
        n_slots = min(capacity - self._block, len(cpu_labels))
        if n_slots < k or self._block < 1:
            raise ValueError(f"max_bytes={max_bytes} holds {capacity} backgrounds of {image_bytes} bytes; the working "
                             f"set needs at least one per class ({k}) plus a staging block ({self._block}): "
                             f"use max_bytes >= {(k + self._block) * image_bytes}")
        self._refill_every = int(refill_every or self._block)
        self._background = bool(background)
        # per class: a random permutation of its members, its slot range, the next member to load, the oldest slot
        g = torch.Generator().manual_seed(int(seed) + 1_000_003 * current_rank())
        order = torch.argsort(cpu_labels, stable=True)
        bounds = torch.cumsum(counts, 0).tolist()
        quota = _quotas(counts.tolist(), n_slots)
        self._perm = [order[b - c : b][torch.randperm(c, generator=g)] for b, c in zip(bounds, counts.tolist())]
        self._quota = torch.tensor(quota)
        self._slot_start = torch.cumsum(self._quota, 0) - self._quota
        self._next = list(quota)
        self._oldest = [0] * k
        self._rotating = [c for c in range(k) if quota[c] < counts[c]]
        self._turn = 0  # first rotating class of the next refill (fair when block < number of classes)
        n_slots = int(self._quota.sum())
        self._slot_global = torch.cat([self._perm[c][: quota[c]] for c in range(k)])
        self._slot_of = torch.full((len(cpu_labels),), -1, dtype=torch.long)
        self._slot_of[self._slot_global] = torch.arange(n_slots)
        self._staging = torch.empty((self._block, 3, h, w), dtype=torch.uint8)
        if self._device.type == "cuda":
            self._staging = self._staging.pin_memory()
        self._staging_bytes = self._staging.nbytes
        self._slots = torch.empty((n_slots, 3, h, w), dtype=torch.uint8, device=self._device)
        for a in range(0, n_slots, self._block):  # through the staging buffer: never more than the cap in memory
            chunk = self._slot_global[a : a + self._block]
            order = torch.argsort(chunk)
            staged = self._staging[: chunk.shape[0]]
            self._read_sorted(chunk[order], staged)
            self._slots.index_copy_(0, (a + order).to(self._device), staged.to(self._device))
        self._refill_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._demand = 0
        self._thread: threading.Thread | None = None
        self._stop = False
        self.stats = {"refills": 0, "loaded": n_slots, "misses": 0,
                      "peak_bytes": self._slots.nbytes + self._staging_bytes}

    # ------------------------------------------------------------------------------------------------
    # the BackgroundBank interface
    # ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._slot_of.shape[0])

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored backgrounds."""
        return self._size

    @property
    def present_classes(self) -> list[int]:
        """Sorted class indices that have at least one background (in the whole bank)."""
        return self._present.tolist()

    @property
    def resident(self) -> int:
        """Number of backgrounds in the working set."""
        return int(self._slot_global.shape[0])

    @property
    def resident_bytes(self) -> int:
        """Bytes of the working set plus the staging buffer (stays <= ``max_bytes``)."""
        return int(self._slots.nbytes) + self._staging_bytes

    def __repr__(self) -> str:
        return (f"StreamingBackgroundBank(n={len(self)}, resident={self.resident}, size={self.size}, "
                f"classes={self.classes or self.present_classes}, device={self.device}, path={str(self.path)!r})")

    def sample_indices(self, n: int, labels: Tensor | Sequence[int] | None = None, strategy: str = "class_balanced",
                       generator: torch.Generator | None = None) -> Tensor:
        """Global indices ``(n,)`` int64 on the device of resident backgrounds (see the module docs)."""
        with self._lock:
            idx = self._draw(n, labels, strategy, generator)
        self._consumed(n)
        return idx.to(self._device)

    def gather(self, indices: Tensor | Sequence[int], size: int | Sequence[int] | None = None) -> Tensor:
        """Backgrounds ``indices`` (global) → fresh uint8 ``(n, 3, H, W)`` on the device; resized to ``size``
        (antialiased) when it differs. Non-resident indices are read from the shards (slower)."""
        idx = check_indices(indices, len(self)).cpu()
        with self._lock:
            out, miss = self._gather_resident(idx)
        if miss.any():
            self.stats["misses"] += int(miss.sum())
            out[miss] = self._read(idx[miss]).to(self._device)
        return self._resize(out, size)

    def sample(self, n: int, labels: Tensor | Sequence[int] | None = None, strategy: str = "class_balanced",
               generator: torch.Generator | None = None, *, size: int | Sequence[int] | None = None,
               return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """:meth:`sample_indices` + :meth:`gather` in one step (all drawn backgrounds are resident)."""
        with self._lock:
            idx = self._draw(n, labels, strategy, generator)
            out, _ = self._gather_resident(idx)
        self._consumed(n)
        out = self._resize(out, size)
        idx = idx.to(self._device)
        return (out, idx) if return_indices else out

    def to(self, device: torch.device | str) -> StreamingBackgroundBank:
        """A streaming bank of the same files with its own working set on ``device``."""
        device = torch.device(device)
        if device == self._device:
            return self
        return StreamingBackgroundBank(self.path, device, **self._settings)

    def cpu(self) -> StreamingBackgroundBank:
        return self.to("cpu")

    def share_memory_(self) -> StreamingBackgroundBank:
        """No-op (returns self): every process keeps its own working set; the OS shares the mapped shards."""
        return self

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "device": "cpu", "settings": self._settings}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["device"], **state["settings"])

    def close(self) -> None:
        """Stop the refill thread (also done when the bank is garbage-collected)."""
        thread = self._thread
        if thread is not None:
            with self._wake:
                self._stop = True
                self._wake.notify()
            thread.join(timeout=30)
            self._thread = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    # ------------------------------------------------------------------------------------------------
    # working set
    # ------------------------------------------------------------------------------------------------

    def _draw(self, n: int, labels: Any, strategy: str, generator: torch.Generator | None) -> Tensor:
        if check_strategy(n, strategy) == "uniform":
            cls_pos = torch.multinomial(self._counts.double(), n, replacement=True, generator=generator) if n else \
                torch.zeros(0, dtype=torch.long)
        else:
            cls_pos = draw_class_positions(n, self._present, labels, strategy, generator)
        u = torch.rand(n, generator=generator)
        q = self._quota[cls_pos]
        slot = self._slot_start[cls_pos] + (u * q).long().clamp_max(q - 1)
        return self._slot_global[slot]

    def _gather_resident(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        slot = self._slot_of[idx]
        miss = slot < 0
        if miss.any():
            out = torch.empty((idx.shape[0], 3, *self._size), dtype=torch.uint8, device=self._device)
            out[~miss] = self._slots.index_select(0, slot[~miss].to(self._device))
        else:
            out = self._slots.index_select(0, slot.to(self._device))
        return out, miss

    def _resize(self, out: Tensor, size: Any) -> Tensor:
        size = _as_size(size)
        if size is not None and size != self._size:
            out = resize_uint8(out, size).contiguous()
        return out

    def _read(self, indices: Tensor) -> Tensor:
        """Read backgrounds (global indices, any order) from the shards → CPU uint8 ``(k, 3, H, W)``."""
        order = torch.argsort(indices)
        buf = torch.empty((indices.shape[0], 3, *self._size), dtype=torch.uint8)
        self._read_sorted(indices[order], buf)
        out = torch.empty_like(buf)
        out[order] = buf
        return out

    def _read_sorted(self, indices: Tensor, out: Tensor) -> None:
        """Read ascending global ``indices`` into the CPU uint8 ``out`` ``(k, 3, H, W)`` in place: one
        vectorised ``numpy.take`` per shard straight from the memory map (file order, no temporary copy)."""
        shard = torch.searchsorted(self._starts, indices, right=True) - 1
        shards, counts = torch.unique_consecutive(shard, return_counts=True)
        a = 0
        for s, c in zip(shards.tolist(), counts.tolist()):
            local = (indices[a : a + c] - self._starts[s]).numpy()
            np.take(self._maps[s], local, axis=0, out=out[a : a + c].numpy(), mode="clip")
            a += c

    def refill(self) -> int:
        """Replace the oldest ``block`` resident backgrounds (spread over the classes) with the next ones of
        each class's permutation; returns how many were replaced (0 when the whole bank is resident)."""
        if not self._rotating:
            return 0
        with self._refill_lock:
            return self._refill()

    def _refill(self) -> int:
        total = int(sum(int(self._quota[c]) for c in self._rotating))
        turn = self._rotating[self._turn :] + self._rotating[: self._turn]
        plan = []  # (class, slot offsets, global indices)
        left = self._block
        for i, c in enumerate(turn):
            q, members = int(self._quota[c]), self._perm[c]
            r = min(left, q, max(1, round(self._block * q / total)) if i < len(turn) - 1 else left)
            if r <= 0:
                break
            left -= r
            offs = [(self._oldest[c] + j) % q for j in range(r)]
            new = members[[(self._next[c] + j) % members.shape[0] for j in range(r)]]
            plan.append((c, offs, new))
        self._turn = (self._turn + len(plan)) % len(self._rotating)
        slots = torch.cat([int(self._slot_start[c]) + torch.tensor(offs) for c, offs, _ in plan])
        new = torch.cat([p[2] for p in plan])
        order = torch.argsort(new)
        new, slots = new[order], slots[order]
        staged = self._staging[: new.shape[0]]
        self._read_sorted(new, staged)  # disk reads into the staging buffer: outside the lock
        staged = staged.to(self._device)  # blocking: the staging buffer is reused by the next refill
        with self._lock:
            self._slots.index_copy_(0, slots.to(self._device), staged)
            self._slot_of[self._slot_global[slots]] = -1
            self._slot_global[slots] = new
            self._slot_of[new] = slots
            for c, offs, _ in plan:
                q = int(self._quota[c])
                self._oldest[c] = (self._oldest[c] + len(offs)) % q
                self._next[c] = (self._next[c] + len(offs)) % self._perm[c].shape[0]
        self.stats["refills"] += 1
        self.stats["loaded"] += int(new.shape[0])
        return int(new.shape[0])

    def _consumed(self, n: int) -> None:
        if not self._rotating or n == 0:
            return
        if not self._background:
            self._demand += n
            while self._demand >= self._refill_every:
                self._demand -= self._refill_every
                self.refill()
            return
        with self._wake:
            self._demand += n
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="backswap-bank-refill", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._demand < self._refill_every and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                self._demand = min(self._demand - self._refill_every, 4 * self._refill_every)
            self.refill()
