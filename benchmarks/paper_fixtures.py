"""Tiny synthetic copies of the real on-disk layouts of Waterbirds, Spawrious, ImageNet-9 and MetaShift.

Used by the loader tests and by ``python -m benchmarks.paper --smoke``. Each writer reproduces the real
file names, CSV columns and quirks (Waterbirds' ``img_filename`` paths such as
``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg`` and CUB ``segmentations/*.png``;
Spawrious' ``spawrious224/<0|1>/<location>/<class>/<location>_<class>_<i>.png``; ImageNet-9's class folders
with spaces and ``fg_mask/val/<class>/<stem>.npy``; MetaShift's ``cat(indoor)`` folders and
``metadata_metashift.csv``). Images are small: a class-coloured ellipse (the object, whose mask is written
where the dataset has masks) on a background whose colour follows the background attribute, plus noise.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["object_image", "write_imagenet9", "write_metashift", "write_spawrious", "write_waterbirds"]

_BG_COLOURS = [(70, 140, 60), (40, 90, 200), (200, 180, 120), (30, 110, 40), (120, 110, 100), (235, 235, 245),
               (160, 60, 60), (90, 60, 140), (60, 160, 160)]
_FG_COLOURS = [(230, 200, 40), (40, 40, 40), (220, 100, 20), (250, 250, 250), (150, 30, 150), (20, 200, 120),
               (100, 100, 240), (240, 120, 160), (120, 70, 20)]


def object_image(rng: np.random.Generator, size: int, label: int, background: int) -> tuple[Image.Image, np.ndarray]:
    """An RGB image (object of colour ``label`` on background ``background``) and its bool object mask."""
    bg = np.array(_BG_COLOURS[background % len(_BG_COLOURS)], dtype=np.float32)
    pixels = bg + rng.normal(0, 12, size=(size, size, 3))
    mask_img = Image.new("L", (size, size), 0)
    r = rng.uniform(0.22, 0.32) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    ImageDraw.Draw(mask_img).ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=255)
    mask = np.asarray(mask_img) > 127
    pixels[mask] = np.array(_FG_COLOURS[label % len(_FG_COLOURS)], dtype=np.float32) + rng.normal(0, 8, (mask.sum(), 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"), mask


def _write_bytes(path: Path, data: bytes) -> None:
    """Plain write: fixtures live in throw-away temporary folders, so no fsync (hundreds of small files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _save(path: Path, image: Image.Image, fmt: str) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    _write_bytes(path, buffer.getvalue())


def _csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


_WATER_SPECIES = [("001.Black_footed_Albatross", "Black_Footed_Albatross"), ("059.California_Gull", "California_Gull"),
                  ("100.Brown_Pelican", "Brown_Pelican")]
_LAND_SPECIES = [("017.Cardinal", "Cardinal"), ("029.American_Crow", "American_Crow"),
                 ("095.Baltimore_Oriole", "Baltimore_Oriole")]
_PLACES = {0: ["/b/bamboo_forest/00000{:03d}.jpg", "/f/forest/broadleaf/00001{:03d}.jpg"],
           1: ["/o/ocean/00002{:03d}.jpg", "/l/lake/natural/00000{:03d}.jpg"]}


def write_waterbirds(root: str | Path, counts: dict[str, list[int]] | None = None, size: int = 48, seed: int = 0,
                     segmentations: bool = True) -> Path:
    """``root/waterbird_complete95_forest2water2/`` (+ ``root/segmentations``); ``counts[split][group]`` images.

    Default counts: train 6/2/2/6, val 2/2/2/2, test 3/3/3/3 (groups landbird/land, landbird/water,
    waterbird/land, waterbird/water). Returns the dataset folder.
    """
    counts = counts or {"train": [6, 2, 2, 6], "val": [2, 2, 2, 2], "test": [3, 3, 3, 3]}
    root = Path(root)
    base = root / "waterbird_complete95_forest2water2"
    rng = np.random.default_rng(seed)
    rows, img_id = [], 0
    for split_index, split in enumerate(("train", "val", "test")):
        for group, n in enumerate(counts[split]):
            y, place = group // 2, group % 2
            for _ in range(n):
                img_id += 1
                folder, stem = (_WATER_SPECIES if y else _LAND_SPECIES)[img_id % 3]
                name = f"{folder}/{stem}_{img_id:04d}_{1000 + img_id}.jpg"
                image, mask = object_image(rng, size, y, place)
                _save(base / name, image, "JPEG")
                if segmentations:  # CUB masks are soft grey levels; 255 on the bird, a faint halo round it
                    soft = np.where(mask, 255, 0).astype(np.uint8)
                    _save(root / "segmentations" / Path(name).with_suffix(".png"), Image.fromarray(soft, "L"), "PNG")
                place_file = _PLACES[place][img_id % 2].format(img_id % 1000)
                rows.append([img_id, name, y, split_index, place, place_file])
    _write_text(base / "metadata.csv",
                      _csv_text(["img_id", "img_filename", "y", "split", "place", "place_filename"], rows))
    return base


def write_spawrious(root: str | Path, total: int = 8, size: int = 32, seed: int = 0,
                    locations: tuple[str, ...] | None = None, folders: tuple[str, ...] = ("0", "1"),
                    masks: bool = False) -> Path:
    """``root/spawrious224/<folder>/<location>/<class>/<location>_<class>_<i>.png``, ``total`` per folder.

    Writes every (folder, location, class) unless ``locations`` narrows it. With ``masks`` also writes
    ``root/spawrious_masks/<same relative path>.png``. Returns ``root/spawrious224``.
    """
    from torch_backswap.datasets.spawrious import CLASSES, LOCATIONS

    root = Path(root)
    base = root / "spawrious224"
    rng = np.random.default_rng(seed)
    for folder in folders:
        for loc in locations or LOCATIONS:
            for c, cls in enumerate(CLASSES):
                for i in range(total):
                    rel = Path(folder) / loc / cls / f"{loc}_{cls}_{i}.png"
                    image, mask = object_image(rng, size, c, LOCATIONS.index(loc))
                    _save(base / rel, image, "PNG")
                    if masks:
                        _save(root / "spawrious_masks" / rel, Image.fromarray(mask.astype(np.uint8) * 255, "L"), "PNG")
    return base


def write_imagenet9(root: str | Path, per_class: int = 2, size: int = 32, seed: int = 0,
                    variants: tuple[str, ...] | None = None, split: str = "val") -> Path:
    """``root/bg_challenge/<variant>/val/<class>/<stem>.JPEG`` and ``fg_mask/val/<class>/<stem>.npy``.

    ``mixed_same`` pastes each object on a background of its own class, ``mixed_rand`` on a random other
    class's (same file names in every variant, as the pairing in the official folders). Returns
    ``root/bg_challenge``.
    """
    from torch_backswap.datasets.imagenet9 import IN9_CLASSES, VARIANTS

    root = Path(root)
    base = root / "bg_challenge"
    rng = np.random.default_rng(seed)
    for c, cls in enumerate(IN9_CLASSES):
        for i in range(per_class):
            stem = f"n{1440764 + c * 1000:08d}_{10026 + i}"
            other = int((c + 1 + rng.integers(0, 8)) % 9)
            state = rng.bit_generator.state
            for variant in variants or VARIANTS:
                rng.bit_generator.state = state  # the same object in every variant
                bg = {"mixed_rand": other, "only_bg_t": other}.get(variant, c)
                image, mask = object_image(rng, size, c, bg)
                arr = np.asarray(image).copy()
                if variant in ("no_fg", "only_bg_b", "only_bg_t"):
                    arr[mask] = 0 if variant != "only_bg_t" else arr[~mask].mean(0).astype(np.uint8)
                elif variant == "only_fg":
                    arr[~mask] = 0
                _save(base / variant / split / cls / f"{stem}.JPEG", Image.fromarray(arr), "JPEG")
            buffer = io.BytesIO()
            np.save(buffer, mask.astype(np.uint8), allow_pickle=False)
            _write_bytes(base / "fg_mask" / split / cls / f"{stem}.npy", buffer.getvalue())
    return base


def write_metashift(root: str | Path, per_folder: int = 6, size: int = 32, seed: int = 0,
                    absolute_paths: bool = True) -> Path:
    """SubpopBench's ``root/metashift/`` (images + ``metadata_metashift.csv``). Returns that folder.

    As SubpopBench writes it, ``filename`` holds the path of the machine that generated the CSV
    (``absolute_paths``): here a foreign prefix ``/data/subpop/metashift/...`` the loader must re-root.
    """
    root = Path(root)
    base = root / "metashift"
    rng = np.random.default_rng(seed)
    dirs = {"train/cat/cat(indoor)": (1, 1), "train/dog/dog(outdoor)": (0, 0),
            "test/cat/cat(outdoor)": (1, 0), "test/dog/dog(indoor)": (0, 1)}
    rows = []
    for rel, (y, a) in dirs.items():
        for i in range(per_folder):
            name = f"MetaShift-Cat-Dog-indoor-outdoor/{rel}/{2300000 + len(rows)}.jpg"
            image, _ = object_image(rng, size, y, a + 6)
            _save(base / name, image, "JPEG")
            rows.append([f"/data/subpop/metashift/{name}" if absolute_paths else name, y, a])
    order = rng.permutation(len(rows))
    splits = np.zeros(len(rows), dtype=int)
    splits[order[: len(rows) // 4]] = 2
    splits[order[len(rows) // 4: len(rows) // 4 + max(1, len(rows) // 10)]] = 1
    _write_text(base / "metadata_metashift.csv",
                      _csv_text(["filename", "y", "a", "split"], [[*r, int(s)] for r, s in zip(rows, splits)]))
    return base
