"""Train the bundled default segmenter ``weights/patchseg-tiny-s16`` from scratch on CPU.

Training data: Tux Paint stamps that are **not birds** (every stamp folder except ``animals/birds``;
birds are reserved for the StampBirds benchmark) pasted on background photos that are **not** in the
StampBirds validation or test splits (the pack's train photos plus Debian photos the benchmark does not
use). Labels are the stamps' exact alpha, turned into 16×16 patch grids (cell covered ≥ 0.25).
Held-out evaluation: fresh non-bird composites on photos never seen in training, and the StampBirds test
split (unseen birds on held-out photos), both scored with patch balanced accuracy and tight-mask IoU.

Needs the Debian packages tuxpaint-stamps-default, tuxpaint-data, mate-backgrounds,
plasma-workspace-wallpapers. Run from the repository root::

    python weights/train_default_segmenter.py --out weights/patchseg-tiny-s16

It writes config.json, model.safetensors, history.json and the model card README.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from torch_backswap.datasets import StampBirds, composite_stamps, load_stamp_rgba
from torch_backswap.datasets.stampbirds import default_root
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.metrics import cell_balanced_accuracy, mask_iou
from torch_backswap.segmenter import LOOSE_THRESHOLD, TIGHT_THRESHOLD, PatchSegmenter, probability_to_mask

STAMP_ROOT = Path("/usr/share/tuxpaint/stamps")
# Photos in the Debian packages that the StampBirds benchmark does not use at all.
EXTRA_TRAIN_PHOTOS = [
    "/usr/share/tuxpaint/templates/lighthouse.jpg",
    "/usr/share/tuxpaint/templates/spiders_web.jpg",
    "/usr/share/tuxpaint/templates/sun_behind_clouds.jpg",
    "/usr/share/tuxpaint/templates/wool_mill_machine.jpg",
    "/usr/share/backgrounds/mate/nature/Blinds.jpg",
    "/usr/share/backgrounds/mate/nature/FreshFlower.jpg",
    "/usr/share/backgrounds/mate/nature/LadyBird.jpg",
    "/usr/share/backgrounds/mate/nature/Storm.jpg",
    "/usr/share/backgrounds/mate/nature/RainDrops.jpg",
    "/usr/share/backgrounds/mate/nature/Wood.jpg",
    "wallpaper:Altai", "wallpaper:Autumn", "wallpaper:Canopee", "wallpaper:Cascade", "wallpaper:ColdRipple",
    "wallpaper:EveningGlow", "wallpaper:BytheWater", "wallpaper:Kite", "wallpaper:PastelHills",
    "wallpaper:SafeLanding", "wallpaper:Volna",
]
# Photos never used in training: the held-out composites are pasted on these.
HELDOUT_PHOTOS = [
    "/usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "/usr/share/backgrounds/mate/nature/TwoWings.jpg",
    "/usr/share/backgrounds/mate/nature/Dune.jpg",
    "wallpaper:Shell", "wallpaper:IceCold", "wallpaper:Flow",
]


def _open_photo(spec: str, short_side: int = 256) -> Image.Image:
    if spec.startswith("wallpaper:"):
        folder = Path("/usr/share/wallpapers") / spec.split(":", 1)[1] / "contents" / "images"
        path = max((p for p in folder.iterdir() if p.is_file() or p.is_symlink()), key=lambda p: p.stat().st_size)
    else:
        path = Path(spec)
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)


def _non_bird_stamps(max_side: int, rng: random.Random, limit: int | None) -> list:
    paths = sorted(p for p in STAMP_ROOT.rglob("*.png") if "animals/birds" not in p.as_posix())
    stamps = []
    for path in paths:
        rgba = load_stamp_rgba(path, max_side=max_side)
        alpha = rgba[..., 3] > 127
        # Skip stamps that are a full rectangle (no real cut-out) or almost empty.
        if alpha.mean() > 0.95 or alpha.sum() < 64:
            continue
        stamps.append(rgba)
    rng.shuffle(stamps)
    return stamps[:limit] if limit else stamps


def _composites(stamps, photos, n: int, seed: int, sizes=(64, 128), out_size: int = 128):
    """Half the composites are made at 64 px and upsampled to 128 px, as StampBirds images are inside the model."""
    images, alphas = [], []
    per = n // len(sizes)
    for k, size in enumerate(sizes):
        img, alpha = composite_stamps(stamps, photos, per, image_size=size, seed=seed + k)
        if size != out_size:
            img = F.interpolate(img.float(), size=(out_size, out_size), mode="bilinear", align_corners=False)
            img = img.round().clamp(0, 255).to(torch.uint8)
            alpha = F.interpolate(alpha, size=(out_size, out_size), mode="bilinear", align_corners=False)
        images.append(img)
        alphas.append(alpha)
    return torch.cat(images), torch.cat(alphas)


@torch.no_grad()
def evaluate(model: PatchSegmenter, images: torch.Tensor, alpha: torch.Tensor, grid: int) -> dict:
    """Patch balanced accuracy (grid labels from alpha, cell ≥ 0.25) and tight / loose mask IoU vs alpha > 0.5."""
    model.eval()
    logits = torch.cat([model(images[i : i + 256]) for i in range(0, len(images), 256)])
    target = dense_to_patch_grid(alpha, grid, threshold=0.25)
    prob = torch.cat([model.predict_probability(images[i : i + 256]) for i in range(0, len(images), 256)])
    truth = alpha > 0.5
    return {
        "patch_balanced_accuracy": cell_balanced_accuracy(logits, target),
        "tight_mask_iou": mask_iou(probability_to_mask(prob, TIGHT_THRESHOLD) > 0.5, truth),
        "loose_mask_iou": mask_iou(probability_to_mask(prob, LOOSE_THRESHOLD) > 0.5, truth),
        "loose_mask_recall": float((probability_to_mask(prob, LOOSE_THRESHOLD) > 0.5)[truth].float().mean()),
    }


MODEL_CARD = """---
library_name: torch-backswap
license: gpl-2.0
tags: [torch-backswap, image-segmentation, background-swap]
---

# patchseg-tiny-s16 — the default patch segmenter of torch-backswap

A `PatchSegmenter` (backbone `tiny`, a small CNN, {params:,} parameters; input resized to {input_size}²;
output 16×16 foreground logits). It separates a pasted object from its background and is meant to be
**fine-tuned** on a few hundred patch labels of your own data (`backswap finetune`).

## Training data
Trained **from scratch on CPU** (no ImageNet) on {n_train} synthetic composites: {n_stamps} Tux Paint stamps
that are **not birds** (Debian `tuxpaint-stamps-default`; birds are reserved for the StampBirds benchmark)
pasted at random scale/position/flip on {n_photos} background photos that are not in the StampBirds
validation or test splits (`tuxpaint-data`, `mate-backgrounds`, `plasma-workspace-wallpapers`). Half the
composites were made at 64 px and upsampled, half at 128 px. Labels: the stamps' exact alpha, as 16×16 cell
grids (cell covered ≥ 0.25). Source images are GPL-2 (see the Debian copyright files), hence the licence tag.

## Recipe
`torch_backswap.finetune.finetune_segmenter(None, ...)`: per-cell BCE with target smoothing 0.1,
flips/rot90/rot270 + whole-cell shifts applied to image and grid together, colour jitter and random
grayscale, AdamW lr {lr}, {epochs} epochs, batch {batch_size}, {val_pct}% held out for model selection on
cell balanced accuracy, seed {seed}. Wall time {minutes:.1f} min on a shared 2-core CPU.
Script: `python weights/train_default_segmenter.py --out weights/patchseg-tiny-s16`.

## Measured (held out)
| evaluation set | patch balanced accuracy | tight-mask IoU (p>0.67) | loose-mask IoU (p>0.1) | loose-mask recall |
|---|---|---|---|---|
| non-bird composites on unseen photos (n={n_heldout}) | {h[patch_balanced_accuracy]:.3f} | {h[tight_mask_iou]:.3f} | {h[loose_mask_iou]:.3f} | {h[loose_mask_recall]:.3f} |
| StampBirds test, 64 px (unseen birds, held-out photos, n={n_birds}) | {b[patch_balanced_accuracy]:.3f} | {b[tight_mask_iou]:.3f} | {b[loose_mask_iou]:.3f} | {b[loose_mask_recall]:.3f} |

Mask IoU is against the true alpha > 0.5 at image resolution, with the masks upsampled bilinearly from the
16×16 probabilities. The StampBirds row is zero-shot (no bird was seen in training); fine-tuning on ~300
patch-labelled StampBirds images raises it (see `benchmarks/RESULTS.md`).

## Use
```python
from torch_backswap import PatchSegmenter
seg = PatchSegmenter.from_pretrained("torch-backswap/patchseg-tiny-s16")  # bundled copy works offline
logits = seg(images_uint8)  # (B, 16, 16)
```
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="weights/patchseg-tiny-s16")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    start = time.perf_counter()

    stamps = _non_bird_stamps(max_side=192, rng=rng, limit=None)
    n_heldout_stamps = max(40, len(stamps) // 10)
    heldout_stamps, train_stamps = stamps[:n_heldout_stamps], stamps[n_heldout_stamps:]
    root = default_root()
    manifest = json.loads((root / "manifest.json").read_text())
    train_photo_names = [n for place in manifest["splits"]["photos"]["train"].values() for n in place]
    pack_photos = [Image.open(p).convert("RGB") for p in sorted((root / "photos").glob("*.jpg"))
                   if p.stem in train_photo_names]
    photos = pack_photos + [_open_photo(s) for s in EXTRA_TRAIN_PHOTOS]
    heldout_photos = [_open_photo(s) for s in HELDOUT_PHOTOS]
    print(f"{len(train_stamps)} train stamps, {len(heldout_stamps)} held-out stamps, "
          f"{len(photos)} train photos, {len(heldout_photos)} held-out photos")

    images, alpha = _composites(train_stamps, photos, args.n_train, seed=args.seed)
    grids = dense_to_patch_grid(alpha, 16, threshold=0.25)
    labels = PatchLabels(ids=[f"composite_{i:05d}" for i in range(len(images))], grids=grids)
    model, history = finetune_segmenter(
        None, images, labels, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        val_fraction=0.1, seed=args.seed, output_dir=args.out,
    )
    minutes = (time.perf_counter() - start) / 60

    h_images, h_alpha = _composites(heldout_stamps, heldout_photos, 1000, seed=args.seed + 100)
    heldout = evaluate(model, h_images, h_alpha, 16)
    birds = StampBirds(split="test", image_size=64)
    bird_metrics = evaluate(model, birds.images, birds.alpha, 16)
    print("held-out composites:", heldout)
    print("StampBirds test (zero-shot):", bird_metrics)

    out = Path(args.out)
    model.save_pretrained(out)
    (out / "README.md").write_text(MODEL_CARD.format(
        params=sum(p.numel() for p in model.parameters()), input_size=model.input_size,
        n_train=len(images), n_stamps=len(train_stamps), n_photos=len(photos), lr=args.lr, epochs=len(history),
        batch_size=args.batch_size, val_pct=10, seed=args.seed, minutes=minutes, n_heldout=len(h_images),
        h=heldout, n_birds=len(birds), b=bird_metrics,
    ))
    (out / "eval.json").write_text(json.dumps({"heldout_composites": heldout, "stampbirds_test_zero_shot": bird_metrics,
                                               "minutes": minutes}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
