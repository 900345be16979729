"""Datasets in the metadata-CSV format of the subpopulation-shift suites, and MetaShift Cat/Dog.

The format (BalancingGroups, Idrissi et al. 2022; SubpopBench, Yang et al. 2023): one CSV with a row per
image and the columns

* ``filename`` — the image path, relative to the dataset folder (absolute paths written on another
  machine are re-rooted: the longest trailing part that exists under the folder is used);
* ``split`` — ``0``/``1``/``2`` or ``train``/``val``/``test``;
* ``y`` — the class index; ``a`` — the spurious attribute (e.g. the background) index;
* ``id`` — optional sample id (default: the row number).

Any dataset written in this format loads with :class:`SubpopulationCSV`; group = ``y * n_attributes + a``.

**MetaShift** Cat/Dog indoor/outdoor (SubpopBench's ``metashift/`` folder)::

    metashift/
        metadata_metashift.csv                   filename, y, a, split   (y: 1 = cat; a: 1 = indoor)
        MetaShift-Cat-Dog-indoor-outdoor/
            train/cat/cat(indoor)/*.jpg          train/dog/dog(outdoor)/*.jpg
            test/cat/cat(outdoor)/*.jpg          test/dog/dog(indoor)/*.jpg
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from torch_backswap.datasets._folder import (
    DatasetFileError,
    ImageFileDataset,
    parse_int,
    read_csv,
)

__all__ = ["MetaShift", "SubpopulationCSV"]

SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SPLITS = ("train", "val", "test")


def _split_index(path: Path, value: str, line: int) -> int:
    text = value.strip().lower()
    if text in SPLIT_NAMES:
        return SPLIT_NAMES[text]
    try:
        index = int(float(text))
    except ValueError:
        index = -1
    if index not in (0, 1, 2):
        raise DatasetFileError(path, f"line {line}: split must be 0/1/2 or train/val/test, got {value!r}")
    return index


def _locate(base: Path, filename: str) -> Path:
    """The file for ``filename``: relative to ``base``, or an absolute path; else its longest existing tail."""
    direct = Path(filename) if os.path.isabs(filename) else base / filename
    if direct.exists():
        return direct
    parts = (PureWindowsPath(filename) if "\\" in filename else PurePosixPath(filename)).parts
    for start in range(1, len(parts)):
        candidate = base.joinpath(*parts[start:])
        if candidate.exists():
            return candidate
    return direct


class SubpopulationCSV(ImageFileDataset):
    """Any image dataset described by a subpopulation-shift metadata CSV (see the module docs).

    Args:
        root: the dataset folder (file names are relative to it).
        metadata: the CSV file name inside ``root`` (or a path).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        classes: class names (default: ``"0"``, ``"1"``, ... by the ``y`` values).
        attribute_names: names of the ``a`` values (default: ``"0"``, ``"1"``, ...).
        masks: optional folder of dense masks, ``<same relative path>.png``.
        download: not available (these suites build the CSV themselves); ``True`` raises with instructions.

    Attributes: ``labels`` (``y``), ``attributes`` (``a``; alias ``backgrounds``/``places``), ``groups``,
    ``ids``, ``files``, ``classes``, ``attribute_names``, ``group_names``.
    """

    patch_threshold = 0.25

    def __init__(
        self,
        root: str | os.PathLike,
        metadata: str | os.PathLike = "metadata.csv",
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        classes: Sequence[str] | None = None,
        attribute_names: Sequence[str] | None = None,
        masks: str | os.PathLike | None = None,
        return_masks: bool = False,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        root = Path(root).expanduser()
        if download:
            raise ValueError(self._download_message(root))
        csv_path = Path(metadata) if os.path.isabs(metadata) else root / metadata
        if not csv_path.is_file():
            raise DatasetFileError(csv_path, self._download_message(root))
        rows = read_csv(csv_path, ("filename", "y", "a", "split"))
        self.root = root
        self.split = split
        self.metadata = csv_path
        files, ys, attrs, ids = [], [], [], []
        for line, row in enumerate(rows, start=2):
            s = _split_index(csv_path, row["split"], line)
            if split != "all" and s != SPLITS.index(split):
                continue
            y, a = parse_int(csv_path, row, "y", line), parse_int(csv_path, row, "a", line)
            if y < 0 or a < 0:
                raise DatasetFileError(csv_path, f"line {line}: y and a must be >= 0, got {y}, {a}")
            files.append(_locate(root, row["filename"]))
            ys.append(y)
            attrs.append(a)
            ids.append((row.get("id") or str(line - 2)).strip())
        all_y = {parse_int(csv_path, r, "y") for r in rows}
        all_a = {parse_int(csv_path, r, "a") for r in rows}
        n_classes = max(all_y) + 1 if classes is None else len(classes)
        n_attrs = max(all_a) + 1 if attribute_names is None else len(attribute_names)
        if max(all_y) >= n_classes or max(all_a) >= n_attrs:
            raise ValueError(f"classes/attribute_names name {n_classes}/{n_attrs} values but {csv_path} has y up to "
                             f"{max(all_y)} and a up to {max(all_a)}")
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        self.attribute_names = (list(attribute_names) if attribute_names is not None
                                else [str(i) for i in range(n_attrs)])
        self.group_names = [f"{c}_{a}" for c in self.classes for a in self.attribute_names]
        self.files = files
        self.labels = torch.tensor(ys, dtype=torch.long)
        self.attributes = torch.tensor(attrs, dtype=torch.long)
        self.groups = self.labels * n_attrs + self.attributes
        self.ids = ids
        if masks is not None:
            masks_root = Path(masks).expanduser()
            if not masks_root.is_dir():
                raise DatasetFileError(masks_root, "masks folder not found")
            self.mask_files = [masks_root / f.relative_to(root).with_suffix(".png") if f.is_relative_to(root)
                               else masks_root / (f.stem + ".png") for f in files]
        else:
            self.mask_files = None
        self._init_common(transform, target_transform, return_masks)
        self._check_files()

    @property
    def backgrounds(self) -> torch.Tensor:
        """The spurious attribute ``a`` per sample (alias of :attr:`attributes`)."""
        return self.attributes

    @property
    def places(self) -> torch.Tensor:
        return self.attributes

    def _download_message(self, root: Path) -> str:
        return (f"{type(self).__name__} cannot download: build the metadata CSV (columns filename, y, a, split and "
                f"optionally id) with the subpopulation-shift suite's script (e.g. SubpopBench "
                f"subpopbench/scripts/download.py) and place it with the images under {str(root)!r}")

    def _repr_lines(self) -> list[str]:
        return [f"    Metadata: {self.metadata.name}", f"    Split: {self.split}"]


class MetaShift(SubpopulationCSV):
    """MetaShift Cat/Dog with indoor/outdoor backgrounds, from SubpopBench's ``metashift/`` folder.

    ``root`` holds ``metashift/`` (or is it). Labels: 0 = dog, 1 = cat; attribute ``a``: 0 = outdoor,
    1 = indoor (train: cats indoor, dogs outdoor; test breaks it). Groups: ``2 * y + a``.
    """

    folder = "metashift"
    images_folder = "MetaShift-Cat-Dog-indoor-outdoor"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        metadata: str = "metadata_metashift.csv",
        masks: str | os.PathLike | None = None,
        return_masks: bool = False,
    ) -> None:
        root = Path(root).expanduser()
        base = root / self.folder if (root / self.folder).is_dir() else root
        super().__init__(base, metadata, split, transform, target_transform, download, classes=["dog", "cat"],
                         attribute_names=["outdoor", "indoor"], masks=masks, return_masks=return_masks)

    def _download_message(self, root: Path) -> str:
        return ("MetaShift Cat/Dog has no single public archive in this layout: download the MetaShift "
                "Cat-Dog-indoor-outdoor images (https://github.com/Weixin-Liang/MetaShift) and generate "
                "metadata_metashift.csv with SubpopBench's scripts (subpopbench/scripts/download.py --datasets "
                f"metashift), so that {str(root)!r} holds metadata_metashift.csv (filename, y, a, split) and "
                "MetaShift-Cat-Dog-indoor-outdoor/{train,test}/{cat,dog}/...")
