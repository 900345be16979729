"""Spawrious (Lynch et al., 2023): 4 dog breeds × 6 backgrounds, one-to-one (o2o) and many-to-many (m2m).

Layout under ``root`` (``root`` may also be the ``spawrious224`` folder itself)::

    spawrious224/
        0/<location>/<class>/<location>_<class>_<i>.png      (also 1/... for the o2o benchmarks)
        1/<location>/<class>/...

locations: beach, desert, dirt, jungle, mountain, snow; classes: bulldog, corgi, dachshund, labrador
(label = index in that order, as in the original code).

Which folders form train and test follows the combinations of the authors' loader
(``aengusl/spawrious``, ``spawrious/torch.py``: ``_get_combinations`` / ``build_combination``), with
``total = 3168`` images per (folder, location, class):

* **o2o** — each class has its own training background in both environments (folders ``0`` and ``1``),
  ``int(0.97 * total)`` images from ``0`` and ``int(0.87 * total)`` from ``1``; the rest of each environment
  is every class on a shared *filler* background; test = every image of each class on its test background
  from both folders.
* **m2m** — two backgrounds per class in training (``total`` images each from folder ``0``, the pairs
  swapped between the two classes of a pair); test = the two test backgrounds of each class (folder ``0``).

Files are taken in natural order of the trailing index ``<i>`` (the original takes ``os.listdir`` order,
which is not reproducible). The original has no validation split; ``val_fraction`` holds out a
deterministic share of each training folder as ``split="val"``. Spawrious ships no object masks: pass
``masks=<folder>`` holding ``<same relative path>.png`` masks (e.g. from a segmenter) for ``return_masks``
and patch labels (paper threshold 0.2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from torch_backswap.datasets._folder import (
    DatasetFileError,
    ImageFileDataset,
    download_archive,
)

__all__ = ["BENCHMARKS", "Spawrious", "spawrious_combinations"]

CLASSES = ["bulldog", "corgi", "dachshund", "labrador"]
LOCATIONS = ["beach", "desert", "dirt", "jungle", "mountain", "snow"]
TOTAL = 3168
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# benchmark -> (training background per class, test background per class, filler), classes in the order
# bulldog, dachshund, labrador, corgi (the order the original code pairs them in)
_COMBINATIONS = {
    "o2o_easy": (("desert", "jungle", "dirt", "snow"), ("dirt", "snow", "desert", "jungle"), "beach"),
    "o2o_medium": (("mountain", "beach", "dirt", "jungle"), ("jungle", "dirt", "beach", "snow"), "desert"),
    "o2o_hard": (("jungle", "mountain", "snow", "desert"), ("mountain", "snow", "desert", "jungle"), "beach"),
    "m2m_easy": (("desert", "mountain", "dirt", "jungle"), ("dirt", "jungle", "mountain", "desert"), None),
    "m2m_medium": (("beach", "snow", "mountain", "desert"), ("desert", "mountain", "beach", "snow"), None),
    "m2m_hard": (("dirt", "jungle", "snow", "beach"), ("snow", "beach", "dirt", "jungle"), None),
}
BENCHMARKS = tuple(_COMBINATIONS)
_PAIR_ORDER = ("bulldog", "dachshund", "labrador", "corgi")
_URLS = {
    "entire_dataset": "https://www.dropbox.com/s/hofkueo8qvaqlp3/spawrious224__entire_dataset.tar.gz?dl=1",
    "o2o_easy": "https://www.dropbox.com/s/kwhiv60ihxe3owy/spawrious224__o2o_easy.tar.gz?dl=1",
    "o2o_medium": "https://www.dropbox.com/s/x03gkhdwar5kht4/spawrious224__o2o_medium.tar.gz?dl=1",
    "o2o_hard": "https://www.dropbox.com/s/p1ry121m2gjj158/spawrious224__o2o_hard.tar.gz?dl=1",
}


def spawrious_combinations(benchmark: str, total: int = TOTAL) -> dict[str, list[tuple[str, str, str, int | None]]]:
    """``{"train": [...], "test": [...]}``, each a list of ``(folder, location, class, limit)`` to read.

    ``limit`` is the number of images to take (``None`` = every image of the folder).
    """
    if benchmark not in _COMBINATIONS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    train_bg, test_bg, filler = _COMBINATIONS[benchmark]
    train: list[tuple[str, str, str, int | None]] = []
    test: list[tuple[str, str, str, int | None]] = []
    if benchmark.startswith("o2o"):
        counts = (int(0.97 * total), int(0.87 * total))
        for env, count in enumerate(counts):
            for k, cls in enumerate(_PAIR_ORDER):
                train.append((str(env), train_bg[k], cls, count))
            for cls in _PAIR_ORDER:
                train.append((str(env), filler, cls, total - count))
        for env in (0, 1):
            for k, cls in enumerate(_PAIR_ORDER):
                test.append((str(env), test_bg[k], cls, None))
    else:
        partner = {0: 1, 1: 0, 2: 3, 3: 2}
        for k, cls in enumerate(_PAIR_ORDER):
            train.append(("0", train_bg[k], cls, total))
            train.append(("0", train_bg[partner[k]], cls, total))
            test.append(("0", test_bg[k], cls, None))
            test.append(("0", test_bg[partner[k]], cls, None))
    return {"train": train, "test": test}


def _natural_key(path: Path) -> tuple:
    match = re.search(r"(\d+)$", path.stem)
    return (int(match.group(1)) if match else -1, path.name)


class Spawrious(ImageFileDataset):
    """One Spawrious benchmark split (torchvision style).

    Args:
        root: folder holding ``spawrious224/`` (or that folder itself).
        benchmark: one of ``o2o_easy``, ``o2o_medium``, ``o2o_hard``, ``m2m_easy``, ``m2m_medium``, ``m2m_hard``.
        split: ``"train"``, ``"val"`` (held out from the training folders) or ``"test"``.
        val_fraction: share of every training folder's selected images put in ``"val"`` (the last ones in
            natural order); 0 → no validation split.
        masks: folder of dense object masks mirroring ``spawrious224/`` (``<same relative path>.png``).
        return_masks: dicts with the mask as :class:`~torch_backswap.alpha.ObjectAlpha` (needs ``masks``).
        download: fetch the benchmark's tarball (o2o: its own; m2m: the entire dataset) from the authors'
            public Dropbox links (no checksum is published); ``url``/``md5`` override it.
        total: images per folder of the release (3168); only for reduced copies of the layout.

    Attributes: ``labels``, ``locations`` (index into :data:`LOCATIONS`; alias ``backgrounds``), ``envs``
    (the ``0``/``1`` folder), ``groups`` (``label * 6 + location``), ``ids`` (path relative to
    ``spawrious224``), ``files``, ``classes``, ``location_names``, ``group_names``.
    """

    classes = CLASSES
    location_names = LOCATIONS
    group_names = [f"{c}_on_{loc}" for c in CLASSES for loc in LOCATIONS]
    patch_threshold = 0.2
    urls = dict(_URLS)
    md5: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        benchmark: str = "o2o_easy",
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        val_fraction: float = 0.2,
        masks: str | os.PathLike | None = None,
        return_masks: bool = False,
        total: int = TOTAL,
        url: str | None = None,
        md5: str | None = None,
    ) -> None:
        if benchmark not in _COMBINATIONS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if split == "val" and val_fraction == 0:
            raise ValueError("split='val' needs val_fraction > 0")
        root = Path(root).expanduser()
        if download and self._base(root) is None:
            key = "entire_dataset" if benchmark.startswith("m2m") else benchmark
            source = url or self.urls[key]
            download_archive(source, root, f"spawrious224__{key}.tar.gz", md5 if url else (md5 or self.md5))
        base = self._base(root)
        if base is None:
            raise DatasetFileError(
                root / "spawrious224",
                "Spawrious not found. Get it with download=True or from https://github.com/aengusl/spawrious "
                "(spawrious224__<benchmark>.tar.gz; m2m needs spawrious224__entire_dataset.tar.gz) and extract it "
                "so that ROOT/spawrious224/<0|1>/<location>/<class>/<location>_<class>_<i>.png exist")
        self.root = base
        self.benchmark = benchmark
        self.split = split
        plan = spawrious_combinations(benchmark, total)["test" if split == "test" else "train"]
        files, labels, locs, envs = [], [], [], []
        for folder, location, cls, limit in plan:
            directory = base / folder / location / cls
            if not directory.is_dir():
                raise DatasetFileError(directory, f"folder missing from the Spawrious layout (needed by {benchmark} "
                                                  f"{'test' if split == 'test' else 'train'})")
            found = sorted((p for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
            if limit is not None:
                if len(found) < limit:
                    raise DatasetFileError(directory, f"has {len(found)} images but {benchmark} takes {limit} from it "
                                                      "(incomplete folder)")
                found = found[:limit]
            if not found:
                raise DatasetFileError(directory, "has no images")
            if split != "test" and val_fraction > 0:
                n_val = round(len(found) * val_fraction)
                found = found[len(found) - n_val:] if split == "val" else found[: len(found) - n_val]
            files += found
            labels += [CLASSES.index(cls)] * len(found)
            locs += [LOCATIONS.index(location)] * len(found)
            envs += [int(folder)] * len(found)
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.locations = torch.tensor(locs, dtype=torch.long)
        self.envs = torch.tensor(envs, dtype=torch.long)
        self.groups = self.labels * len(LOCATIONS) + self.locations
        self.ids = [p.relative_to(base).as_posix() for p in files]
        self.masks_root = None if masks is None else Path(masks).expanduser()
        if self.masks_root is not None and not self.masks_root.is_dir():
            raise DatasetFileError(self.masks_root, "masks folder not found")
        self.mask_files = (None if self.masks_root is None
                           else [self.masks_root / Path(i).with_suffix(".png") for i in self.ids])
        self._init_common(transform, target_transform, return_masks)
        self._check_files()

    @staticmethod
    def _base(root: Path) -> Path | None:
        for candidate in (root / "spawrious224", root):
            if candidate.name == "spawrious224" and candidate.is_dir():
                return candidate
        return None

    @property
    def backgrounds(self) -> torch.Tensor:
        """Location index per sample (alias of :attr:`locations`)."""
        return self.locations

    def _mask_hint(self) -> str:
        return "Spawrious ships no masks: pass masks=<folder of <relative path>.png masks>"

    def _repr_lines(self) -> list[str]:
        return [f"    Benchmark: {self.benchmark}", f"    Split: {self.split}"]
