"""Patch labels: one S×S boolean grid per image (``True`` = the cell shows the object).

:class:`PatchLabels` is the collection (ids ⇄ grids, subset / merge / update, the image-folder checks);
:meth:`PatchLabels.read` and :meth:`PatchLabels.write` go through :mod:`torch_backswap.label_files`, which
describes the three file formats (our CSV and JSON, the paper's ``masks.csv``) and raises
:class:`LabelFormatError` — message naming the file, the line and the value — on malformed input.
Image ids are non-empty, on one line and without NUL or surrounding whitespace (label files cannot keep them);
:class:`PatchLabels` refuses others. :meth:`PatchLabels.write` is durable (:mod:`torch_backswap._io`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._io import atomic_write_bytes
from .label_files import JSON_VERSION, LabelFormatError, format_label_text, read_label_file

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

    # -- files -------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike, format: str = "auto") -> "PatchLabels":
        """Read patch labels; ``format`` is ``"auto"``, ``"paper"``, ``"backswap"`` (CSV) or ``"json"``
        (formats: :mod:`torch_backswap.label_files`).

        Raises:
            BackswapFileNotFoundError: ``path`` does not exist (also a ``FileNotFoundError``).
            LabelFormatError: anything wrong with the content, naming the file, the line and the value; a JSON
                file of a newer format version than :data:`JSON_VERSION` is refused with a clear message.
        """
        ids, grids, lines = read_label_file(path, format)
        return cls(ids, grids, source=str(Path(path)), lines=lines)

    def to_text(self, format: str = "backswap") -> str:
        """The file content for ``format`` ``"backswap"`` (CSV), ``"paper"`` (CSV) or ``"json"``.

        CSV cannot hold zero labels (the grid size would be lost): that raises ``ValueError``; use JSON.
        """
        return format_label_text(self.ids, self.grids, format)

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
# Helpers


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
