"""ImageNet-9 Backgrounds Challenge (Xiao et al., 2020): 9 super-classes × 8 foreground/background variants.

Layout under ``root`` (the release's ``backgrounds_challenge_data.tar.gz`` extracts to ``bg_challenge/``;
``root`` may also be that folder itself)::

    bg_challenge/
        original/val/<class>/<stem>.JPEG      (also only_fg, mixed_same, mixed_rand, mixed_next, no_fg,
        mixed_same/val/<class>/...             only_bg_b, only_bg_t)
        fg_mask/val/<class>/<stem>.npy        the foreground mask of original/val/<class>/<stem>.JPEG

The nine class folders are ``00_dog``, ``01_bird``, ``02_wheeled vehicle``, ``03_reptile``, ``04_carnivore``,
``05_insect``, ``06_musical instrument``, ``07_primate``, ``08_fish`` — two of them contain a space. Labels
are the folder's position in sorted order (as the official ``ImageFolder`` evaluation assigns them).
The BG-gap of the paper is accuracy on ``mixed_same`` minus ``mixed_rand``
(:func:`torch_backswap.diagnose.imagenet9_bg_gap`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from torch_backswap.datasets._folder import (
    DatasetFileError,
    ImageFileDataset,
    download_archive,
)

__all__ = ["IN9_CLASSES", "VARIANTS", "ImageNet9"]

VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next", "no_fg", "only_bg_b", "only_bg_t")
IN9_CLASSES = ["00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
               "06_musical instrument", "07_primate", "08_fish"]
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
#: variants whose foreground sits where ``fg_mask`` says (same file names as ``original``)
MASKED_VARIANTS = ("original", "only_fg")


class ImageNet9(ImageFileDataset):
    """One ImageNet-9 variant's test split (torchvision style).

    Args:
        root: folder holding ``bg_challenge/`` (or that folder itself).
        variant: one of :data:`VARIANTS`.
        split: ``"val"`` (the challenge's test images) or ``"train"`` — the training data released separately
            per variant (e.g. ``original.tar.gz`` → ``original/train/<class>/``; same class folders).
        return_masks: dicts with ``fg_mask`` as :class:`~torch_backswap.alpha.ObjectAlpha` (``original``
            and ``only_fg``, whose files share the mask's stem).
        download: fetch the GitHub release tarball (no checksum is published; ``md5`` checks it when given).

    Attributes: ``labels`` (= ``groups``: the data has no background attribute), ``classes`` (folder names,
    spaces kept), ``relative_paths`` (``<class>/<file>``, to pair variants), ``ids`` (the same), ``files``.
    """

    classes = IN9_CLASSES
    group_names = IN9_CLASSES
    patch_threshold = 0.25
    url = "https://github.com/MadryLab/backgrounds_challenge/releases/download/data/backgrounds_challenge_data.tar.gz"
    md5: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        variant: str = "original",
        split: str = "val",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        return_masks: bool = False,
        url: str | None = None,
        md5: str | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if split not in ("val", "train"):
            raise ValueError(f"split must be 'val' or 'train', got {split!r}")
        root = Path(root).expanduser()
        if download and self._base(root, variant, split) is None:
            source = url or self.url
            download_archive(source, root, "backgrounds_challenge_data.tar.gz", md5 if url else (md5 or self.md5))
        base = self._base(root, variant, split)
        if base is None:
            raise DatasetFileError(
                root / "bg_challenge",
                "ImageNet-9 not found. Download backgrounds_challenge_data.tar.gz from "
                "https://github.com/MadryLab/backgrounds_challenge/releases (or pass download=True) and extract it "
                "so that ROOT/bg_challenge/<variant>/val/<class>/*.JPEG and ROOT/bg_challenge/fg_mask/val/<class>/*.npy "
                f"exist, with the class folders {IN9_CLASSES}")
        self.root = base
        self.variant = variant
        self.split = split
        directory = base / variant / split
        if not directory.is_dir():
            raise DatasetFileError(directory, f"variant folder missing from bg_challenge (variants: {VARIANTS})")
        files, labels = [], []
        for label, cls in enumerate(IN9_CLASSES):
            class_dir = directory / cls
            if not class_dir.is_dir():
                present = sorted(p.name for p in directory.iterdir() if p.is_dir())
                raise DatasetFileError(class_dir, f"class folder missing (found {present}; the release names "
                                                  "include spaces, e.g. '02_wheeled vehicle')")
            found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DatasetFileError(class_dir, "class folder has no images")
            files += found
            labels += [label] * len(found)
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.groups = self.labels
        self.relative_paths = [f"{p.parent.name}/{p.name}" for p in files]
        self.ids = list(self.relative_paths)
        self.mask_files = None
        if variant in MASKED_VARIANTS and (base / "fg_mask" / split).is_dir():
            self.mask_files = [base / "fg_mask" / split / p.parent.name / (p.stem + ".npy") for p in files]
        self._init_common(transform, target_transform, return_masks)
        self._check_files()

    @staticmethod
    def _base(root: Path, variant: str, split: str) -> Path | None:
        """``root/bg_challenge`` or ``root``: the first holding ``<variant>/<split>`` (the test data and the
        separately released training data may sit side by side), else the first holding any variant."""
        candidates = (root / "bg_challenge", root)
        for candidate in candidates:
            if (candidate / variant / split).is_dir():
                return candidate
        for candidate in candidates:
            if any((candidate / v).is_dir() for v in VARIANTS):
                return candidate
        return None

    def _mask_hint(self) -> str:
        if self.variant not in MASKED_VARIANTS:
            return f"fg_mask belongs to the variants {MASKED_VARIANTS}, not {self.variant!r}"
        return f"no folder {self.root / 'fg_mask' / self.split}"

    def _repr_lines(self) -> list[str]:
        return [f"    Variant: {self.variant}", f"    Split: {self.split}"]
