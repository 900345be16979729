"""Build the StampBirds asset pack from installed Debian packages.

The pack is what :class:`torch_backswap.datasets.StampBirds` composites from: photographic bird cut-outs
with real alpha (``tuxpaint-stamps-default``) and water / land photos (``tuxpaint-data``,
``mate-backgrounds``, ``plasma-workspace-wallpapers``). All sources are GPL-2 (or GPL-2+) licensed; the
pack carries the licence texts and a NOTICE naming every source file.

Usage (after ``apt-get install tuxpaint-stamps-default tuxpaint-data mate-backgrounds
plasma-workspace-wallpapers``)::

    python -m torch_backswap.datasets.build_stampbirds_pack --out torch_backswap/datasets/assets/stampbirds

The curation decisions (which photos were dropped after looking at them, the photo split and the bird
split) are fixed in this file so that rebuilding gives the same pack; they are written to
``manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from torch_backswap.datasets.stamp_composite import load_stamp_rgba

__all__ = ["build_pack", "main", "PACK_VERSION"]

PACK_VERSION = 1

STAMP_DIR = "/usr/share/tuxpaint/stamps/animals/birds"
MAX_STAMP_SIDE = 192
PHOTO_SHORT_SIDE = 256
JPEG_QUALITY = 90

PACKAGES = ["tuxpaint-stamps-default", "tuxpaint-data", "mate-backgrounds", "plasma-workspace-wallpapers"]

# Bird lists as curated in shared/data/stampbirds.json ("crowned_crane" excluded there as ambiguous).
WATERBIRDS = ["drake", "duck", "gander", "heron_greatblue", "heron_greatblue_flying", "little-penguin",
              "magellanic_penguin", "penguin", "pelican", "pink_flamingo", "seagull", "silver-gull"]
LANDBIRDS = ["adelaide-rosella", "albino_peahen", "blackbird", "chicken_profile", "crow", "cuckoo",
             "guineafowl", "helmeted_guineafowl", "hen", "lark", "magpie", "nandou", "ostrich", "owl",
             "peacock", "pigeon", "quetzal", "rainbow-lorikeet", "rooster", "tucan", "turkey", "vulture"]

# Held-out birds for ``holdout_birds=True``: whole families are held out so that no near-duplicate
# (e.g. "seagull" / "silver-gull") sits on the other side of the split. About a third of each class.
TEST_BIRDS = {
    "seagull": "gulls", "silver-gull": "gulls", "pelican": "pelicans", "pink_flamingo": "flamingos",
    "adelaide-rosella": "parrots", "rainbow-lorikeet": "parrots", "nandou": "ratites", "ostrich": "ratites",
    "owl": "owls", "pigeon": "pigeons", "tucan": "toucans",
}
BIRD_NOTES = {
    "albino_peahen": "the cut-out includes a tuft of grass under the bird (a small land cue inside the alpha)",
}

# Photos: (name in the pack, place, source). Source is a file path, or "plasma:NAME" for a
# plasma-workspace-wallpapers folder (its largest image is taken).
PHOTOS = [
    ("ocean_splash", "water", "/usr/share/tuxpaint/templates/ocean_splash.jpg"),
    ("ocean_waves", "water", "/usr/share/tuxpaint/templates/ocean_waves.jpg"),
    ("jellyfish", "water", "/usr/share/tuxpaint/templates/jellyfish.jpg"),
    ("Aqua", "water", "/usr/share/backgrounds/mate/nature/Aqua.jpg"),
    ("RainDrops", "water", "/usr/share/backgrounds/mate/nature/RainDrops.jpg"),
    ("BytheWater", "water", "plasma:BytheWater"),
    ("ColdRipple", "water", "plasma:ColdRipple"),
    ("DarkestHour", "water", "plasma:DarkestHour"),
    ("EveningGlow", "water", "plasma:EveningGlow"),
    ("Volna", "water", "plasma:Volna"),
    ("summer_1am", "water", "plasma:summer_1am"),
    ("corn_maze", "land", "/usr/share/tuxpaint/templates/corn_maze.jpg"),
    ("redwoods_above", "land", "/usr/share/tuxpaint/templates/redwoods_above.jpg"),
    ("trees_above", "land", "/usr/share/tuxpaint/templates/trees_above.jpg"),
    ("trees_at_dusk", "land", "/usr/share/tuxpaint/templates/trees_at_dusk.jpg"),
    ("mossy_log", "land", "/usr/share/tuxpaint/templates/mossy_log.jpg"),
    ("mossy_bark", "land", "/usr/share/tuxpaint/templates/mossy_bark.jpg"),
    ("burnt_bark", "land", "/usr/share/tuxpaint/templates/burnt_bark.jpg"),
    ("rocks", "land", "/usr/share/tuxpaint/templates/rocks.jpg"),
    ("cliff", "land", "/usr/share/tuxpaint/templates/cliff.jpg"),
    ("sheep", "land", "/usr/share/tuxpaint/templates/sheep.jpg"),
    ("sun_behind_leaves", "land", "/usr/share/tuxpaint/templates/sun_behind_leaves.jpg"),
    ("mudstone", "land", "/usr/share/tuxpaint/templates/mudstone.jpg"),
    ("GreenMeadow", "land", "/usr/share/backgrounds/mate/nature/GreenMeadow.jpg"),
    ("Garden", "land", "/usr/share/backgrounds/mate/nature/Garden.jpg"),
    ("Wood", "land", "/usr/share/backgrounds/mate/nature/Wood.jpg"),
    ("Dune", "land", "/usr/share/backgrounds/mate/nature/Dune.jpg"),
    ("FallenLeaf", "land", "plasma:FallenLeaf"),
    ("OneStandsOut", "land", "plasma:OneStandsOut"),
    ("Path", "land", "plasma:Path"),
]

# Decided by eye from a contact sheet of every photo.
DROPPED_PHOTOS = {
    "RainDrops": "green leaves and grass blades with a few droplets: reads as vegetation (land), not water",
    "BytheWater": "a wooden deck fills the lower two thirds; most crops show only planks",
    "ColdRipple": "a wooden pier fills the lower half and the water is indistinguishable from the grey fog",
    "EveningGlow": "rowing boats on a shingle beach under a sunset sky; the water is only a thin strip",
    "Volna": "stylised low-poly render, half sand beach and half sea: mixed water/land",
    "Wood": "featureless pale wooden board close-up: not a landscape, reads neither as water nor land",
    "Dune": "dune grass with the sea across the top third: mixed water/land",
}

# Photo split, chosen by hand so that every held-out photo has a related photo in train (lake/lake,
# ocean/ocean, meadow/meadow, leaves/leaves) while being a different photograph.
PHOTO_SPLIT = {
    # water: 4 / 1 / 1
    "ocean_splash": "train", "Aqua": "train", "jellyfish": "train", "DarkestHour": "train",
    "ocean_waves": "val",
    "summer_1am": "test",
    # land: 11 / 3 / 3
    "redwoods_above": "train", "trees_above": "train", "trees_at_dusk": "train", "mossy_bark": "train",
    "burnt_bark": "train", "rocks": "train", "mudstone": "train", "GreenMeadow": "train",
    "Garden": "train", "OneStandsOut": "train", "Path": "train",
    "mossy_log": "val", "cliff": "val", "corn_maze": "val",
    "sheep": "test", "sun_behind_leaves": "test", "FallenLeaf": "test",
}

SOURCE_PACKAGE = {
    "/usr/share/tuxpaint/templates/": "tuxpaint-data",
    "/usr/share/backgrounds/mate/": "mate-backgrounds",
    "plasma:": "plasma-workspace-wallpapers",
    "/usr/share/tuxpaint/stamps/": "tuxpaint-stamps-default",
}


def _package_of(source: str) -> str:
    for prefix, pkg in SOURCE_PACKAGE.items():
        if source.startswith(prefix):
            return pkg
    raise ValueError(f"source must lie in one of the curated packages, got {source!r}")


def _resolve_photo(source: str) -> Path:
    """Return the file for a photo source; for ``plasma:NAME`` the largest image (by pixel count)."""
    if not source.startswith("plasma:"):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"photo {source!r} not found; install the Debian packages {PACKAGES}")
        return path
    folder = Path("/usr/share/wallpapers") / source.split(":", 1)[1] / "contents" / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"wallpaper folder {str(folder)!r} not found; install plasma-workspace-wallpapers")
    best, best_area = None, -1
    # Debian ships most sizes as symlinks to one file: resolve them so the recorded source is the real file.
    for f in sorted({p.resolve() for p in folder.iterdir()}):
        if f.suffix.lower() not in (".jpg", ".jpeg", ".png") or not f.is_file():
            continue
        with Image.open(f) as im:
            area = im.size[0] * im.size[1]
        if area > best_area:
            best, best_area = f, area
    if best is None:
        raise FileNotFoundError(f"no image in {str(folder)!r}")
    return best


def _plasma_metadata(source: str) -> dict:
    meta = Path("/usr/share/wallpapers") / source.split(":", 1)[1] / "metadata.json"
    if not meta.is_file():
        return {}
    plugin = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {})
    authors = plugin.get("Authors") or [{}]
    return {"author": authors[0].get("Name"), "email": authors[0].get("Email"),
            "upstream_license": plugin.get("License")}


def _trim_dark_borders(img: Image.Image, threshold: int = 12) -> Image.Image:
    """Crop letterbox bars: rows/columns at the edges whose mean brightness is below ``threshold``."""
    arr = np.asarray(img.convert("L"), dtype=np.float32)
    rows = np.nonzero(arr.mean(axis=1) >= threshold)[0]
    cols = np.nonzero(arr.mean(axis=0) >= threshold)[0]
    if rows.size == 0 or cols.size == 0:
        return img
    return img.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def _downscale_short_side(img: Image.Image, short: int) -> Image.Image:
    w, h = img.size
    scale = short / min(w, h)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.LANCZOS)


def _copyright_statement(pkg: str) -> str:
    path = Path("/usr/share/doc") / pkg / "copyright"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found; install {pkg}")
    return path.read_text(encoding="utf-8", errors="replace")


def _extract_paragraphs(text: str, keys: list[str]) -> str:
    """Debian copyright paragraphs whose first line contains one of ``keys`` (plus their License texts)."""
    paragraphs = text.split("\n\n")
    keep = [p.strip("\n") for p in paragraphs if any(k in p.split("\n", 1)[0] for k in keys)]
    return "\n\n".join(keep)


def _notice(manifest: dict) -> str:
    lines = [
        "StampBirds asset pack for torch-backswap",
        "=======================================",
        "",
        "The images in this folder (birds/*.png, photos/*.jpg) are derived from files of the Debian",
        "packages listed below: bird stamps were trimmed to their alpha bounding box and downscaled;",
        f"photos were downscaled to a short side of {PHOTO_SHORT_SIDE} px and re-encoded as JPEG. They are",
        "distributed under the GNU General Public License version 2 (as published by the Free Software",
        "Foundation), or at your option any later version where the source allows it; the full text of",
        "the GPL-2 is in the file COPYING next to this NOTICE. This folder's licence is independent of the",
        "licence of the torch-backswap code (Apache-2.0); the images are data, not part of the program.",
        "",
        "Source packages (Debian versions used to build the pack):",
    ]
    for pkg, version in manifest["source_packages"].items():
        lines.append(f"  - {pkg} {version}")
    lines += ["", "Files and their sources", "-----------------------", ""]
    for name, info in manifest["birds"].items():
        lines.append(f"birds/{name}.png  <-  {info['source']}  ({info['package']})")
    for name, info in manifest["photos"].items():
        if info.get("dropped"):
            continue
        extra = ""
        if info.get("author"):
            extra = f"; author {info['author']}"
            if info.get("upstream_license"):
                extra += f", upstream metadata.json lists licence {info['upstream_license']}"
        lines.append(f"{info['file']}  <-  {info['source']}  ({info['package']}{extra})")
    lines += [
        "",
        "Note on plasma-workspace-wallpapers: Debian's copyright file licenses the package under",
        "GPL-2+ (reproduced below); the wallpapers' own upstream metadata.json names LGPLv3. We",
        "redistribute under GPL-2+ as stated by Debian; the LGPL-3 and GPL-3 texts are included as",
        "COPYING.LGPL-3 and COPYING.GPL-3 for completeness.",
        "",
        "Licence statements from /usr/share/doc/<package>/copyright",
        "-----------------------------------------------------------",
    ]
    keys_by_pkg = {
        "tuxpaint-stamps-default": ["Upstream-Name", "Files: *", "License: GPL-2"],
        "tuxpaint-data": ["Upstream-Name", "Files: *", "License: GPL-2+"],
        # Garden.jpg is listed in the Aqua.jpg paragraph.
        "mate-backgrounds": ["Upstream-Name", "Files: nature/Aqua.jpg", "Files: nature/GreenMeadow.jpg",
                             "License: GPL-2+"],
        "plasma-workspace-wallpapers": ["Upstream-Name", "Files: *", "License: GPL-2+"],
    }
    for pkg in PACKAGES:
        text = _copyright_statement(pkg)
        lines += ["", f"### {pkg}", "", _extract_paragraphs(text, keys_by_pkg[pkg])]
        if pkg == "tuxpaint-data":
            lines += ["", "(Tux Paint AUTHORS.txt credits the templates used here — burnt bark, cliff, corn",
                      "maze, jellyfish, mossy bark, mossy log, mudstone, ocean splash, ocean waves, redwoods",
                      "above, rocks, sheep, sun behind leaves, trees above, trees at dusk — to",
                      "Bill Kendrick <bill@newbreedsoftware.com>.)"]
    return "\n".join(lines) + "\n"


def _dpkg_version(pkg: str) -> str:
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return "unknown"
    current = None
    for line in status.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Package: "):
            current = line.split(": ", 1)[1].strip()
        elif line.startswith("Version: ") and current == pkg:
            return line.split(": ", 1)[1].strip()
    return "unknown"


def build_pack(out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Build the pack into ``out`` and return the manifest (also written to ``out/manifest.json``)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out {str(out)!r} is not empty; pass overwrite=True (--overwrite) to replace it")
    for sub in ("birds", "photos"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True, exist_ok=True)

    birds: dict[str, dict] = {}
    for label_name, names in (("waterbird", WATERBIRDS), ("landbird", LANDBIRDS)):
        for name in names:
            src = Path(STAMP_DIR) / f"{name}.png"
            rgba = load_stamp_rgba(src, max_side=MAX_STAMP_SIDE)
            Image.fromarray(rgba, "RGBA").save(out / "birds" / f"{name}.png", optimize=True)
            entry = {
                "file": f"birds/{name}.png", "class": label_name, "label": int(label_name == "waterbird"),
                "split": "test" if name in TEST_BIRDS else "train",
                "size": [int(rgba.shape[1]), int(rgba.shape[0])],
                "source": str(src), "package": "tuxpaint-stamps-default",
            }
            if name in TEST_BIRDS:
                entry["family"] = TEST_BIRDS[name]
            if name in BIRD_NOTES:
                entry["note"] = BIRD_NOTES[name]
            birds[name] = entry

    photos: dict[str, dict] = {}
    for name, place, source in PHOTOS:
        path = _resolve_photo(source)
        entry = {"place": place, "label": int(place == "water"), "source": str(path),
                 "package": _package_of(source)}
        if source.startswith("plasma:"):
            entry.update({k: v for k, v in _plasma_metadata(source).items() if v})
        if name in DROPPED_PHOTOS:
            entry.update({"dropped": True, "reason": DROPPED_PHOTOS[name]})
            photos[name] = entry
            continue
        with Image.open(path) as im:
            img = _trim_dark_borders(im.convert("RGB"))
        img = _downscale_short_side(img, PHOTO_SHORT_SIDE)
        img.save(out / "photos" / f"{name}.jpg", quality=JPEG_QUALITY, optimize=True)
        entry.update({"file": f"photos/{name}.jpg", "split": PHOTO_SPLIT[name], "size": list(img.size)})
        photos[name] = entry

    missing = [n for n, e in photos.items() if not e.get("dropped") and n not in PHOTO_SPLIT]
    if missing:
        raise RuntimeError(f"photos without a split: {missing}")
    for place in ("water", "land"):
        for split in ("train", "val", "test"):
            if not any(e.get("split") == split and e["place"] == place for e in photos.values()):
                raise RuntimeError(f"no {place} photo in split {split!r}")

    manifest = {
        "name": "StampBirds",
        "version": PACK_VERSION,
        "classes": ["landbird", "waterbird"],
        "places": ["land", "water"],
        "conventions": "label 1 = waterbird, place 1 = water, group = 2*label + place",
        "bird_split_note": "holdout_birds: 'train' birds are used for the train split, 'test' birds for val and "
                           "test; whole bird families are held out together.",
        "photo_split_note": "by photo: a val/test background crop never comes from a train photo; chosen by hand so "
                            "each held-out photo has a related (but different) train photo.",
        "source_packages": {pkg: _dpkg_version(pkg) for pkg in PACKAGES},
        "max_stamp_side": MAX_STAMP_SIDE,
        "photo_short_side": PHOTO_SHORT_SIDE,
        "jpeg_quality": JPEG_QUALITY,
        "splits": {
            "photos": {split: {place: [k for k, v in photos.items() if v.get("split") == split and v["place"] == place]
                               for place in ("water", "land")} for split in ("train", "val", "test")},
            "birds": {split: {c: [k for k, v in birds.items() if v["split"] == split and v["class"] == c]
                              for c in ("waterbird", "landbird")} for split in ("train", "test")},
            "dropped_photos": {k: v["reason"] for k, v in photos.items() if v.get("dropped")},
        },
        "birds": birds,
        "photos": photos,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "NOTICE").write_text(_notice(manifest), encoding="utf-8")
    shutil.copyfile("/usr/share/common-licenses/GPL-2", out / "COPYING")
    shutil.copyfile("/usr/share/common-licenses/LGPL-3", out / "COPYING.LGPL-3")
    shutil.copyfile("/usr/share/common-licenses/GPL-3", out / "COPYING.GPL-3")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder, e.g. torch_backswap/datasets/assets/stampbirds")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing pack")
    args = parser.parse_args(argv)
    manifest = build_pack(args.out, overwrite=args.overwrite)
    total = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    kept = [n for n, e in manifest["photos"].items() if not e.get("dropped")]
    print(f"wrote {args.out}: {len(manifest['birds'])} birds, {len(kept)} photos "
          f"({len(manifest['photos']) - len(kept)} dropped), {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
