"""On-disk formats of a background bank: one safetensors file, or a directory of shards plus a manifest.

**Bank file** (``*.safetensors``, format version 2): tensors ``backgrounds`` uint8 ``(N, 3, H, W)`` and
``labels`` int64 ``(N,)``; the safetensors header carries one JSON object under the key ``"backswap"``
with ``format``, ``version``, ``resolution``, ``count``, ``classes``, the user's metadata and ``sha256``,
a checksum of that metadata and of the tensor bytes, so any change to a stored byte that still parses is
caught on load. Version-1 files (no checksum) still load.

**Sharded bank** (a directory)::

    bank/
      manifest.json            format, version, resolution, classes, count, shard_size, builder settings,
                               metadata, and per shard: file, count, bytes, sha256 (of the whole file)
      shard-00000.safetensors  each shard is itself a bank file (loadable on its own)
      shard-00001.safetensors
      ...

Every file is written durably (:mod:`torch_backswap._io`: unique temporary file, ``fsync``, rename,
directory ``fsync``); a reader never sees half a shard or half a manifest. Every problem with a file
raises :class:`~torch_backswap._io.BackswapFileError` naming the file (the underlying error chained); a missing
file its subclass :class:`~torch_backswap._io.BackswapFileNotFoundError` (also a ``FileNotFoundError``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._io import BackswapFileError, BackswapFileNotFoundError, atomic_write_bytes, atomic_write_text, write_with

__all__ = [
    "BANK_FORMAT",
    "BANK_VERSION",
    "MANIFEST",
    "SHARDS_FORMAT",
    "SHARDS_VERSION",
    "BankManifest",
    "ShardInfo",
    "encode_bank",
    "read_bank_file",
    "read_bank_header",
    "sha256_file",
    "shard_name",
    "write_bank_file",
    "write_shard",
]

BANK_FORMAT = "torch-backswap/background-bank"
BANK_VERSION = 2
SHARDS_FORMAT = "torch-backswap/background-bank-shards"
SHARDS_VERSION = 1
MANIFEST = "manifest.json"
_RESERVED = ("format", "version", "resolution", "count", "classes", "sha256")


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00012.safetensors``)."""
    return f"shard-{index:05d}.safetensors"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _content_sha256(meta: dict, backgrounds: Tensor, labels: Tensor) -> str:
    """Checksum of the metadata (canonical JSON, without ``sha256``) and of the tensor bytes."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    h.update(backgrounds.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _header(backgrounds: Tensor, labels: Tensor, classes: Sequence[str] | None, metadata: dict) -> dict[str, str]:
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata must not use the reserved keys {clash}")
    meta = dict(metadata)
    meta.update({"format": BANK_FORMAT, "version": BANK_VERSION, "resolution": list(backgrounds.shape[-2:]),
                 "count": int(backgrounds.shape[0]), "classes": None if classes is None else list(classes)})
    meta["sha256"] = _content_sha256(meta, backgrounds, labels)
    return {"backswap": json.dumps(meta, sort_keys=True)}


def encode_bank(backgrounds: Tensor, labels: Tensor, classes: Sequence[str] | None, metadata: dict) -> bytes:
    """The bytes of a bank file (CPU uint8 ``(N, 3, H, W)`` backgrounds, int64 ``(N,)`` labels)."""
    from safetensors.torch import save

    return save({"backgrounds": backgrounds, "labels": labels}, metadata=_header(backgrounds, labels, classes, metadata))


def write_bank_file(path: str | os.PathLike, backgrounds: Tensor, labels: Tensor, classes: Sequence[str] | None,
                    metadata: dict) -> Path:
    """Write one bank file durably (unique temporary file, fsync, rename, directory fsync)."""
    from safetensors.torch import save_file

    header = _header(backgrounds, labels, classes, metadata)
    return write_with(path, lambda tmp: save_file({"backgrounds": backgrounds, "labels": labels}, str(tmp),
                                                  metadata=header))


def _fail(path: Path, problem: str, cause: BaseException | None = None) -> BackswapFileError:
    err = BackswapFileError(path, problem)
    err.__cause__ = cause
    return err


def read_bank_header(path: str | os.PathLike, handle: Any = None) -> dict:
    """The checked JSON metadata of a bank file (format, version, resolution, count, classes, ...).

    Raises :class:`BackswapFileError` for a file that is not a readable bank file of a known version.
    """
    path = Path(path)
    if handle is None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return read_bank_header(path, f)
        except BackswapFileError:
            raise
        except Exception as err:  # SafetensorError, OSError, UnicodeDecodeError, ...
            raise _fail(path, f"not a readable safetensors file ({type(err).__name__}: {err})", err) from err
    header = handle.metadata() or {}
    keys = set(handle.keys())
    if "backswap" not in header:
        raise _fail(path, f"not a background bank: no 'backswap' metadata in its header (tensors {sorted(keys)})")
    try:
        meta = json.loads(header["backswap"])
    except json.JSONDecodeError as err:
        raise _fail(path, f"unreadable bank metadata ({err})", err) from err
    if not isinstance(meta, dict):
        raise _fail(path, f"bank metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != BANK_FORMAT:
        raise _fail(path, f"has format {meta.get('format')!r}, expected {BANK_FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= BANK_VERSION:
        raise _fail(path, f"has bank format version {version!r}; this torch-backswap reads versions 1 to {BANK_VERSION}")
    missing = {"backgrounds", "labels"} - keys
    if missing:
        raise _fail(path, f"not a background bank: missing tensors {sorted(missing)} (has {sorted(keys)})")
    res, count, classes = meta.get("resolution"), meta.get("count"), meta.get("classes")
    if not (isinstance(res, list) and len(res) == 2 and all(isinstance(v, int) and v >= 2 for v in res)):
        raise _fail(path, f"bank metadata 'resolution' must be [H, W] ints >= 2, got {res!r}")
    if not isinstance(count, int) or count < 1:
        raise _fail(path, f"bank metadata 'count' must be a positive int, got {count!r}")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise _fail(path, f"bank metadata 'classes' must be a list of names or null, got {classes!r}")
    if version >= 2 and not isinstance(meta.get("sha256"), str):
        raise _fail(path, "bank metadata has no 'sha256' checksum")
    bg, lab = handle.get_slice("backgrounds"), handle.get_slice("labels")
    want_bg = [count, 3, *res]
    if bg.get_dtype() != "U8" or list(bg.get_shape()) != want_bg:
        raise _fail(path, f"tensor 'backgrounds' must be uint8 {want_bg}, got {bg.get_dtype()} {bg.get_shape()}")
    if lab.get_dtype() != "I64" or list(lab.get_shape()) != [count]:
        raise _fail(path, f"tensor 'labels' must be int64 [{count}], got {lab.get_dtype()} {lab.get_shape()}")
    return meta


def read_bank_file(path: str | os.PathLike) -> tuple[Tensor, Tensor, list[str] | None, dict]:
    """Read and verify a bank file → ``(backgrounds, labels, classes, user metadata)`` on CPU.

    Raises :class:`~torch_backswap._io.BackswapFileNotFoundError` (also a ``FileNotFoundError``) for a missing
    path and :class:`BackswapFileError` for anything else wrong with the file (not safetensors, truncated, foreign,
    unknown version, checksum mismatch, bad labels).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BackswapFileNotFoundError(path, "background bank file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = read_bank_header(path, f)
            backgrounds = f.get_tensor("backgrounds")
            labels = f.get_tensor("labels")
    except BackswapFileError:
        raise
    except Exception as err:
        raise _fail(path, f"not a readable safetensors file ({type(err).__name__}: {err})", err) from err
    if meta["version"] >= 2 and _content_sha256(meta, backgrounds, labels) != meta["sha256"]:
        raise _fail(path, "checksum mismatch: the stored backgrounds, labels or metadata were changed or corrupted")
    classes = meta.get("classes")
    if bool((labels < 0).any()) or (classes is not None and int(labels.max()) >= len(classes)):
        raise _fail(path, f"labels out of range: min {int(labels.min())}, max {int(labels.max())}, "
                          f"{'no class names' if classes is None else f'{len(classes)} class names'}")
    user = {k: v for k, v in meta.items() if k not in _RESERVED}
    return backgrounds, labels, classes, user


# ----------------------------------------------------------------------------------------------------------
# sharded banks
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a sharded bank: its file name, number of backgrounds, size in bytes and sha256."""

    file: str
    count: int
    bytes: int
    sha256: str


def write_shard(directory: str | os.PathLike, index: int, backgrounds: Tensor, labels: Tensor,
                classes: Sequence[str] | None, metadata: dict, name: str | None = None) -> ShardInfo:
    """Write shard ``index`` durably into ``directory`` as ``name`` (default :func:`shard_name`) and return its
    :class:`ShardInfo`."""
    data = encode_bank(backgrounds.cpu().contiguous(), labels.cpu().to(torch.long).contiguous(), classes,
                       dict(metadata, shard=index))
    name = shard_name(index) if name is None else name
    atomic_write_bytes(Path(directory) / name, data)
    return ShardInfo(name, int(backgrounds.shape[0]), len(data), hashlib.sha256(data).hexdigest())


@dataclass
class BankManifest:
    """The manifest of a sharded bank directory (``manifest.json``).

    Attributes:
        path: the bank directory.
        resolution: ``(H, W)`` of every background.
        classes: class names or ``None``.
        shard_size: backgrounds per shard (the last one may hold fewer).
        shards: one :class:`ShardInfo` per shard, in order.
        builder: the build settings (segmenter, inpainter, thresholds, batch size, ...).
        metadata: the user's metadata.
    """

    path: Path
    resolution: tuple[int, int]
    classes: list[str] | None
    shard_size: int
    shards: list[ShardInfo]
    builder: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Total number of backgrounds."""
        return sum(s.count for s in self.shards)

    def to_json(self) -> str:
        doc = {
            "format": SHARDS_FORMAT,
            "version": SHARDS_VERSION,
            "resolution": list(self.resolution),
            "classes": self.classes,
            "count": self.count,
            "shard_size": self.shard_size,
            "builder": self.builder,
            "metadata": self.metadata,
            "shards": [vars(s) for s in self.shards],
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def write(self) -> Path:
        """Write ``manifest.json`` durably into :attr:`path`."""
        return atomic_write_text(Path(self.path) / MANIFEST, self.to_json())

    @classmethod
    def read(cls, directory: str | os.PathLike) -> BankManifest:
        """Read and check ``directory/manifest.json`` (format, version, fields, shard list)."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise BackswapFileNotFoundError(directory, f"not a sharded background bank: no {MANIFEST} (an unfinished "
                                                       "build?)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _fail(path, f"unreadable manifest ({err})", err) from err
        if not isinstance(doc, dict):
            raise _fail(path, f"the manifest must be a JSON object, got {type(doc).__name__}")
        if doc.get("format") != SHARDS_FORMAT:
            raise _fail(path, f"has format {doc.get('format')!r}, expected {SHARDS_FORMAT!r}")
        if doc.get("version") != SHARDS_VERSION:
            raise _fail(path, f"has manifest version {doc.get('version')!r}; this torch-backswap reads {SHARDS_VERSION}")
        try:
            res = tuple(int(v) for v in doc["resolution"])
            shards = [ShardInfo(str(s["file"]), int(s["count"]), int(s["bytes"]), str(s["sha256"]))
                      for s in doc["shards"]]
            manifest = cls(directory, res, doc["classes"], int(doc["shard_size"]), shards,
                           dict(doc.get("builder") or {}), dict(doc.get("metadata") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise _fail(path, f"malformed manifest ({type(err).__name__}: {err})", err) from err
        if not shards or len(res) != 2 or manifest.count != doc.get("count"):
            raise _fail(path, f"inconsistent manifest: {len(shards)} shards, count {doc.get('count')!r}, "
                              f"resolution {doc['resolution']!r}")
        return manifest

    def verify(self, checksums: bool = True) -> None:
        """Check every shard exists with its recorded size (and sha256 when ``checksums``).

        Raises :class:`BackswapFileError` naming the first missing or corrupt shard.
        """
        for info in self.shards:
            p = Path(self.path) / info.file
            if not p.is_file():
                raise BackswapFileNotFoundError(p, f"shard listed in {MANIFEST} is missing")
            size = p.stat().st_size
            if size != info.bytes:
                raise BackswapFileError(p, f"corrupt shard: {size} bytes, the manifest says {info.bytes}")
            if checksums and sha256_file(p) != info.sha256:
                raise BackswapFileError(p, "corrupt shard: sha256 differs from the manifest")

    def load_tensors(self) -> tuple[Tensor, Tensor]:
        """All shards verified and concatenated → CPU ``(backgrounds (N,3,H,W) uint8, labels (N,) int64)``."""
        self.verify(checksums=True)
        bgs, labs = [], []
        for info in self.shards:
            bg, lab, classes, _ = read_bank_file(Path(self.path) / info.file)
            if bg.shape[0] != info.count or tuple(bg.shape[-2:]) != tuple(self.resolution) or classes != self.classes:
                raise BackswapFileError(Path(self.path) / info.file, "shard does not match the manifest "
                                        "(count, resolution or classes)")
            bgs.append(bg)
            labs.append(lab)
        return torch.cat(bgs), torch.cat(labs)
