"""Build the StampBirds asset pack from installed Debian packages.

The pack is what :class:`torch_backswap.datasets.StampBirds` composites from: photographic bird cut-outs
with real alpha (``tuxpaint-stamps-default``) and water / land photos (``tuxpaint-data``,
``mate-backgrounds``, ``plasma-workspace-wallpapers``). All sources are GPL-2 (or GPL-2+) licensed; the
pack carries the licence texts and a NOTICE naming every source file.

A maintainer's tool, not part of the installed package. Usage, from the repository root with the package
installed (``pip install -e .``), after ``apt-get install tuxpaint-stamps-default tuxpaint-data mate-backgrounds
plasma-workspace-wallpapers``::

    python tools/build_stampbirds_pack.py --version 1 --out torch_backswap/datasets/assets/stampbirds

The curation decisions (which photos were dropped after looking at them, the photo split and the bird
split) are fixed in this file so that rebuilding gives the same pack; they are written to
``manifest.json``.

Versions (``--version``): **1** is the original pack (folder ``assets/stampbirds``, 1 water photo in val and
in test); **2** (folder ``assets/stampbirds_v2``, the default of :class:`StampBirds`) adds held-out photos
from ``lomiri-wallpapers-16.04`` / ``lomiri-wallpapers-20.04`` so that val and test have 3 water and 4-5
land photos each (see ``V2_CANDIDATES`` for every candidate photo looked at and why it was kept or
dropped). Version 2 keeps every version-1 train photo at the same position with the same bytes, so the
train split is identical in both versions. Rebuild version 2 with (after also installing
``lomiri-wallpapers-16.04 lomiri-wallpapers-20.04``)::

    python tools/build_stampbirds_pack.py --version 2 --out torch_backswap/datasets/assets/stampbirds_v2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from torch_backswap._io import atomic_write_text, write_with
from torch_backswap.datasets.stamp_composite import load_stamp_rgba

__all__ = ["PACK_FOLDERS", "PACK_VERSION", "build_pack", "main"]

PACK_VERSION = 2
"""The latest pack version (the default of :class:`~torch_backswap.datasets.StampBirds`)."""
PACK_FOLDERS = {1: "stampbirds", 2: "stampbirds_v2"}
"""Folder of each bundled pack version under ``torch_backswap/datasets/assets``."""

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

# ---- Version 2 -------------------------------------------------------------------------------------------
# Version 1 has one water photo in val and one in test, so one photograph decides a group. Version 2 adds the
# photos below. Val/test photos must not be ones the bundled segmenter was trained on
# (weights/train_default_segmenter.py: the v1 train photos plus EXTRA_TRAIN_PHOTOS — lighthouse,
# spiders_web, sun_behind_clouds, wool_mill_machine, Blinds, FreshFlower, LadyBird, Storm, RainDrops, Wood,
# Altai, Autumn, Canopee, Cascade, ColdRipple, EveningGlow, BytheWater, Kite, PastelHills, SafeLanding,
# Volna). Every raster image of the candidate packages was looked at (contact sheets); only three water
# photographs are not in that list (ocean_waves, summer_1am, Infinite-Sea), so each is cut into a left and
# a right half: the left half goes to val and the right half to test (disjoint pixels; val and test then
# share photographs, but no val/test crop shares a pixel with a train photo or with the other split).
# Regions are (left, top, right, bottom) fractions of the photo after trimming dark borders.
BACKGROUNDS = "/usr/share/backgrounds/"
V2_REGIONS = {
    # v1 entries kept at their v1 position (so train photo ids do not move), now cut in half:
    "ocean_waves": ("ocean_waves_left", (0.0, 0.0, 0.5, 1.0)),
    "summer_1am": ("summer_1am_right", (0.5, 0.0, 1.0, 1.0)),
}
V2_EXTRA_PHOTOS = [
    # (name, place, source, region or None)
    ("ocean_waves_right", "water", "/usr/share/tuxpaint/templates/ocean_waves.jpg", (0.5, 0.0, 1.0, 1.0)),
    ("summer_1am_left", "water", "plasma:summer_1am", (0.0, 0.0, 0.5, 1.0)),
    ("infinite_sea_left", "water", BACKGROUNDS + "Infinite-Sea_by_Aury88.jpg", (0.0, 0.72, 0.5, 1.0)),
    ("infinite_sea_right", "water", BACKGROUNDS + "Infinite-Sea_by_Aury88.jpg", (0.5, 0.72, 1.0, 1.0)),
    ("picosdeeuropa", "land", BACKGROUNDS + "picosdeeuropa_by_Aitzol_Berasategi.jpg", (0.0, 0.25, 1.0, 1.0)),
    ("aitzgorri", "land", BACKGROUNDS + "aitzgorri_by_Aitzol_Berasategi.jpg", (0.0, 0.3, 1.0, 1.0)),
    ("seeding", "land", BACKGROUNDS + "seeding_by_Clements_Engelhardt.jpg", None),
]
V2_PHOTO_SPLIT = {
    **{k: v for k, v in PHOTO_SPLIT.items() if k not in V2_REGIONS},
    # water: 4 / 3 / 3 (val and test: the two halves of the same three photographs)
    "ocean_waves_left": "val", "summer_1am_left": "val", "infinite_sea_left": "val",
    "ocean_waves_right": "test", "summer_1am_right": "test", "infinite_sea_right": "test",
    # land: 11 / 4 / 5
    "picosdeeuropa": "val",
    "aitzgorri": "test", "seeding": "test",
}
V2_PHOTOGRAPH = {  # halves -> the photograph they are cut from
    "ocean_waves_left": "ocean_waves", "ocean_waves_right": "ocean_waves",
    "summer_1am_left": "summer_1am", "summer_1am_right": "summer_1am",
    "infinite_sea_left": "Infinite-Sea_by_Aury88", "infinite_sea_right": "Infinite-Sea_by_Aury88",
}
V2_PHOTO_NOTES = {
    "infinite_sea_left": "digital artwork (a night sky over a calm sea); only the sea band below the horizon is used",
    "infinite_sea_right": "digital artwork (a night sky over a calm sea); only the sea band below the horizon is used",
    "picosdeeuropa": "mountain meadow with a path and rock faces; the sky (top quarter) is cut off",
    "aitzgorri": "autumn forest over a green meadow; the sky and far mountains (top 30 %) are cut off",
    "seeding": "dandelion clocks in a meadow, back-lit",
}
# Default split sizes of a version-2 pack (written to its manifest): a larger, group-balanced test split.
V2_DEFAULT_N = {"train": 3000, "val": 600, "test": 2400}
V2_LICENCES = {  # per-file licences of the lomiri photos (from their Debian copyright file)
    "Infinite-Sea_by_Aury88.jpg": "CC-BY-SA-3.0 (Aury88, 2019)",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg": "CC-BY-4.0 (Aitzol Berasategi, 2018)",
    "aitzgorri_by_Aitzol_Berasategi.jpg": "CC-BY-4.0 (Aitzol Berasategi, 2018)",
    "seeding_by_Clements_Engelhardt.jpg": "CC0-1.0 (Clemens Engelhardt, 2018)",
}
V2_SOURCE_PACKAGES = {"/usr/share/backgrounds/Infinite-Sea": "lomiri-wallpapers-20.04",
                      BACKGROUNDS: "lomiri-wallpapers-16.04"}

# Every candidate looked at for version 2 and not kept (verdict: not a photo / neither / mixed / water or
# land but trained on by the bundled segmenter / contains an animal). Sources not listed here are either kept
# above, in version 1, or are sizes of the same artwork.
_ABSTRACT = "not a photo: abstract or vector artwork"
V2_CANDIDATES = {
    "gnome-backgrounds": {f"/usr/share/backgrounds/gnome/{n}-{v}.webp": _ABSTRACT + (" (flat colour)" if n == "vnc" else "")
                          for n in ("adwaita", "grid", "licorice", "pixels", "symbolic", "truchet", "vnc", "wood")
                          for v in ("d", "l")},
    "ukui-wallpapers": {BACKGROUNDS + n: _ABSTRACT for n in (
        "2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg", "fluent-color.png",
        "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png", "string.jpg", "the-mouse.jpg")},
    "sway-backgrounds": {"/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_*.png": _ABSTRACT + " (logo on a gradient)"},
    "desktop-base": {"/usr/share/desktop-base/*-theme (wallpaper SVGs; grub/login PNG previews looked at)":
                     _ABSTRACT + " (Debian release themes)"},
    "lomiri-wallpapers": {BACKGROUNDS + "lomiri-default-background.png": _ABSTRACT,
                          BACKGROUNDS + "warty-final-ubuntu.png": _ABSTRACT},
    "lomiri-wallpapers-16.04": {
        BACKGROUNDS + "Bridge_by_Sander_Klootwijk.jpg": "mixed: bridge cables across a sky over a tidal flat (sand and "
                                                   "thin water channels in the bottom eighth)",
        BACKGROUNDS + "Dragonfly_by_Bolly.jpg": "neither: foliage against a sky with a large dragonfly in the middle "
                                           "(a winged animal that could read as a bird)",
        BACKGROUNDS + "Picture_0B_by_freespace.jpg": "neither: a fig on a plate (still life)",
        BACKGROUNDS + "Picture_1A_by_freespace.jpg": "neither: paint brushes (still life)",
        BACKGROUNDS + "Wine_by_Jakkub_Mede.jpg": "neither: an interior",
        BACKGROUNDS + "analogpattern_by_Peter_Nerlich.jpg": "not a photo: texture pattern",
        BACKGROUNDS + "free_by_Peter_Nerlich.jpg": "neither: a toy bird under lamps (and a bird)",
        BACKGROUNDS + "friends_by_Aitzol_Berasategi.jpg": "neither: two dogs at a window",
        BACKGROUNDS + "greentock_by_Peter_Nerlich.jpg": "neither: a clock face",
        BACKGROUNDS + "life_by_Aitzol_Berasategi.jpg": "mixed: a forest stream; rocks and trees fill most of the frame, "
                                                  "even a crop of the stream is half rock",
        BACKGROUNDS + "sunset_by_Aitzol_Berasategi.jpg": "neither: mostly sky with a sun flare over a hill top",
        BACKGROUNDS + "umang_by_Abhishek_Mudgal.jpg": _ABSTRACT,
    },
    "lomiri-wallpapers-20.04": {
        BACKGROUNDS + "Fossa_by_Jasper_Roks.jpg": _ABSTRACT,
        BACKGROUNDS + "Kleiber_by_Lukas_Baubkus.jpg": "contains a bird (a nuthatch on a tree trunk): a bird in the background",
        BACKGROUNDS + "Painting-Colors_by__herobrine7gamer.jpg": _ABSTRACT,
    },
    "mate-backgrounds": {
        **{f"/usr/share/backgrounds/mate/abstract/{n}": _ABSTRACT for n in (
            "Arc-Colors-Transparent-Wallpaper.png", "Elephants.jpg", "Flow.png", "Gulp.png", "Silk.png",
            "Spring.png", "Waves.png")},
        **{f"/usr/share/backgrounds/mate/desktop/{n}": _ABSTRACT for n in (
            "Float-into-MATE.png", "GreenTraditional.jpg", "MATE-Stripes-Dark.png", "MATE-Stripes-Light.png",
            "Stripes.png", "Ubuntu-Mate-Cold-no-logo.png", "Ubuntu-Mate-Dark-no-logo.png",
            "Ubuntu-Mate-Radioactive-no-logo.png", "Ubuntu-Mate-Warm-no-logo.png")},
        "/usr/share/backgrounds/mate/nature/YellowFlower.jpg": "neither: flower macro (no place)",
        "/usr/share/backgrounds/mate/nature/TwoWings.jpg": "neither: dandelion seeds macro on a blurred background",
        "/usr/share/backgrounds/mate/nature/Dune.jpg": "mixed: dune grass with the sea across the top third (as in v1)",
        **{f"/usr/share/backgrounds/mate/nature/{n}": "trained on by the bundled segmenter (not usable in val/test); "
                                                      "not a water/land scene either"
           for n in ("Blinds.jpg", "FreshFlower.jpg", "LadyBird.jpg", "Storm.jpg")},
    },
    "plasma-workspace-wallpapers": {
        **{f"plasma:{n}": _ABSTRACT for n in (
            "Cluster", "ColorfulCups", "Elarun", "Flow", "FlyingKonqui", "Grey", "Honeywave", "IceCold", "Kay",
            "Kokkini", "MilkyWay", "Opal", "Patak", "Shell")},
        **{f"plasma:{n}": "trained on by the bundled segmenter (not usable in val/test); a render or not water/land"
           for n in ("Altai", "Autumn", "Canopee", "Cascade", "Kite", "PastelHills", "SafeLanding")},
        **{f"plasma:{n}": "dropped in v1 (see DROPPED_PHOTOS) and trained on by the bundled segmenter"
           for n in ("BytheWater", "ColdRipple", "EveningGlow", "Volna")},
    },
}

SOURCE_PACKAGE = {
    "/usr/share/tuxpaint/templates/": "tuxpaint-data",
    "/usr/share/backgrounds/mate/": "mate-backgrounds",
    "plasma:": "plasma-workspace-wallpapers",
    "/usr/share/tuxpaint/stamps/": "tuxpaint-stamps-default",
}


def _package_of(source: str) -> str:
    for prefix, pkg in [*SOURCE_PACKAGE.items(), *V2_SOURCE_PACKAGES.items()]:
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


def _crop_region(img: Image.Image, region: tuple[float, float, float, float] | None) -> Image.Image:
    """Crop ``(left, top, right, bottom)`` fractions of ``img`` (``None``: the whole image)."""
    if region is None:
        return img
    w, h = img.size
    left, top, right, bottom = region
    return img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))


def _photo_list(version: int) -> tuple[list[tuple[str, str, str, tuple | None]], dict[str, str]]:
    """``[(name, place, source, region)]`` in manifest order and the photo split of a pack version."""
    if version == 1:
        return [(n, p, s, None) for n, p, s in PHOTOS], PHOTO_SPLIT
    photos = []
    for name, place, source in PHOTOS:
        name, region = V2_REGIONS.get(name, (name, None))
        photos.append((name, place, source, region))
    return photos + list(V2_EXTRA_PHOTOS), V2_PHOTO_SPLIT


def _packages(version: int) -> list[str]:
    return PACKAGES + (["lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"] if version >= 2 else [])


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
    paragraphs = [p.strip("\n") for p in text.split("\n\n")]
    keep = [p for p in paragraphs if any(k in p.split("\n", 1)[0] for k in keys)]
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
    if manifest["version"] >= 2:
        lines[10:10] = [
            "",
            "Exception (pack version 2): the photos taken from lomiri-wallpapers-16.04 / -20.04 keep their own",
            "Creative Commons licences, named per file below (CC-BY-4.0, CC-BY-SA-3.0, CC0-1.0; the licence",
            "statements are at the end of this NOTICE). Some photos are a region of the original (cropped, or",
            "cut into a left and a right half); that is the modification made.",
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
        if info.get("licence"):
            extra += f"; licence {info['licence']}"
        if info.get("region"):
            extra += f"; region {info['region']} (left, top, right, bottom fractions)"
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
        # Both lomiri packages ship the same copyright file: take each kept file's paragraph once.
        "lomiri-wallpapers-16.04": ["Upstream-Name", "Files: 16.04/aitzgorri", "Files: 16.04/picosdeeuropa",
                                    "Files: 16.04/seeding", "License: CC-BY-4.0", "License: CC0-1.0"],
        "lomiri-wallpapers-20.04": ["Files: 20.04/Infinite-Sea", "License: CC-BY-SA-3.0"],
    }
    for pkg in manifest["source_packages"]:
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


def build_pack(out: str | os.PathLike, *, overwrite: bool = False, version: int = PACK_VERSION) -> dict:
    """Build pack ``version`` (1 or 2) into ``out`` and return the manifest (also written to ``out/manifest.json``)."""
    if version not in PACK_FOLDERS:
        raise ValueError(f"version must be one of {sorted(PACK_FOLDERS)}, got {version!r}")
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
            write_with(out / "birds" / f"{name}.png",
                       lambda p, rgba=rgba: Image.fromarray(rgba, "RGBA").save(p, format="PNG", optimize=True))
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

    photo_list, photo_split = _photo_list(version)
    photos: dict[str, dict] = {}
    for name, place, source, region in photo_list:
        path = _resolve_photo(source)
        entry = {"place": place, "label": int(place == "water"), "source": str(path),
                 "package": _package_of(source)}
        if source.startswith("plasma:"):
            entry.update({k: v for k, v in _plasma_metadata(source).items() if v})
        if path.name in V2_LICENCES:
            entry["licence"] = V2_LICENCES[path.name]
        if name in DROPPED_PHOTOS:
            entry.update({"dropped": True, "reason": DROPPED_PHOTOS[name]})
            photos[name] = entry
            continue
        with Image.open(path) as im:
            img = _trim_dark_borders(im.convert("RGB"))
        img = _downscale_short_side(_crop_region(img, region), PHOTO_SHORT_SIDE)
        write_with(out / "photos" / f"{name}.jpg",
                   lambda p, img=img: img.save(p, format="JPEG", quality=JPEG_QUALITY, optimize=True))
        entry.update({"file": f"photos/{name}.jpg", "split": photo_split[name], "size": list(img.size)})
        if region is not None:
            entry["region"] = list(region)
        if name in V2_PHOTOGRAPH:
            entry["photograph"] = V2_PHOTOGRAPH[name]
        if name in V2_PHOTO_NOTES:
            entry["note"] = V2_PHOTO_NOTES[name]
        photos[name] = entry

    missing = [n for n, e in photos.items() if not e.get("dropped") and n not in photo_split]
    if missing:
        raise RuntimeError(f"photos without a split: {missing}")
    minimum = 1 if version == 1 else 3
    for place in ("water", "land"):
        for split in ("train", "val", "test"):
            count = sum(e.get("split") == split and e["place"] == place for e in photos.values())
            if count < minimum:
                raise RuntimeError(f"{count} {place} photos in split {split!r}; version {version} needs >= {minimum}")

    manifest = {
        "name": "StampBirds",
        "version": version,
        "classes": ["landbird", "waterbird"],
        "places": ["land", "water"],
        "conventions": "label 1 = waterbird, place 1 = water, group = 2*label + place",
        "bird_split_note": "holdout_birds: 'train' birds are used for the train split, 'test' birds for val and "
                           "test; whole bird families are held out together.",
        "photo_split_note": "by photo: a val/test background crop never comes from a train photo; chosen by hand so "
                            "each held-out photo has a related (but different) train photo.",
        "source_packages": {pkg: _dpkg_version(pkg) for pkg in _packages(version)},
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
    if version >= 2:
        manifest["photo_split_note"] += (
            " Version 2: only three water photographs of the candidate packages were neither in version 1's "
            "train split nor trained on by the bundled segmenter, so each is cut into a left half (val) and a "
            "right half (test): val and test share photographs but not pixels.")
        manifest["default_n"] = dict(V2_DEFAULT_N)
        manifest["heldout_photo_sampling"] = "balanced"
        manifest["heldout_photo_sampling_note"] = (
            "val/test: within each place every photo of the pool gets the same number of samples (+-1), so no "
            "photo is over-represented by chance; train draws photos uniformly at random (as in version 1).")
        manifest["candidates_reviewed"] = V2_CANDIDATES
        manifest["segmenter_training_photos_excluded_from_val_test"] = (
            "weights/train_default_segmenter.py trains on the train photos plus EXTRA_TRAIN_PHOTOS; none of those "
            "is in this pack's val or test split.")
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "NOTICE", _notice(manifest))
    shutil.copyfile("/usr/share/common-licenses/GPL-2", out / "COPYING")
    shutil.copyfile("/usr/share/common-licenses/LGPL-3", out / "COPYING.LGPL-3")
    shutil.copyfile("/usr/share/common-licenses/GPL-3", out / "COPYING.GPL-3")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder, e.g. torch_backswap/datasets/assets/stampbirds")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing pack")
    parser.add_argument("--version", type=int, default=PACK_VERSION, choices=sorted(PACK_FOLDERS),
                        help="pack version (1: the original pack; 2: more held-out photos)")
    args = parser.parse_args(argv)
    manifest = build_pack(args.out, overwrite=args.overwrite, version=args.version)
    total = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    kept = [n for n, e in manifest["photos"].items() if not e.get("dropped")]
    print(f"wrote {args.out}: {len(manifest['birds'])} birds, {len(kept)} photos "
          f"({len(manifest['photos']) - len(kept)} dropped), {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
