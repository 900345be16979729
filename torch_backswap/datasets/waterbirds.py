"""Waterbirds (Sagawa et al., 2020): CUB birds pasted on Places backgrounds, ``waterbird_complete95_forest2water2``.

Layout under ``root`` (``root`` may also be the dataset folder itself)::

    waterbird_complete95_forest2water2/
        metadata.csv        img_id, img_filename, y, split, place, place_filename
        001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
        ...
    segmentations/          optional: CUB-200-2011's segmentations (same relative paths, .png)
        001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.png

``split`` 0/1/2 = train/val/test; ``y`` 1 = waterbird; ``place`` 1 = water; group = ``2 * y + place``.
The CUB segmentations align pixel for pixel with the Waterbirds images (each bird was pasted at its
original position), so they are the dense object masks; pass their folder as ``segmentations`` or put it
next to the dataset folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from torch_backswap.datasets._folder import (
    DatasetFileError,
    ImageFileDataset,
    download_archive,
    parse_int,
    read_csv,
)

__all__ = ["Waterbirds"]

SPLITS = {"train": 0, "val": 1, "test": 2}
FOLDER = "waterbird_complete95_forest2water2"
COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")


class Waterbirds(ImageFileDataset):
    """The Waterbirds benchmark from its released folder (torchvision style).

    Args:
        root: folder holding ``waterbird_complete95_forest2water2/`` (or that folder itself).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        transform, target_transform: as in torchvision (see :class:`ImageFileDataset` for the dict form).
        download: fetch and extract :attr:`url` into ``root`` when the folder is absent.
        return_masks: return dicts with the CUB segmentation as :class:`~torch_backswap.alpha.ObjectAlpha`.
        segmentations: folder of CUB segmentations; default ``root/segmentations`` or
            ``<dataset folder>/segmentations`` when present.
        keep_groups: keep only these groups (e.g. ``(0, 3)`` for training *without* the minority groups
            landbird-on-water and waterbird-on-land, the paper's 100 %-correlation setting).
        url, md5: override the download source (a mirror, or a local server in tests).

    Attributes: ``labels`` (int64, 1 = waterbird), ``places`` (int64, 1 = water; alias ``backgrounds``),
    ``groups`` (``2 * label + place``), ``ids`` (``img_id`` as text, the key of the paper's ``masks.csv``),
    ``img_filenames``, ``place_filenames``, ``files``, ``mask_files`` (``None`` without segmentations).
    """

    classes = ["landbird", "waterbird"]
    place_names = ["land", "water"]
    group_names = ["landbird_on_land", "landbird_on_water", "waterbird_on_land", "waterbird_on_water"]
    patch_threshold = 0.25
    #: public tarball released with group DRO (Sagawa et al.); no checksum is published for it
    url = "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz"
    md5: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        return_masks: bool = False,
        segmentations: str | os.PathLike | None = None,
        keep_groups: Sequence[int] | None = None,
        url: str | None = None,
        md5: str | None = None,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        root = Path(root).expanduser()
        if download:
            self._download(root, url or self.url, md5 if url else (md5 or self.md5))
        base = self._find(root)
        self.root = base
        self.split = split
        metadata = base / "metadata.csv"
        rows = read_csv(metadata, COLUMNS)
        files, labels, places, ids, names, place_files = [], [], [], [], [], []
        for line, row in enumerate(rows, start=2):
            s = parse_int(metadata, row, "split", line)
            if s not in SPLITS.values():
                raise DatasetFileError(metadata, f"line {line}: split must be 0, 1 or 2, got {row['split']!r}")
            if split != "all" and s != SPLITS[split]:
                continue
            y, place = parse_int(metadata, row, "y", line), parse_int(metadata, row, "place", line)
            if y not in (0, 1) or place not in (0, 1):
                raise DatasetFileError(metadata, f"line {line}: y and place must be 0 or 1, got {y!r}, {place!r}")
            files.append(base / row["img_filename"])
            labels.append(y)
            places.append(place)
            ids.append(row["img_id"].strip())
            names.append(row["img_filename"])
            place_files.append(row["place_filename"])
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.places = torch.tensor(places, dtype=torch.long)
        self.groups = 2 * self.labels + self.places
        self.files = files
        self.ids = ids
        self.img_filenames = names
        self.place_filenames = place_files
        seg_root = self._segmentations(root, base, segmentations)
        self.segmentations = seg_root
        self.mask_files = None if seg_root is None else [seg_root / Path(n).with_suffix(".png") for n in names]
        if keep_groups is not None:
            keep_set = {int(g) for g in keep_groups}
            if not keep_set <= set(range(4)):
                raise ValueError(f"keep_groups must be a subset of 0..3, got {list(keep_groups)!r}")
            self._select([i for i, g in enumerate(self.groups.tolist()) if g in keep_set])
        self._init_common(transform, target_transform, return_masks)
        self._check_files()

    def _select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long)
        self.labels, self.places, self.groups = self.labels[index], self.places[index], self.groups[index]
        self.files = [self.files[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.img_filenames = [self.img_filenames[i] for i in keep]
        self.place_filenames = [self.place_filenames[i] for i in keep]
        if self.mask_files is not None:
            self.mask_files = [self.mask_files[i] for i in keep]

    @staticmethod
    def _find(root: Path) -> Path:
        for candidate in (root / FOLDER, root):
            if (candidate / "metadata.csv").is_file():
                return candidate
        raise DatasetFileError(
            root / FOLDER / "metadata.csv",
            "Waterbirds not found. Download https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz "
            "(or pass download=True) and extract it so that ROOT/waterbird_complete95_forest2water2/metadata.csv "
            "(columns img_id,img_filename,y,split,place,place_filename) and the class folders "
            "(e.g. 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg) sit next to each other")

    @staticmethod
    def _segmentations(root: Path, base: Path, given: str | os.PathLike | None) -> Path | None:
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise DatasetFileError(path, "segmentations folder not found (expected CUB-200-2011's segmentations/, "
                                             "e.g. segmentations/001.Black_footed_Albatross/*.png)")
            return path
        for candidate in (root / "segmentations", base / "segmentations", base.parent / "segmentations"):
            if candidate.is_dir():
                return candidate
        return None

    def _mask_hint(self) -> str:
        return ("no CUB segmentations folder: download CUB-200-2011's segmentations.tgz and pass "
                "segmentations=<folder> or extract it to ROOT/segmentations")

    def _download(self, root: Path, url: str, md5: str | None) -> None:
        try:
            self._find(root)
            return  # already there
        except DatasetFileError:
            pass
        download_archive(url, root, Path(url.split("?")[0]).name, md5)

    def _repr_lines(self) -> list[str]:
        return [f"    Split: {self.split}", f"    Groups: {self.group_counts()}",
                f"    Masks: {self.segmentations if self.segmentations else 'none'}"]
