"""Shared parts of the on-disk benchmark loaders (Waterbirds, Spawrious, ImageNet-9, MetaShift, CSV).

* :class:`DatasetFileError` — a missing or malformed file of a dataset folder, naming the file;
* :func:`read_csv` — rows of a metadata CSV with the required columns checked;
* :func:`load_rgb` / :func:`load_mask` — PIL RGB images and dense masks (PNG or ``.npy``, never pickled);
* :func:`download_archive` — torchvision's ``download_and_extract_archive`` with our errors;
* :class:`ImageFileDataset` — the torchvision-style base: ``(image, label)`` by default, or a dict with a
  ``tv_tensors.Image``, the object alpha as :class:`~torch_backswap.alpha.ObjectAlpha` and the sample's
  group when ``return_masks=True``; patch labels from the dense masks.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors

from torch_backswap._io import BackswapFileError, BackswapFileNotFoundError
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.labels import PatchLabels, dense_to_patch_grid

__all__ = [
    "DatasetFileError",
    "ImageFileDataset",
    "download_archive",
    "load_mask",
    "load_rgb",
    "parse_int",
    "read_csv",
]


class DatasetFileError(BackswapFileNotFoundError):
    """A file or folder a dataset needs is missing or malformed; ``path`` names it, the message says what to do."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        BackswapFileError.__init__(self, path, problem)


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; checks that ``required`` columns exist and no row is short."""
    if not path.is_file():
        raise DatasetFileError(path, "metadata file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DatasetFileError(path, f"missing column(s) {missing}; expected at least {list(required)}, "
                                         f"got {columns}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if any(row.get(c) in (None, "") for c in required):
                raise DatasetFileError(path, f"line {line} has an empty value in one of {list(required)}: {row}")
            rows.append(row)
    if not rows:
        raise DatasetFileError(path, "has a header but no rows")
    return rows


def parse_int(path: Path, row: dict, column: str, line: int | None = None) -> int:
    value = row[column]
    try:
        return int(float(value))
    except ValueError:
        where = f"line {line}" if line is not None else "a row"
        raise DatasetFileError(path, f"{where}: column {column!r} must be an integer, got {value!r}") from None


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file as PIL RGB (the file is closed afterwards)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetFileError(path, "image file not found") from None
    except OSError as err:
        raise DatasetFileError(path, f"cannot decode image: {err}") from err


def load_mask(path: Path) -> Tensor:
    """A dense object mask as float32 ``(H, W)`` in [0, 1].

    PNG/JPEG: grey levels / 255 (CUB segmentations are soft: 0..255). ``.npy``: 0/1 or bool arrays
    (ImageNet-9 ``fg_mask``), read with ``allow_pickle=False``.
    """
    if not path.is_file():
        raise DatasetFileError(path, "mask file not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DatasetFileError(path, f"cannot read mask array: {err}") from err
        if array.ndim == 3:
            array = array[..., 0]
        if array.ndim != 2:
            raise DatasetFileError(path, f"mask must be 2-D (H, W), got shape {array.shape}")
        mask = torch.from_numpy(np.ascontiguousarray(array)).float()
        if mask.numel() and float(mask.max()) > 1:
            mask = mask / 255.0
        return mask.clamp_(0, 1)
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L"), dtype=np.uint8)
    except OSError as err:
        raise DatasetFileError(path, f"cannot decode mask image: {err}") from err
    return torch.from_numpy(array.copy()).float() / 255.0


def download_archive(url: str, root: Path, filename: str, md5: str | None) -> None:
    """Download ``url`` into ``root`` and extract it there (torchvision helper; ``md5`` checked when given)."""
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(url, download_root=str(root), filename=filename, md5=md5, remove_finished=True)
    except RuntimeError as err:  # torchvision raises RuntimeError for a failed integrity check
        raise DatasetFileError(root / filename, f"download from {url} failed its check: {err}") from err


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be callable or None, got {value!r}")


class ImageFileDataset(torch.utils.data.Dataset):
    """Base of the file-backed benchmark datasets (torchvision style).

    Subclasses fill, in ``__init__``: ``root`` (Path), ``files`` (list of Paths), ``labels`` (int64 ``(N,)``),
    ``groups`` (int64 ``(N,)``), ``classes``, ``group_names``, ``ids`` (list of str) and ``mask_files``
    (list of Paths or ``None``: the dense object mask of each image, aligned with it).

    ``__getitem__`` returns ``(image, label)`` — a PIL RGB image and an int — after ``transform`` /
    ``target_transform``; with ``return_masks=True`` a dict ``{"image": tv_tensors.Image uint8 (3,H,W),
    "alpha": ObjectAlpha float32 (1,H,W) in [0,1], "label": int, "group": int, "index": int}`` to which
    ``transform`` is applied as a whole (torchvision v2 transforms move the alpha with the image).
    """

    classes: list[str]
    group_names: list[str]
    #: covered-fraction threshold of the paper for patch labels from this dataset's dense masks
    patch_threshold: float = 0.25

    def _init_common(self, transform: Callable | None, target_transform: Callable | None, return_masks: bool) -> None:
        _check_callable("transform", transform)
        _check_callable("target_transform", target_transform)
        if not isinstance(return_masks, bool):
            raise ValueError(f"return_masks must be a bool, got {return_masks!r}")
        self.transform = transform
        self.target_transform = target_transform
        self.return_masks = return_masks
        self.mask_files: list[Path] | None = getattr(self, "mask_files", None)

    def _check_files(self) -> None:
        """Every image (and mask) file must exist: a partial folder is an error naming the first missing file."""
        for kind, files in (("image", self.files), ("mask", self.mask_files or [])):
            missing = [f for f in files if not f.is_file()]
            if missing:
                more = f" (and {len(missing) - 1} more {kind} files)" if len(missing) > 1 else ""
                raise DatasetFileError(missing[0], f"{kind} file listed by the dataset is missing{more}; "
                                                   f"the folder {str(self.root)!r} is incomplete")
        if self.return_masks and self.mask_files is None:
            raise ValueError(f"return_masks=True but {type(self).__name__} has no dense masks here "
                             f"({self._mask_hint()})")

    def _mask_hint(self) -> str:
        return "this dataset ships no masks"

    # torchvision-style accessors
    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def group_counts(self) -> dict[str, int]:
        """Number of samples per group name (every group listed, zero counts included)."""
        counts = torch.bincount(self.groups, minlength=self.n_groups).tolist()
        return dict(zip(self.group_names, counts))

    def __len__(self) -> int:
        return len(self.files)

    def mask(self, index: int) -> Tensor:
        """The dense object mask of sample ``index``: float32 ``(1, H, W)`` in [0, 1], aligned with its image."""
        if self.mask_files is None:
            raise ValueError(f"{type(self).__name__} has no dense masks here ({self._mask_hint()})")
        return load_mask(self.mask_files[index])[None]

    def __getitem__(self, index: int) -> Any:
        image = load_rgb(self.files[index])
        label = int(self.labels[index])
        if self.return_masks:
            from torchvision.transforms.v2 import functional as TF

            alpha = self.mask(index)
            if tuple(alpha.shape[-2:]) != (image.height, image.width):
                raise DatasetFileError(self.mask_files[index], f"mask is {tuple(alpha.shape[-2:])} but its image "
                                                               f"{self.files[index].name} is {(image.height, image.width)}")
            sample: Any = {"image": tv_tensors.Image(TF.pil_to_tensor(image)), "alpha": ObjectAlpha(alpha),
                           "label": label, "group": int(self.groups[index]), "index": index}
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                sample["label"] = self.target_transform(sample["label"])
            return sample
        target: Any = label
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def patch_labels(
        self,
        indices: Sequence[int] | Tensor | None = None,
        grid_size: int = 16,
        threshold: float | None = None,
        drop_empty: bool = True,
    ) -> PatchLabels:
        """Patch labels from the dense masks (paper: covered fraction ≥ ``patch_threshold`` of the dataset).

        Each mask is pooled on its own resolution (the S×S cells cover the image as a 224² resize would);
        ids are :attr:`ids`. ``drop_empty`` leaves out images whose grid comes out empty, as the paper did.
        """
        if self.mask_files is None:
            raise ValueError(f"{type(self).__name__} has no dense masks here ({self._mask_hint()})")
        threshold = self.patch_threshold if threshold is None else threshold
        indices = range(len(self)) if indices is None else [int(i) for i in indices]
        grids, ids = [], []
        for i in indices:
            grid = dense_to_patch_grid((self.mask(i) > 0.5), grid_size, threshold)[0]
            if drop_empty and not bool(grid.any()):
                continue
            grids.append(grid)
            ids.append(self.ids[i])
        if not grids:
            return PatchLabels([], torch.zeros(0, grid_size, grid_size, dtype=torch.bool))
        return PatchLabels(ids, torch.stack(grids))

    def _repr_lines(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.root}", *self._repr_lines()]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        return "\n".join(lines)
