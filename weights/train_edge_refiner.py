"""Train the bundled edge refiner ``weights/edgerefine-tiny`` on CPU (about 25 minutes on one thread).

Training data: 4000 composites at 64 px of Tux Paint stamps that are **not birds** on the photos the bundled
segmenter was trained on (never a StampBirds validation or test photo), with their exact alpha — the same
sources as ``weights/train_default_segmenter.py``. The refiner's input is the bundled segmenter's
flip-averaged probability on each composite, made weaker at every step (per-image logit scale 0.5–1.2,
per-cell noise with σ up to 1.5, a global bias of ±1.5), so the refiner learns to correct a segmenter's
mistakes instead of trusting it; target: the exact alpha (per-pixel BCE). AdamW (weight decay 1e-4), one-cycle
lr up to 3e-3, batch 64, 6 epochs, horizontal flips, seed 0; the last epoch is kept (no selection).

Held-out check: 1000 composites of the stamps on photos neither model was trained on, tight-mask IoU at
p > 0.5 of the refined probability against the guided filter's (the refiner's starting point) and the
bilinear probability's. Run from the repository root::

    python weights/train_edge_refiner.py --out weights/edgerefine-tiny

It writes config.json, model.safetensors, history.json and the model card README.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import train_default_segmenter as segmenter_recipe
from PIL import Image

from torch_backswap._io import atomic_write_text
from torch_backswap.datasets import composite_stamps
from torch_backswap.datasets.stampbirds import default_root
from torch_backswap.edge_refiner import EdgeRefiner
from torch_backswap.metrics import mask_iou
from torch_backswap.refine import flip_average_logits, refine_probability
from torch_backswap.segmenter import PatchSegmenter, logits_to_probability

MODEL_CARD = """---
library_name: torch-backswap
license: gpl-2.0
tags: [torch-backswap, image-segmentation, matting]
---

# edgerefine-tiny — the learned edge refiner of torch-backswap

An `EdgeRefiner` ({params:,} parameters): reads an image, the patch segmenter's upsampled foreground
probability and its guided-filter refinement, and predicts a correction of the refined logit, so the cut-out
follows the object's outline instead of the 16×16 cells. It runs at {work_size} px (4 px per cell).

## Training data
{n_train} synthetic composites at 64 px: Tux Paint stamps that are **not birds** (Debian
`tuxpaint-stamps-default`) on the {n_photos} photos the bundled segmenter `patchseg-tiny-s16` was trained on (no
StampBirds validation or test photo), with their exact alpha as the target. The input probability is
`patchseg-tiny-s16`'s (flip-averaged), made weaker at every step: per-image logit scale 0.5–1.2, per-cell noise
σ ≤ 1.5, global bias ±1.5. No patch labels, no birds. Source images are GPL-2, hence the licence tag.

## Recipe
Per-pixel BCE against the alpha; AdamW (weight decay 1e-4), one-cycle lr to {lr}, batch {batch_size},
{epochs} epochs, horizontal flips, seed {seed}; the last epoch is kept. Wall time {minutes:.1f} min on a shared
CPU, one thread. Script: `python weights/train_edge_refiner.py --out weights/edgerefine-tiny`.

## Measured (held out: {n_heldout} composites on photos neither model saw)
| probability | tight-mask IoU (p > 0.5) |
|---|---|
| bilinear (the segmenter's cells) | {heldout[bilinear]:.3f} |
| guided filter (radius 6, eps 1e-4) | {heldout[guided]:.3f} |
| **edge refiner** | **{heldout[refined]:.3f}** |

On StampBirds (unseen birds; the segmenter fine-tuned on 300 patch labels) see `benchmarks/RESULTS.md`,
section *mask_quality*.

## Use
```python
from torch_backswap import BackgroundSwap, CutOut, EdgeRefiner
swap = BackgroundSwap(bank, CutOut(segmenter, EdgeRefiner.from_pretrained()))   # flip-averaged, p > 0.5
```
"""


def training_data(seed: int, n: int, segmenter: PatchSegmenter) -> tuple:
    """Composites (uint8), their alpha, the segmenter's flip-averaged cell logits, the number of photos and the
    stamps (the held-out check pastes them on other photos)."""
    stamps = segmenter_recipe._non_bird_stamps(max_side=192, rng=random.Random(seed), limit=None)
    root = default_root()
    manifest = json.loads((root / "manifest.json").read_text())
    names = [name for place in manifest["splits"]["photos"]["train"].values() for name in place]
    photos = [Image.open(p).convert("RGB") for p in sorted((root / "photos").glob("*.jpg")) if p.stem in names]
    photos += [segmenter_recipe._open_photo(s) for s in segmenter_recipe.EXTRA_TRAIN_PHOTOS]
    images, alpha = composite_stamps(stamps, photos, n, image_size=64, seed=123)
    with torch.no_grad():
        logits = torch.cat([flip_average_logits(segmenter, images[i:i + 256]) for i in range(0, n, 256)])
    return images, alpha, logits, len(photos), stamps


def weaker(logits: torch.Tensor) -> torch.Tensor:
    """The segmenter's cell logits, rescaled, noisier and biased per image (global RNG)."""
    b = len(logits)
    scale = torch.empty(b, 1, 1).uniform_(0.5, 1.2)
    noise = torch.randn_like(logits) * torch.empty(b, 1, 1).uniform_(0, 1.5)
    return logits * scale + noise + torch.empty(b, 1, 1).uniform_(-1.5, 1.5)


def train(model: EdgeRefiner, images, alpha, logits, *, epochs: int, batch_size: int, lr: float) -> list[dict]:
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    n = len(images)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(n / batch_size))
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        tic, perm, total = time.perf_counter(), torch.randperm(n), 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x, a, lg = images[idx].float() / 255, alpha[idx], weaker(logits[idx].clone())
            if torch.rand(()) < 0.5:
                x, a, lg = x.flip(-1), a.flip(-1), lg.flip(-1)
            loss = F.binary_cross_entropy_with_logits(model(x, logits_to_probability(lg, (64, 64))), a)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch, "train_loss": total / n, "seconds": time.perf_counter() - tic})
        print(history[-1], flush=True)
    model.eval()
    return history


@torch.no_grad()
def heldout_iou(model: EdgeRefiner, segmenter: PatchSegmenter, stamps, seed: int) -> dict:
    photos = [segmenter_recipe._open_photo(s) for s in segmenter_recipe.HELDOUT_PHOTOS]
    images, alpha = composite_stamps(stamps, photos, 1000, image_size=64, seed=seed + 100)
    prob = logits_to_probability(flip_average_logits(segmenter, images), (64, 64))
    truth = alpha > 0.5
    guided = refine_probability(prob, images, method="guided", radius=model.guided_radius, eps=model.guided_eps)
    return {"bilinear": mask_iou(prob > 0.5, truth), "guided": mask_iou(guided > 0.5, truth),
            "refined": mask_iou(model.predict_probability(images, prob) > 0.5, truth)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="weights/edgerefine-tiny")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the one-cycle schedule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    segmenter = PatchSegmenter.from_pretrained("torch-backswap/patchseg-tiny-s16").eval()
    images, alpha, logits, n_photos, stamps = training_data(args.seed, args.n_train, segmenter)
    torch.manual_seed(args.seed)
    model = EdgeRefiner()
    history = train(model, images, alpha, logits, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    heldout = heldout_iou(model, segmenter, stamps, args.seed)
    minutes = (time.perf_counter() - start) / 60
    print("held-out composites, IoU at p > 0.5:", heldout)
    out = Path(args.out)
    model.save_pretrained(out)
    atomic_write_text(out / "README.md", MODEL_CARD.format(
        params=sum(p.numel() for p in model.parameters()), work_size=model.work_size, n_train=len(images),
        n_photos=n_photos, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
        minutes=minutes, n_heldout=1000, heldout=heldout))
    atomic_write_text(out / "history.json", json.dumps({"history": history, "heldout_iou": heldout,
                                                        "minutes": minutes, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
