"""The main job: the whole AutoBackSwap pipeline on the embedded StampBirds benchmark, offline.

``backswap demo`` (or :func:`run_demo`) does, in a few minutes on two CPU cores:

1. **labels** — derives 16×16 patch labels for ~300 training images from the true alpha (standing in for
   a person with ``backswap label``);
2. **fine-tune** — fine-tunes the bundled segmenter on them; scores it on the held-out test split;
3. **bank** — segments every training image, inpaints the loose hole, keeps a background bank;
4. **train** — trains the same small CNN with plain ERM and with :class:`BackgroundSwap` (class-balanced
   backgrounds) at 100 % train correlation (no training image breaks the correlation);
5. **report** — prints the group-accuracy table and writes ``results.json`` and ``swap_grid.png``.

The pieces are plain functions so the benchmarks (``benchmarks/robustness.py``) reuse them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from torch_backswap.bank import BackgroundBank
from torch_backswap.classifier import build_classifier, evaluate_groups, train_classifier
from torch_backswap.datasets import StampBirds
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.hub import DEFAULT_SEGMENTER
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.metrics import cell_balanced_accuracy, mask_iou
from torch_backswap.segmenter import (
    LOOSE_THRESHOLD,
    TIGHT_THRESHOLD,
    PatchSegmenter,
    logits_to_probability,
    probability_to_mask,
)
from torch_backswap.transform import BackgroundSwap

__all__ = [
    "StampBirdsSplits",
    "load_splits",
    "simulated_patch_labels",
    "segmenter_quality",
    "predict_masks",
    "build_bank",
    "train_and_evaluate",
    "save_swap_grid",
    "format_group_table",
    "run_demo",
]

GROUP_NAMES = {0: "landbird/land", 1: "landbird/water", 2: "waterbird/land", 3: "waterbird/water"}


@dataclass
class StampBirdsSplits:
    train: StampBirds
    val: StampBirds
    test: StampBirds


def load_splits(
    image_size: int = 64,
    correlation: float = 1.0,
    n_train: Optional[int] = None,
    n_val: Optional[int] = None,
    n_test: Optional[int] = None,
    seed: int = 0,
    background_holdout: str = "photo",
) -> StampBirdsSplits:
    """The three StampBirds splits with one set of options (train correlation; val/test group-balanced)."""
    kw = dict(image_size=image_size, correlation=correlation, seed=seed, background_holdout=background_holdout)
    return StampBirdsSplits(
        train=StampBirds(split="train", n=n_train, **kw),
        val=StampBirds(split="val", n=n_val, **kw),
        test=StampBirds(split="test", n=n_test, **kw),
    )


def simulated_patch_labels(
    alpha: Tensor, count: int, grid_size: int = 16, threshold: float = 0.25, seed: int = 0
) -> tuple[Tensor, PatchLabels]:
    """Patch labels for ``count`` randomly chosen images, derived from the true alpha (a simulated person).

    Returns the chosen indices ``(count,)`` and their :class:`PatchLabels` (ids are the indices as text).
    Images whose grid comes out empty are skipped, as in the paper.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(alpha), generator=generator)
    grids = dense_to_patch_grid(alpha[order], grid_size, threshold=threshold)
    keep = order[grids.flatten(1).any(1)][:count]
    grids = dense_to_patch_grid(alpha[keep], grid_size, threshold=threshold)
    return keep, PatchLabels(ids=[str(int(i)) for i in keep], grids=grids)


@torch.no_grad()
def segmenter_quality(segmenter: PatchSegmenter, images: Tensor, alpha: Tensor, batch_size: int = 256) -> dict:
    """Patch balanced accuracy (cells ≥ 0.25 covered) and tight-mask IoU against the true alpha > 0.5."""
    segmenter.eval()
    grid = segmenter.grid_size
    logits = torch.cat([segmenter(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    prob = logits_to_probability(logits, tuple(images.shape[-2:]))  # the same as predict_probability, run once
    tight = probability_to_mask(prob, TIGHT_THRESHOLD) > 0.5
    return {
        "patch_balanced_accuracy": cell_balanced_accuracy(logits, dense_to_patch_grid(alpha, grid, 0.25)),
        "tight_mask_iou": mask_iou(tight, alpha > 0.5),
    }


@torch.no_grad()
def predict_masks(
    segmenter: PatchSegmenter,
    images: Tensor,
    batch_size: int = 256,
    feather: float = 0.1,
    tight_threshold: float = TIGHT_THRESHOLD,
    loose_threshold: float = LOOSE_THRESHOLD,
) -> tuple[Tensor, Tensor, Tensor]:
    """Foreground probability, tight alpha (p > ``tight_threshold``, soft over ``feather``) and loose hole
    (p > ``loose_threshold``); the defaults are the paper's 0.67 and 0.1.

    All ``(N, 1, H, W)``; the feather matches :class:`BackgroundSwap`'s default.

    Probability and tight alpha are float32 in [0, 1]; the loose hole is bool.
    """
    segmenter.eval()
    prob = torch.cat(
        [segmenter.predict_probability(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    tight = probability_to_mask(prob, tight_threshold, feather=feather)
    return prob, tight, probability_to_mask(prob, loose_threshold) > 0.5


def build_bank(
    train: StampBirds, holes: Tensor, inpainter: str = "pyramid", progress: bool = True
) -> BackgroundBank:
    """Inpaint every training image's hole into a background bank labelled with the image's class."""
    return BackgroundBank.build(
        train.images, train.labels, holes=holes, inpainter=inpainter, classes=train.classes, progress=progress
    )


def train_and_evaluate(
    splits: StampBirdsSplits,
    *,
    swap: Optional[BackgroundSwap] = None,
    epochs: int = 8,
    seed: int = 0,
    classifier: str = "small_cnn",
    randaugment: bool = False,
    group_dro: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> tuple[torch.nn.Module, dict]:
    """Train a classifier (optionally with a background swap on every batch) and score it on test.

    ``swap`` must hold the training images' foreground alphas as its mask cache (``masks=``): each batch is
    swapped with ``swap.swap_batch(images, labels, indices=batch_indices)``.
    Returns the model and ``{"average", "worst_group", "groups", "history", "seconds"}``.
    """
    torch.manual_seed(seed)
    model = build_classifier(classifier, num_classes=len(splits.train.classes))
    batch_fn = None
    if swap is not None:
        if swap.masks is None:
            raise ValueError("train_and_evaluate needs a swap with the training masks cached (BackgroundSwap(bank, masks=...))")

        def batch_fn(images: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            return swap.swap_batch(images, labels, indices=idx)

    start = time.perf_counter()
    history = train_classifier(
        model, splits.train.images, splits.train.labels, epochs=epochs, batch_fn=batch_fn,
        randaugment=randaugment, groups=splits.train.groups, group_dro=group_dro,
        val=(splits.val.images, splits.val.labels, splits.val.groups), select_on="average",
        seed=seed, progress=progress, desc=desc,
    )
    result = evaluate_groups(model, splits.test.images, splits.test.labels, splits.test.groups)
    result.update(history=history, seconds=time.perf_counter() - start)
    return model, result


def save_swap_grid(
    path: str | os.PathLike,
    images: Tensor,
    masks: Tensor,
    backgrounds: Tensor,
    swapped: Tensor,
    scale: int = 2,
) -> Path:
    """PNG grid, one row per sample: original | mask | inpainted background | swapped sample (all uint8)."""
    import torch.nn.functional as F
    from PIL import Image

    rows = []
    mask_rgb = (masks.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    for cols in zip(images, mask_rgb, backgrounds, swapped):
        rows.append(torch.cat([c.to(torch.uint8).cpu() for c in cols], dim=2))
    grid = torch.cat(rows, dim=1)
    if scale != 1:
        grid = F.interpolate(grid[None].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def format_group_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per method, columns average / worst-group / every group."""
    head = "| method | average | worst group | " + " | ".join(GROUP_NAMES.values()) + " |"
    lines = [head, "|" + "---|" * (3 + len(GROUP_NAMES))]
    for name, r in results.items():
        groups = " | ".join(f"{r['groups'].get(g, float('nan')):.3f}" for g in GROUP_NAMES)
        lines.append(f"| {name} | {r['average']:.3f} | {r['worst_group']:.3f} | {groups} |")
    return "\n".join(lines)


def run_demo(
    out_dir: str | os.PathLike = "backswap-demo",
    *,
    fast: bool = False,
    seed: int = 0,
    image_size: int = 64,
    correlation: float = 1.0,
    n_labeled: int = 300,
    segmenter: str = DEFAULT_SEGMENTER,
    finetune_epochs: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """Run the whole pipeline (see the module docstring) and write ``results.json`` and ``swap_grid.png``.

    ``fast=True`` shrinks everything (fewer images, epochs) to about a minute; its figures only show the
    pipeline runs end to end, not how good it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sizes = dict(n_train=400, n_val=100, n_test=200) if fast else {}
    finetune_epochs = finetune_epochs or (1 if fast else 12)
    epochs = epochs or (1 if fast else 8)
    n_labeled = min(n_labeled, 60) if fast else n_labeled

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)

    say(f"StampBirds {image_size}px, train correlation {correlation}")
    splits = load_splits(image_size=image_size, correlation=correlation, seed=seed, **sizes)
    say(f"splits: train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}")

    labeled_idx, labels = simulated_patch_labels(splits.train.alpha, n_labeled, seed=seed)
    say(f"1/5 patch labels for {len(labels)} training images (from the true alpha)")

    base = PatchSegmenter.from_pretrained(segmenter)
    before = segmenter_quality(base, splits.test.images, splits.test.alpha)
    seg, seg_history = finetune_segmenter(
        base, splits.train.images[labeled_idx], labels, epochs=finetune_epochs, seed=seed, progress=progress,
        output_dir=out / "segmenter",
    )
    after = segmenter_quality(seg, splits.test.images, splits.test.alpha)
    say(f"2/5 segmenter fine-tuned: test patch balanced accuracy {before['patch_balanced_accuracy']:.3f} -> "
        f"{after['patch_balanced_accuracy']:.3f}, tight-mask IoU {before['tight_mask_iou']:.3f} -> "
        f"{after['tight_mask_iou']:.3f}")

    _, tight, loose = predict_masks(seg, splits.train.images)
    bank = build_bank(splits.train, loose, progress=progress)
    bank.save(out / "bank.safetensors")
    say(f"3/5 background bank: {len(bank)} backgrounds ({bank.build_stats['images_per_s']:.0f} images/s)")

    swap = BackgroundSwap(bank, masks=tight, seed=seed)
    results = {}
    _, results["erm"] = train_and_evaluate(splits, epochs=epochs, seed=seed, progress=progress, desc="ERM")
    say(f"4/5 ERM: worst-group {results['erm']['worst_group']:.3f}")
    _, results["backswap"] = train_and_evaluate(
        splits, swap=swap, epochs=epochs, seed=seed, progress=progress, desc="BackSwap"
    )
    say(f"4/5 BackSwap: worst-group {results['backswap']['worst_group']:.3f}")

    n_show = 8
    show = torch.arange(n_show) * (len(splits.train) // n_show)
    grid_swap = BackgroundSwap(bank, seed=seed + 1)
    swapped = grid_swap.swap_batch(splits.train.images[show], splits.train.labels[show], masks=tight[show])
    holes_filled = bank.backgrounds[show]
    save_swap_grid(out / "swap_grid.png", splits.train.images[show], tight[show], holes_filled, swapped)

    table = format_group_table(results)
    summary = {
        "settings": dict(image_size=image_size, correlation=correlation, seed=seed, fast=fast,
                         n_labeled=len(labels), finetune_epochs=finetune_epochs, epochs=epochs,
                         segmenter=segmenter, n_train=len(splits.train), n_test=len(splits.test)),
        "segmenter": {"before_finetune": before, "after_finetune": after,
                      "finetune_history": seg_history},
        "bank": {"size": len(bank), **bank.build_stats},
        "classifiers": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()},
        "seconds": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    say("5/5 test accuracy (group-balanced test set, held-out background photos):")
    if progress:
        print(table)
        print(f"wrote {out / 'results.json'} and {out / 'swap_grid.png'}")
    return summary
