"""StampBirds: a Waterbirds-style benchmark built from real bird cut-outs and real water/land photos.

Photographic bird stamps with real alpha (Tux Paint) are pasted on random crops of water or land photos.
In the train split the place follows the class with probability ``correlation``; val and test have
balanced groups. Backgrounds are held out by photo (default): a val/test background is never cropped
from a training photo. Everything is composited deterministically at construction from the bundled
asset pack (``torch_backswap/datasets/assets/stampbirds``, GPL-2, see its NOTICE).

Conventions follow Waterbirds: label 1 = waterbird, place 1 = water, group = 2 * label + place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from torch_backswap._io import BackswapFileNotFoundError
from torch_backswap.datasets.stamp_composite import render_layout, sample_layout

__all__ = ["PACK_VERSIONS", "StampBirds", "default_root", "load_pack"]

SPLITS = ("train", "val", "test")
BACKGROUND_HOLDOUTS = ("photo", "crop")
DEFAULT_N = {"train": 3000, "val": 600, "test": 1200}  # packs whose manifest has no "default_n" (version 1)
GROUP_NAMES = ["landbird_on_land", "landbird_on_water", "waterbird_on_land", "waterbird_on_water"]
PACK_VERSIONS = {1: "stampbirds", 2: "stampbirds_v2"}
"""Bundled pack versions and their folders under ``torch_backswap/datasets/assets``."""
LATEST_VERSION = max(PACK_VERSIONS)


def default_root(version: int = LATEST_VERSION) -> Path:
    """Folder of the asset pack of ``version`` (1 or 2) shipped with the package."""
    if isinstance(version, bool) or version not in PACK_VERSIONS:
        raise ValueError(f"version must be one of {sorted(PACK_VERSIONS)}, got {version!r}")
    return Path(__file__).resolve().parent / "assets" / PACK_VERSIONS[version]


def load_pack(root: str | os.PathLike | None = None, version: int = LATEST_VERSION) -> dict[str, Any]:
    """Read an asset pack (``root``, or the bundled pack of ``version``): manifest plus decoded stamps and photos.

    Returns a dict with ``manifest`` (the JSON), ``bird_names``/``photo_names`` (lists, in manifest
    order, dropped photos left out), ``stamps`` (RGBA PIL images) and ``photos`` (RGB PIL images).
    """
    root = default_root(version) if root is None else Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BackswapFileNotFoundError(manifest_path, "StampBirds pack manifest.json not found; build the pack "
                                        "with python tools/build_stampbirds_pack.py --out <root> (source repository)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    bird_names = list(manifest["birds"])
    photo_names = [k for k, v in manifest["photos"].items() if not v.get("dropped")]
    stamps, photos = [], []
    for name in bird_names:
        with Image.open(root / manifest["birds"][name]["file"]) as im:
            stamps.append(im.convert("RGBA"))
    for name in photo_names:
        with Image.open(root / manifest["photos"][name]["file"]) as im:
            photos.append(im.convert("RGB"))
    return {"manifest": manifest, "bird_names": bird_names, "photo_names": photo_names,
            "stamps": stamps, "photos": photos}


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class StampBirds(torch.utils.data.Dataset):
    """Waterbirds-style dataset of bird cut-outs pasted on water / land photos.

    Args:
        root: asset-pack folder; ``None`` → the pack of ``version`` bundled with the package.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side S of the square images (e.g. 64, 128, 224).
        correlation: train split only — probability that the place matches the class (waterbird on
            water, landbird on land). Applied exactly: per class, ``round(n_class * (1 - correlation))``
            samples get the opposite place. Val/test are always group balanced.
        n: number of samples; ``None`` → the pack's default: 3000 (train), 600 (val) and 2400 (test) for
            version 2, 1200 (test) for version 1. For val/test, group counts differ by at most one when ``n``
            is not a multiple of 4.
        seed: seed of the compositing (each split draws from its own stream derived from it).
        background_holdout: ``"photo"`` — val/test crops come from held-out photos (the hard, honest
            setting); ``"crop"`` — every split crops from the train photos (the easier setting like
            the original Waterbirds). The train split is identical in both settings.
        holdout_birds: if True, train uses the manifest's ``train`` birds and val/test its ``test``
            birds (whole bird families held out); otherwise every split uses all birds.
        transform: applied to the image (a PIL image, or a uint8 tensor if ``as_tensor``).
        target_transform: applied to the int label.
        as_tensor: ``__getitem__`` returns uint8 tensors (3,S,S) instead of PIL images.
        bird_scale: range of the bird's longest side as a fraction of S.
        crop_scale: range of the background crop side as a fraction of the photo's short side.
        progress: show a tqdm bar while compositing.
        version: bundled pack version when ``root`` is None: **2** (default; 3 water and 4-5 land held-out
            photos in val and in test, a 2400-image test split, every held-out photo used equally often) or
            1 (the original pack: 1 water photo in val and in test; reproduces the version-1 figures
            exactly). The train split is the same in both versions. With an explicit ``root`` the pack's
            manifest decides, and ``version`` must match it if given.

    Attributes (N samples, tensors on CPU):
        images: uint8 (N,3,S,S). labels: int64 (N,), 1 = waterbird. places: int64 (N,), 1 = water
        (alias ``backgrounds``). groups: int64 (N,), ``2 * label + place``. alpha: float32 (N,1,S,S) in
        [0,1], the exact blending weight of the bird. foregrounds: uint8 (N,3,S,S), the bird colour.
        true_backgrounds: uint8 (N,3,S,S), the crop before pasting. photo_ids / bird_ids: int64 (N,)
        indexing ``photo_names`` / ``bird_names``. classes: ``["landbird", "waterbird"]``.

    ``images == round(alpha * foregrounds + (1 - alpha) * true_backgrounds)`` (float32 arithmetic).
    """

    classes = ["landbird", "waterbird"]
    group_names = GROUP_NAMES

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        image_size: int = 64,
        correlation: float = 1.0,
        n: int | None = None,
        seed: int = 0,
        background_holdout: str = "photo",
        holdout_birds: bool = False,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        as_tensor: bool = False,
        bird_scale: tuple[float, float] = (0.45, 0.8),
        crop_scale: tuple[float, float] = (0.5, 1.0),
        progress: bool = False,
        version: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        image_size = _check_int("image_size", image_size, 8)
        if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not 0.0 <= correlation <= 1.0:
            raise ValueError(f"correlation must be a float in [0, 1], got {correlation!r}")
        if version is not None and (isinstance(version, bool) or version not in PACK_VERSIONS):
            raise ValueError(f"version must be one of {sorted(PACK_VERSIONS)} or None, got {version!r}")
        if n is not None:
            n = _check_int("n", n, 1)
        if split != "train" and n is not None and n < 4:
            raise ValueError(f"n must be >= 4 for the group-balanced {split!r} split, got {n!r}")
        seed = _check_int("seed", seed, 0)
        if background_holdout not in BACKGROUND_HOLDOUTS:
            raise ValueError(f"background_holdout must be one of {BACKGROUND_HOLDOUTS}, got {background_holdout!r}")
        if not isinstance(holdout_birds, bool):
            raise ValueError(f"holdout_birds must be a bool, got {holdout_birds!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {transform!r}")
        if target_transform is not None and not callable(target_transform):
            raise ValueError(f"target_transform must be callable or None, got {target_transform!r}")

        self.root = default_root(LATEST_VERSION if version is None else version) if root is None else Path(root)
        self.split = split
        self.image_size = image_size
        self.correlation = float(correlation)
        self.seed = seed
        self.background_holdout = background_holdout
        self.holdout_birds = holdout_birds
        self.transform = transform
        self.target_transform = target_transform
        self.as_tensor = as_tensor

        pack = load_pack(self.root)
        manifest = pack["manifest"]
        self.manifest = manifest
        self.version = int(manifest.get("version", 1))
        if version is not None and version != self.version:
            raise ValueError(f"version={version!r} does not match the pack at root {str(self.root)!r} "
                             f"(its manifest says version {self.version})")
        if n is None:
            n = int(manifest.get("default_n", DEFAULT_N)[split])
        balanced_photos = manifest.get("heldout_photo_sampling") == "balanced" and split != "train"
        self.bird_names: list[str] = pack["bird_names"]
        self.photo_names: list[str] = pack["photo_names"]
        bird_label = np.array([manifest["birds"][b]["label"] for b in self.bird_names])
        bird_split = np.array([manifest["birds"][b]["split"] for b in self.bird_names])
        photo_place = np.array([manifest["photos"][p]["label"] for p in self.photo_names])
        photo_split = np.array([manifest["photos"][p]["split"] for p in self.photo_names])

        # Independent stream per split; not dependent on the holdout options so that the train split is
        # the same whichever evaluation setting is chosen.
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))
        labels, places = self._sample_groups(n, rng)

        photo_pool_split = split if background_holdout == "photo" else "train"
        bird_pool_split = ("train" if split == "train" else "test") if holdout_birds else None
        bird_ids = np.empty(n, dtype=np.int64)
        photo_ids = np.empty(n, dtype=np.int64)
        if bird_pool_split is None:
            bird_allowed = np.ones(len(self.bird_names), dtype=bool)
        else:
            bird_allowed = bird_split == bird_pool_split
        for value in (0, 1):
            pool = np.nonzero((bird_label == value) & bird_allowed)[0]
            idx = np.nonzero(labels == value)[0]
            bird_ids[idx] = pool[rng.integers(0, len(pool), size=len(idx))]
            pool = np.nonzero((photo_place == value) & (photo_split == photo_pool_split))[0]
            if len(pool) == 0:
                raise ValueError(f"root {str(self.root)!r} has no {'water' if value else 'land'} photo in split "
                                 f"{photo_pool_split!r}")
            idx = np.nonzero(places == value)[0]
            if balanced_photos:
                # every photo of the pool the same number of times (+-1), in random order
                photo_ids[idx] = rng.permutation(np.resize(pool, len(idx)))
            else:
                photo_ids[idx] = pool[rng.integers(0, len(pool), size=len(idx))]

        layout = sample_layout(bird_ids, photo_ids, rng, stamp_scale=bird_scale, crop_scale=crop_scale, flip=True)
        out = render_layout(pack["stamps"], pack["photos"], layout, image_size, progress=progress)

        self.images: torch.Tensor = out.images
        self.alpha: torch.Tensor = out.alpha
        self.foregrounds: torch.Tensor = out.foregrounds
        self.true_backgrounds: torch.Tensor = out.backgrounds
        self.labels = torch.from_numpy(labels)
        self.places = torch.from_numpy(places)
        self.groups = 2 * self.labels + self.places
        self.bird_ids = torch.from_numpy(bird_ids)
        self.photo_ids = torch.from_numpy(photo_ids)
        self.layout = layout

    def _sample_groups(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.split == "train":
            labels = np.zeros(n, dtype=np.int64)
            labels[n - n // 2:] = 1
            places = labels.copy()
            for value in (0, 1):
                idx = np.nonzero(labels == value)[0]
                n_minority = int(round(len(idx) * (1.0 - self.correlation)))
                places[idx[:n_minority]] = 1 - value
        else:
            counts = [n // 4 + (1 if g < n % 4 else 0) for g in range(4)]
            groups = np.repeat(np.arange(4, dtype=np.int64), counts)
            labels, places = groups // 2, groups % 2
        order = rng.permutation(n)
        return labels[order].copy(), places[order].copy()

    # torchvision-style aliases
    @property
    def backgrounds(self) -> torch.Tensor:
        """Place per sample, int64 (N,): 0 = land, 1 = water (the API-contract name for ``places``)."""
        return self.places

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image: Any = self.images[index]
        if not self.as_tensor:
            image = Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB")
        target: Any = int(self.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def group_counts(self) -> dict[str, int]:
        """Number of samples per group name."""
        counts = torch.bincount(self.groups, minlength=4).tolist()
        return dict(zip(GROUP_NAMES, counts))

    def __repr__(self) -> str:
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.root}",
            f"    Split: {self.split}",
            f"    Pack version: {self.version}",
            f"    Image size: {self.image_size}",
            f"    Correlation: {self.correlation}" if self.split == "train" else "    Groups: balanced",
            f"    Background holdout: {self.background_holdout}",
            f"    Holdout birds: {self.holdout_birds}",
        ]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        return "\n".join(lines)
