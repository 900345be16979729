"""Patch labels: one S×S boolean grid per image (``True`` = the cell shows the object).

File formats
------------
* **paper** – the ``masks.csv`` of the reference scripts: header ``info,mask``; ``info`` is the image id,
  ``mask`` an ``S*S`` string of ``0``/``1`` in row-major order.
* **backswap CSV** – header ``image,grid_size,mask``; ``image`` is the image path relative to the image
  folder, ``grid_size`` is ``S`` and ``mask`` the same row-major bit string.
* **backswap JSON** – ``{"format": "backswap-patch-labels", "version": 1, "grid_size": S,
  "labels": [{"image": ..., "mask": "0101..."}, ...]}``. ``format`` and ``version`` are checked on load
  (a file of a newer version than :data:`JSON_VERSION` is refused); a hand-written file may leave them out.

Files are UTF-8 (a leading BOM is allowed). Image ids are non-empty, on one line and without surrounding
whitespace. :meth:`PatchLabels.read` detects the format from the suffix (``.json``) or the CSV header.
Malformed input raises :class:`LabelFormatError` (a :class:`~torch_backswap._io.BackswapFileError`), whose
message names the file, the real line (in JSON: of the offending value) and the offending value.
:meth:`PatchLabels.write` is durable (:mod:`torch_backswap._io`).
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._io import BackswapFileError, BackswapFileNotFoundError, _json_kind, atomic_write_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "JSON_VERSION",
    "LabelFormatError",
    "MissingImageError",
    "PatchLabels",
    "dense_to_patch_grid",
    "patch_grid_to_dense",
]

#: Suffixes tried, in this order, when a label id names an image without its extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

_JSON_FORMAT = "backswap-patch-labels"
#: The newest JSON label-file version this code reads and the one it writes.
JSON_VERSION = 1
_PAPER_HEADER = ["info", "mask"]
_OURS_HEADER = ["image", "grid_size", "mask"]


class LabelFormatError(BackswapFileError):
    """A patch-label file (or value) is malformed.

    The message reads ``"<file>:<line>: <problem> (value: <value>)"``; the parts are also available as the
    attributes ``path``, ``line`` and ``value`` (``None`` where unknown). A :class:`BackswapFileError` (and
    so a ``ValueError``); the underlying error, if any, is chained as ``__cause__``.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | str | None = None,
        value: object = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        self.value = value
        where = self.path if self.path is not None else "<labels>"
        if line is not None:
            where = f"{where}:{line}"
        message = f"{where}: {problem}"
        if value is not None:
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            message += f" (value: {shown})"
        ValueError.__init__(self, message)


class MissingImageError(LabelFormatError, FileNotFoundError):
    """A labelled image id has no image file in the image folder."""


# ----------------------------------------------------------------------------------------------------------
# Functional core


def dense_to_patch_grid(masks: Tensor, grid_size: int, threshold: float = 0.25) -> Tensor:
    """Turn dense object masks into patch grids by per-cell covered fraction.

    Args:
        masks: ``(B, H, W)`` or ``(B, 1, H, W)``; bool, uint8 (0/1 or 0/255) or float in ``[0, 1]``.
        grid_size: ``S``, cells per side.
        threshold: a cell is ``True`` when the fraction of its area covered by the mask is ``>= threshold``
            (paper: 0.25 Waterbirds, 0.2 Spawrious, 0.4 Spurious Vehicles). Must be in ``(0, 1]``.

    Returns:
        BoolTensor ``(B, S, S)`` on the masks' device. Cells are area-averaged (adaptive average pooling),
        so ``H`` and ``W`` need not be multiples of ``S``.
    """
    if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
        raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
    if not (0.0 < float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (B,H,W) or (B,1,H,W), got shape {tuple(masks.shape)}")
        masks = masks[:, 0]
    elif masks.ndim != 3:
        raise ValueError(f"masks must be (B,H,W) or (B,1,H,W), got shape {tuple(masks.shape)}")
    if masks.dtype == torch.bool:
        dense = masks.float()
    elif masks.dtype == torch.uint8:
        dense = masks.float()
        if dense.numel() and dense.max() > 1:
            dense = dense / 255.0
    elif masks.is_floating_point():
        dense = masks.float()
    else:
        dense = masks.float().clamp(0, 1)
    covered = F.adaptive_avg_pool2d(dense[:, None], (grid_size, grid_size))[:, 0]
    # a tiny tolerance so that e.g. exactly a quarter of a cell counts at threshold 0.25
    return covered >= (float(threshold) - 1e-6)


def patch_grid_to_dense(grids: Tensor, size: tuple[int, int] | Sequence[int]) -> Tensor:
    """Blow patch grids up to image resolution (nearest neighbour, for evaluation and display).

    Args:
        grids: BoolTensor ``(B, S, S)`` (any dtype; non-zero = object).
        size: ``(H, W)`` of the output.

    Returns:
        FloatTensor ``(B, 1, H, W)`` with values in ``{0, 1}``.
    """
    if not isinstance(grids, Tensor) or grids.ndim != 3:
        shape = tuple(grids.shape) if isinstance(grids, Tensor) else type(grids).__name__
        raise ValueError(f"grids must be a (B,S,S) tensor, got {shape}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive ints, got {tuple(size)!r}")
    return F.interpolate((grids != 0).float()[:, None], size=(height, width), mode="nearest")


def _bits_to_grids(rows: Sequence[str], grid_size: int) -> Tensor:
    """``N`` row-major ``'0'``/``'1'`` strings of ``grid_size**2`` characters → BoolTensor ``(N, S, S)``."""
    flat = torch.frombuffer(bytearray("".join(rows).encode("ascii")), dtype=torch.uint8) if rows else torch.zeros(0)
    return (flat == ord("1")).view(len(rows), grid_size, grid_size)


def _grids_to_bits(grids: Tensor) -> list[str]:
    """BoolTensor ``(N, S, S)`` → ``N`` row-major ``'0'``/``'1'`` strings (the inverse of :func:`_bits_to_grids`)."""
    cells = grids.shape[1] * grids.shape[2]
    text = (grids.reshape(-1).to(torch.uint8) + ord("0")).numpy().tobytes().decode("ascii")
    return [text[k * cells:(k + 1) * cells] for k in range(grids.shape[0])]


# ----------------------------------------------------------------------------------------------------------
# The value type


@dataclass(eq=False)
class PatchLabels:
    """Patch labels for a set of images.

    Attributes:
        ids: image ids, unique; for a folder of images, the image path relative to that folder (the
            extension may be left out, see :meth:`image_path`).
        grids: BoolTensor ``(N, S, S)``, ``grids[i]`` belongs to ``ids[i]``; ``True`` = object.
        source: the file the labels were read from, if any (used in error messages).
        lines: per id, the line (CSV) or entry (JSON) it came from, if read from a file.
    """

    ids: list[str]
    grids: Tensor
    source: str | None = field(default=None, compare=False, repr=False)
    lines: list[int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        if not isinstance(self.grids, Tensor):
            raise TypeError(f"grids must be a torch.Tensor, got {type(self.grids).__name__}")
        if self.grids.ndim != 3 or self.grids.shape[1] != self.grids.shape[2]:
            raise ValueError(f"grids must be (N,S,S), got shape {tuple(self.grids.shape)}")
        if self.grids.shape[0] != len(self.ids):
            raise ValueError(f"got {len(self.ids)} ids but {self.grids.shape[0]} grids")
        self.grids = (self.grids != 0).cpu() if self.grids.dtype != torch.bool else self.grids.cpu()
        if self.lines is not None and len(self.lines) != len(self.ids):
            raise ValueError(f"lines must have one entry per id, got {len(self.lines)} for {len(self.ids)} ids")
        self._index: dict[str, int] = {}
        for position, image_id in enumerate(self.ids):
            line = None if self.lines is None else self.lines[position]
            if not image_id or image_id != image_id.strip() or any(c in image_id for c in "\r\n\x00"):
                raise LabelFormatError("an image id must be non-empty, on one line, without NUL or leading or "
                                       "trailing whitespace (label files do not keep them)", path=self.source,
                                       line=line, value=image_id)
            if not _is_utf8(image_id):
                raise LabelFormatError("an image id must be valid Unicode text (it holds a lone surrogate)",
                                       path=self.source, line=line, value=image_id)
            if image_id in self._index:
                raise LabelFormatError("duplicate image id", path=self.source, line=line, value=image_id)
            self._index[image_id] = position

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatchLabels):
            return NotImplemented
        return self.ids == other.ids and self.grids.shape == other.grids.shape and bool(
            torch.equal(self.grids, other.grids))

    __hash__ = None  # type: ignore[assignment]

    # -- container protocol ------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """``S``, cells per side."""
        return int(self.grids.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._index

    def __getitem__(self, image_id: str) -> Tensor:
        """The ``(S, S)`` BoolTensor of ``image_id``."""
        try:
            return self.grids[self._index[str(image_id)]]
        except KeyError:
            raise KeyError(f"no patch labels for image id {image_id!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def items(self) -> Iterator[tuple[str, Tensor]]:
        """``(id, grid (S,S) bool)`` pairs in order."""
        for image_id, grid in zip(self.ids, self.grids):
            yield image_id, grid

    def line_of(self, image_id: str) -> int | None:
        """Line (or JSON entry) ``image_id`` was read from, or ``None``."""
        if self.lines is None or image_id not in self._index:
            return None
        return self.lines[self._index[image_id]]

    def subset(self, ids: Iterable[str]) -> "PatchLabels":
        """A new :class:`PatchLabels` with only ``ids``, in that order (``KeyError`` on unknown ids)."""
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise KeyError(f"subset: unknown image ids {missing[:5]!r}{' ...' if len(missing) > 5 else ''}")
        positions = [self._index[i] for i in ids]
        lines = None if self.lines is None else [self.lines[p] for p in positions]
        return PatchLabels(ids, self.grids[positions].clone(), source=self.source, lines=lines)

    def merge(self, other: "PatchLabels") -> "PatchLabels":
        """A new :class:`PatchLabels` holding both; on shared ids ``other`` wins. Grid sizes must match."""
        if not isinstance(other, PatchLabels):
            raise TypeError(f"other must be PatchLabels, got {type(other).__name__}")
        if len(self) and len(other) and other.grid_size != self.grid_size:
            raise ValueError(f"cannot merge grid_size {other.grid_size} into grid_size {self.grid_size}")
        ids = list(self.ids)
        grids = [g for g in self.grids]
        for image_id, grid in other.items():
            if image_id in self._index:
                grids[self._index[image_id]] = grid
            else:
                ids.append(image_id)
                grids.append(grid)
        size = self.grid_size if len(self) else other.grid_size
        stacked = torch.stack(grids) if grids else torch.zeros(0, size, size, dtype=torch.bool)
        return PatchLabels(ids, stacked)

    def update(self, other: "PatchLabels") -> None:
        """In-place :meth:`merge`."""
        merged = self.merge(other)
        self.ids, self.grids, self._index = merged.ids, merged.grids, merged._index
        self.lines = None

    # -- images ------------------------------------------------------------------------------------------
    @staticmethod
    def image_path(image_dir: str | os.PathLike, image_id: str) -> Path | None:
        """The file for ``image_id`` inside ``image_dir``: the id as a relative path, else the id plus one
        of :data:`IMAGE_EXTENSIONS`; ``None`` if there is none."""
        root = Path(image_dir)
        candidate = root / image_id
        if candidate.is_file():
            return candidate
        for suffix in IMAGE_EXTENSIONS:
            for variant in (suffix, suffix.upper()):
                candidate = root / f"{image_id}{variant}"
                if candidate.is_file():
                    return candidate
        return None

    def image_paths(self, image_dir: str | os.PathLike) -> list[Path]:
        """Paths of all labelled images, in order; raises like :meth:`validate_images`."""
        self.validate_images(image_dir)
        return [self.image_path(image_dir, i) for i in self.ids]  # type: ignore[misc]

    def validate_images(self, image_dir: str | os.PathLike) -> None:
        """Raise :class:`MissingImageError` naming the label file, line and id of every missing image."""
        root = Path(image_dir)
        if not root.is_dir():
            raise MissingImageError("image folder does not exist", path=self.source, value=str(root))
        missing = [(i, self.line_of(i)) for i in self.ids if self.image_path(root, i) is None]
        if missing:
            first_id, first_line = missing[0]
            listed = ", ".join(f"{i!r}" + (f" (line {ln})" if ln is not None else "") for i, ln in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise MissingImageError(
                f"{len(missing)} labelled image(s) not found in {str(root)!r}: {listed}{more}",
                path=self.source,
                line=first_line,
                value=first_id,
            )

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_dense_masks(
        cls,
        masks: Tensor,
        ids: Sequence[str],
        grid_size: int,
        threshold: float = 0.25,
        drop_empty: bool = True,
    ) -> "PatchLabels":
        """Labels from dense masks ``(N,H,W)``/``(N,1,H,W)`` via :func:`dense_to_patch_grid`.

        ``drop_empty`` leaves out images whose grid comes out empty (as the paper did).
        """
        grids = dense_to_patch_grid(masks, grid_size, threshold).cpu()
        ids = [str(i) for i in ids]
        if len(ids) != grids.shape[0]:
            raise ValueError(f"got {len(ids)} ids for {grids.shape[0]} masks")
        if drop_empty:
            keep = grids.flatten(1).any(1)
            ids = [i for i, k in zip(ids, keep.tolist()) if k]
            grids = grids[keep]
        return cls(ids, grids)

    # -- reading -----------------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike, format: str = "auto") -> "PatchLabels":
        """Read patch labels; ``format`` is ``"auto"``, ``"paper"``, ``"backswap"`` (CSV) or ``"json"``.

        Raises:
            BackswapFileNotFoundError: ``path`` does not exist (also a ``FileNotFoundError``).
            LabelFormatError: anything wrong with the content, naming the file, the line and the value; a JSON
                file of a newer format version than :data:`JSON_VERSION` is refused with a clear message.
        """
        path = Path(path)
        if format not in ("auto", "paper", "backswap", "json"):
            raise ValueError(f"format must be 'auto', 'paper', 'backswap' or 'json', got {format!r}")
        try:
            raw = path.read_bytes()
        except FileNotFoundError as err:
            raise BackswapFileNotFoundError(path, "patch-label file not found") from err
        except IsADirectoryError as err:
            raise BackswapFileError(path, "is a directory, expected a patch-label file") from err
        text = _decode(raw, path)
        if format == "json" or (format == "auto" and path.suffix.lower() == ".json"):
            return cls._parse_json(text, path)
        return cls._parse_csv(text, path, format)

    @classmethod
    def _parse_csv(cls, text: str, path: Path, format: str) -> "PatchLabels":
        reader = csv.reader(io.StringIO(text, newline=""))
        rows = _csv_rows(reader, path)
        first = next(rows, None)
        if first is None:
            raise LabelFormatError("empty file, expected a CSV header", path=path, line=1)
        header = [h.strip().lower() for h in first[1]]
        if header == _PAPER_HEADER and format in ("auto", "paper"):
            kind = "paper"
        elif header == _OURS_HEADER and format in ("auto", "backswap"):
            kind = "backswap"
        else:
            expected = {"auto": "'info,mask' or 'image,grid_size,mask'", "paper": "'info,mask'",
                        "backswap": "'image,grid_size,mask'"}[format]
            raise LabelFormatError(f"unrecognised CSV header, expected {expected}", path=path, line=1,
                                   value=",".join(header))
        ids: list[str] = []
        grids: list[str] = []
        lines: list[int] = []
        grid_size: int | None = None
        seen: dict[str, int] = {}
        for line, row in rows:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise LabelFormatError(f"expected {len(header)} columns, got {len(row)}", path=path, line=line,
                                       value=",".join(row))
            image_id = row[0].strip()
            bits = row[-1].strip()
            if not image_id:
                raise LabelFormatError("empty image id", path=path, line=line, value=row[0])
            if kind == "backswap":
                declared = row[1].strip()
                if not re.fullmatch(r"[+-]?[0-9]+", declared):
                    raise LabelFormatError("grid_size is not an integer", path=path, line=line, value=row[1])
                row_size = int(declared)
                if row_size < 1:
                    raise LabelFormatError("grid_size must be positive", path=path, line=line, value=row[1])
                if len(bits) != row_size * row_size:
                    raise LabelFormatError(
                        f"mask has {len(bits)} characters, expected grid_size**2 = {row_size * row_size}",
                        path=path, line=line, value=bits)
            else:
                row_size = math.isqrt(len(bits))
                if len(bits) == 0 or row_size * row_size != len(bits):
                    raise LabelFormatError(
                        f"mask length {len(bits)} is not a square number S*S", path=path, line=line, value=bits)
            _check_bits(bits, path, line)
            if grid_size is None:
                grid_size = row_size
            elif row_size != grid_size:
                raise LabelFormatError(
                    f"mask has {len(bits)} characters (S={row_size}) but earlier rows have "
                    f"S={grid_size} ({grid_size * grid_size} characters)", path=path, line=line, value=bits)
            if image_id in seen:
                raise LabelFormatError(f"duplicate image id (first seen on line {seen[image_id]})",
                                       path=path, line=line, value=image_id)
            seen[image_id] = line
            ids.append(image_id)
            grids.append(bits)
            lines.append(line)
        if grid_size is None:
            raise LabelFormatError("no label rows after the header", path=path, line=2)
        return cls(ids, _bits_to_grids(grids, grid_size), source=str(path), lines=lines)

    @classmethod
    def _parse_json(cls, text: str, path: Path) -> "PatchLabels":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LabelFormatError(f"invalid JSON: {err.msg} (column {err.colno})", path=path,
                                   line=err.lineno) from err
        except RecursionError as err:
            raise LabelFormatError("invalid JSON: nested too deeply", path=path) from err
        where = _JsonLines(text)
        if not isinstance(data, dict):
            raise LabelFormatError(f"expected a JSON object, got a JSON {_json_kind(data)}", path=path,
                                   line=where.top)
        if "format" in data and data["format"] != _JSON_FORMAT:
            raise LabelFormatError(f"not a patch-label file: 'format' must be {_JSON_FORMAT!r}", path=path,
                                   line=where.key("format"), value=data["format"])
        version = data.get("version", 1)
        if not _is_int(version) or version < 1:
            raise LabelFormatError("'version' must be a positive integer", path=path, line=where.key("version"),
                                   value=version)
        if version > JSON_VERSION:
            raise LabelFormatError(
                f"format version {version} is newer than this torch-backswap reads (up to {JSON_VERSION}); "
                "upgrade torch-backswap to read it", path=path, line=where.key("version"), value=version)
        grid_size = data.get("grid_size")
        if not _is_int(grid_size) or grid_size < 1:
            problem = "missing 'grid_size'" if "grid_size" not in data else "'grid_size' must be a positive integer"
            raise LabelFormatError(problem, path=path, line=where.key("grid_size"), value=grid_size)
        if not isinstance(data.get("labels"), list):
            problem = "missing 'labels'" if "labels" not in data else "'labels' must be a JSON array"
            raise LabelFormatError(problem, path=path, line=where.key("labels"), value=data.get("labels"))
        ids, grids, lines, seen = [], [], [], {}
        for k, entry in enumerate(data["labels"]):
            line = where.entry(k)
            if not isinstance(entry, dict) or "image" not in entry or "mask" not in entry:
                raise LabelFormatError(f"label {k} needs 'image' and 'mask'", path=path, line=line, value=entry)
            image_id, bits = entry["image"], entry["mask"]
            line = where.entry(k, "image")
            if not isinstance(image_id, str) or not image_id.strip():
                raise LabelFormatError(f"label {k}: 'image' must be a non-empty string", path=path, line=line,
                                       value=image_id)
            image_id = image_id.strip()
            mask_line = where.entry(k, "mask")
            if not isinstance(bits, str):
                raise LabelFormatError(f"label {k}: 'mask' must be a string of '0'/'1'", path=path,
                                       line=mask_line, value=bits)
            bits = bits.strip()
            if len(bits) != grid_size * grid_size:
                raise LabelFormatError(
                    f"label {k}: mask has {len(bits)} characters, expected grid_size**2 = {grid_size * grid_size}",
                    path=path, line=mask_line, value=bits)
            _check_bits(bits, path, mask_line, f"label {k}: ")
            if image_id in seen:
                raise LabelFormatError(f"duplicate image id (first seen on line {seen[image_id]})", path=path,
                                       line=line, value=image_id)
            seen[image_id] = line
            ids.append(image_id)
            grids.append(bits)
            lines.append(line)
        return cls(ids, _bits_to_grids(grids, grid_size), source=str(path), lines=lines)

    # -- writing -----------------------------------------------------------------------------------------
    def to_text(self, format: str = "backswap") -> str:
        """The file content for ``format`` ``"backswap"`` (CSV), ``"paper"`` (CSV) or ``"json"``.

        CSV cannot hold zero labels (the grid size would be lost): that raises ``ValueError``; use JSON.
        """
        if format == "json":
            entries = ",\n".join(
                "    " + json.dumps({"image": i, "mask": m}) for i, m in zip(self.ids, _grids_to_bits(self.grids)))
            return (
                "{\n"
                f'  "format": "{_JSON_FORMAT}",\n  "version": {JSON_VERSION},\n  "grid_size": {self.grid_size},\n'
                f'  "labels": [\n{entries}\n  ]\n}}\n'
            )
        if format not in ("backswap", "paper"):
            raise ValueError(f"format must be 'backswap', 'paper' or 'json', got {format!r}")
        if not len(self):
            raise ValueError(f"cannot write 0 labels as {format!r} CSV (the grid size would be lost); use 'json'")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_PAPER_HEADER if format == "paper" else _OURS_HEADER)
        for image_id, bits in zip(self.ids, _grids_to_bits(self.grids)):
            writer.writerow([image_id, bits] if format == "paper" else [image_id, self.grid_size, bits])
        return buffer.getvalue()

    def write(self, path: str | os.PathLike, format: str = "backswap") -> Path:
        """Write durably (see :func:`torch_backswap._io.atomic_write`: a temporary file unique to this writer
        in the target's folder, ``fsync``, ``os.replace``): a reader, a crash or a second writer never sees
        half a file. ``format="backswap"`` writes our CSV, or our JSON when ``path`` ends in ``.json``;
        ``"paper"`` writes ``info,mask``; ``"json"`` forces JSON."""
        path = Path(path)
        if format == "backswap" and path.suffix.lower() == ".json":
            format = "json"
        return atomic_write_bytes(path, self.to_text(format).encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------
# Parsing helpers


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 text of a label file (a leading BOM dropped); :class:`LabelFormatError` naming the line."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start  # offset in the file
        raise LabelFormatError(f"not UTF-8 text (byte {at} cannot be decoded)", path=path,
                               line=raw.count(b"\n", 0, at) + 1, value=raw[at:at + 1]) from err


def _csv_rows(reader, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(first line, row)`` pairs of a ``csv.reader``; a ``csv.Error`` becomes :class:`LabelFormatError`."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise LabelFormatError(f"malformed CSV: {err}", path=path, line=line) from err
        if reader.line_num > line:  # no field of a label file spans lines: a quote was left open
            raise LabelFormatError(f"unterminated quote: the row runs on to line {reader.line_num}", path=path,
                                   line=line, value=",".join(row))
        yield line, row


def _check_bits(bits: str, path: Path, line: int, label: str = "") -> None:
    bad = sorted(set(bits) - {"0", "1"})
    if bad:
        raise LabelFormatError(f"{label}mask may only contain '0' and '1', found {''.join(bad)!r}", path=path,
                               line=line, value=bits)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _JsonLines:
    """Line numbers of the parts of a label JSON document (which ``json.loads`` has already accepted).

    ``key(name)`` is the line of a top-level value, ``entry(k)`` the line where ``labels[k]`` starts and
    ``entry(k, name)`` the line of that entry's value ``name`` (falling back to the enclosing part's line).
    Only walks the document's structure; the values are decoded by ``json``'s own scanner.
    """

    _WS = " \t\n\r"

    def __init__(self, text: str) -> None:
        self.text = text
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._decoder = json.JSONDecoder()
        start = self._skip(0)
        self.top = self._line(start)
        self._keys: dict[str, int] = {}
        self._entries: list[tuple[int, dict[str, int]]] = []
        if text.startswith("{", start):
            self._keys = self._object(start)
            labels = self._keys.get("labels")
            if labels is not None and text.startswith("[", labels):
                self._entries = [(at, self._object(at) if text.startswith("{", at) else {})
                                 for at in self._array(labels)]

    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def _skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in self._WS:
            i += 1
        return i

    def _object(self, i: int) -> dict[str, int]:
        """Offsets of the values of the object at ``text[i] == '{'`` (a repeated key: the last, like json)."""
        offsets: dict[str, int] = {}
        i = self._skip(i + 1)
        while self.text[i] != "}":
            key, i = json.decoder.scanstring(self.text, i + 1)
            i = self._skip(self._skip(i) + 1)  # past ':'
            offsets[key] = i
            _, i = self._decoder.raw_decode(self.text, i)
            i = self._skip(i)
            if self.text[i] == ",":
                i = self._skip(i + 1)
        return offsets

    def _array(self, i: int) -> list[int]:
        """Offsets of the elements of the array at ``text[i] == '['``."""
        offsets: list[int] = []
        i = self._skip(i + 1)
        while self.text[i] != "]":
            offsets.append(i)
            _, i = self._decoder.raw_decode(self.text, i)
            i = self._skip(i)
            if self.text[i] == ",":
                i = self._skip(i + 1)
        return offsets

    def key(self, name: str) -> int:
        return self._line(self._keys[name]) if name in self._keys else self.top

    def entry(self, k: int, name: str | None = None) -> int:
        if k >= len(self._entries):
            return self.key("labels")
        start, values = self._entries[k]
        return self._line(values[name] if name in values else start)
