"""The patch-label file codec: label files ⇄ plain data (ids, ``(N, S, S)`` bool grids, line numbers).

File formats
------------
* **paper** – the ``masks.csv`` of the reference scripts: header ``info,mask``; ``info`` is the image id,
  ``mask`` an ``S*S`` string of ``0``/``1`` in row-major order.
* **backswap CSV** – header ``image,grid_size,mask``; ``image`` is the image path relative to the image
  folder, ``grid_size`` is ``S`` and ``mask`` the same row-major bit string.
* **backswap JSON** – ``{"format": "backswap-patch-labels", "version": 1, "grid_size": S,
  "labels": [{"image": ..., "mask": "0101..."}, ...]}``. ``format`` and ``version`` are checked on load
  (a file of a newer version than :data:`JSON_VERSION` is refused); a hand-written file may leave them out.

Files are UTF-8 (a leading BOM is allowed). :func:`parse_label_text` detects the format from the suffix
(``.json``) or the CSV header. Malformed input raises :class:`LabelFormatError` (a
:class:`~torch_backswap._io.BackswapFileError`), whose message names the file, the real line (in JSON: of the
offending value) and the offending value.

This module knows nothing of :class:`~torch_backswap.labels.PatchLabels`; that class reads and writes through
:func:`read_label_file` and :func:`format_label_text` and checks the ids itself.

Example:
    >>> import torch
    >>> text = format_label_text(["a.png"], torch.tensor([[[True, False], [False, True]]]), "backswap")
    >>> print(text, end="")
    image,grid_size,mask
    a.png,2,1001
    >>> ids, grids, lines = parse_label_text(text, "labels.csv")
    >>> ids, grids.shape, lines
    (['a.png'], torch.Size([1, 2, 2]), [2])
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
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ._io import BackswapFileError, BackswapFileNotFoundError, _json_kind

__all__ = ["FORMATS", "JSON_VERSION", "LabelFormatError", "format_label_text", "parse_label_text",
           "read_label_file"]

#: ``format`` values :func:`read_label_file` / :func:`parse_label_text` accept.
FORMATS = ("auto", "paper", "backswap", "json")
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


#: What a label file holds: ids, BoolTensor ``(N, S, S)`` grids, and per id the line it came from.
ParsedLabels = tuple[list[str], Tensor, list[int]]


# ----------------------------------------------------------------------------------------------------------
# Reading


def read_label_file(path: str | os.PathLike, format: str = "auto") -> ParsedLabels:
    """Read a patch-label file; ``format`` is ``"auto"``, ``"paper"``, ``"backswap"`` (CSV) or ``"json"``.

    Returns:
        ``(ids, grids, lines)``: the image ids (stripped, unique, in file order), a BoolTensor ``(N, S, S)``
        and, per id, the line it was read from.

    Raises:
        BackswapFileNotFoundError: ``path`` does not exist (also a ``FileNotFoundError``).
        LabelFormatError: anything wrong with the content, naming the file, the line and the value.
    """
    path = Path(path)
    _check_format(format)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise BackswapFileNotFoundError(path, "patch-label file not found") from err
    except IsADirectoryError as err:
        raise BackswapFileError(path, "is a directory, expected a patch-label file") from err
    return parse_label_text(_decode(raw, path), path, format)


def parse_label_text(text: str, path: str | os.PathLike, format: str = "auto") -> ParsedLabels:
    """Parse the decoded content of a label file; ``path`` names it in errors (and its suffix ``.json``
    selects JSON under ``format="auto"``). Returns and raises like :func:`read_label_file`."""
    path = Path(path)
    _check_format(format)
    if format == "json" or (format == "auto" and path.suffix.lower() == ".json"):
        return _parse_json(text, path)
    return _parse_csv(text, path, format)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format must be 'auto', 'paper', 'backswap' or 'json', got {format!r}")


def _parse_csv(text: str, path: Path, format: str) -> ParsedLabels:
    rows = _csv_rows(csv.reader(io.StringIO(text, newline="")), path)
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
    rows_seen = _Rows(path)
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
            row_size = _declared_grid_size(row[1], path, line)
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
        if rows_seen.grid_size is None:
            rows_seen.grid_size = row_size
        elif row_size != rows_seen.grid_size:
            size = rows_seen.grid_size
            raise LabelFormatError(
                f"mask has {len(bits)} characters (S={row_size}) but earlier rows have "
                f"S={size} ({size * size} characters)", path=path, line=line, value=bits)
        rows_seen.add(image_id, bits, line)
    if rows_seen.grid_size is None:
        raise LabelFormatError("no label rows after the header", path=path, line=2)
    return rows_seen.parsed()


def _declared_grid_size(cell: str, path: Path, line: int) -> int:
    declared = cell.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", declared):
        raise LabelFormatError("grid_size is not an integer", path=path, line=line, value=cell)
    if int(declared) < 1:
        raise LabelFormatError("grid_size must be positive", path=path, line=line, value=cell)
    return int(declared)


def _parse_json(text: str, path: Path) -> ParsedLabels:
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
    rows_seen = _Rows(path, grid_size)
    for k, entry in enumerate(data["labels"]):
        if not isinstance(entry, dict) or "image" not in entry or "mask" not in entry:
            raise LabelFormatError(f"label {k} needs 'image' and 'mask'", path=path, line=where.entry(k),
                                   value=entry)
        image_id, bits = entry["image"], entry["mask"]
        line = where.entry(k, "image")
        if not isinstance(image_id, str) or not image_id.strip():
            raise LabelFormatError(f"label {k}: 'image' must be a non-empty string", path=path, line=line,
                                   value=image_id)
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
        rows_seen.add(image_id.strip(), bits, line)
    return rows_seen.parsed()


class _Rows:
    """The label rows read so far: ids, bit strings and lines, refusing a repeated id."""

    def __init__(self, path: Path, grid_size: int | None = None) -> None:
        self.path, self.grid_size = path, grid_size
        self.ids: list[str] = []
        self.bits: list[str] = []
        self.lines: list[int] = []
        self.first_line: dict[str, int] = {}

    def add(self, image_id: str, bits: str, line: int) -> None:
        if image_id in self.first_line:
            raise LabelFormatError(f"duplicate image id (first seen on line {self.first_line[image_id]})",
                                   path=self.path, line=line, value=image_id)
        self.first_line[image_id] = line
        self.ids.append(image_id)
        self.bits.append(bits)
        self.lines.append(line)

    def parsed(self) -> ParsedLabels:
        return self.ids, bits_to_grids(self.bits, self.grid_size), self.lines


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
        return self._line(values.get(name, start))


# ----------------------------------------------------------------------------------------------------------
# Writing


def format_label_text(ids: Sequence[str], grids: Tensor, format: str = "backswap") -> str:
    """The file content of ``ids`` and their BoolTensor ``(N, S, S)`` ``grids`` for ``format``
    ``"backswap"`` (CSV), ``"paper"`` (CSV) or ``"json"``.

    CSV cannot hold zero labels (the grid size would be lost): that raises ``ValueError``; use JSON.
    """
    grid_size = int(grids.shape[1])
    if format == "json":
        entries = ",\n".join("    " + json.dumps({"image": i, "mask": m}) for i, m in zip(ids, grids_to_bits(grids)))
        return (
            "{\n"
            f'  "format": "{_JSON_FORMAT}",\n  "version": {JSON_VERSION},\n  "grid_size": {grid_size},\n'
            f'  "labels": [\n{entries}\n  ]\n}}\n'
        )
    if format not in ("backswap", "paper"):
        raise ValueError(f"format must be 'backswap', 'paper' or 'json', got {format!r}")
    if not len(ids):
        raise ValueError(f"cannot write 0 labels as {format!r} CSV (the grid size would be lost); use 'json'")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_PAPER_HEADER if format == "paper" else _OURS_HEADER)
    for image_id, bits in zip(ids, grids_to_bits(grids)):
        writer.writerow([image_id, bits] if format == "paper" else [image_id, grid_size, bits])
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------
# Bit strings ⇄ grids


def bits_to_grids(rows: Sequence[str], grid_size: int) -> Tensor:
    """``N`` row-major ``'0'``/``'1'`` strings of ``grid_size**2`` characters → BoolTensor ``(N, S, S)``."""
    flat = torch.frombuffer(bytearray("".join(rows).encode("ascii")), dtype=torch.uint8) if rows else torch.zeros(0)
    return (flat == ord("1")).view(len(rows), grid_size, grid_size)


def grids_to_bits(grids: Tensor) -> list[str]:
    """BoolTensor ``(N, S, S)`` → ``N`` row-major ``'0'``/``'1'`` strings (the inverse of :func:`bits_to_grids`)."""
    cells = grids.shape[1] * grids.shape[2]
    text = (grids.reshape(-1).to(torch.uint8) + ord("0")).numpy().tobytes().decode("ascii")
    return [text[k * cells:(k + 1) * cells] for k in range(grids.shape[0])]
