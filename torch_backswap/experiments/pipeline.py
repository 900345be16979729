"""The StampBirds pipeline steps shared by ``backswap demo`` and ``benchmarks/`` (experiment harness).

Not part of the library API (see :mod:`torch_backswap.experiments`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from torch_backswap._io import write_with
from torch_backswap.bank import BackgroundBank
from torch_backswap.build import build_bank as _build_bank
from torch_backswap.classifiers import build_classifier, evaluate_groups, train_classifier
from torch_backswap.datasets import StampBirds
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
    "segment_images",
    "build_bank",
    "train_and_evaluate",
    "save_swap_grid",
    "format_group_table",
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
    grid = segmenter.grid_size
    logits = torch.cat([segmenter.predict_logits(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    prob = logits_to_probability(logits, tuple(images.shape[-2:]))  # the same as predict_probability, run once
    tight = probability_to_mask(prob, TIGHT_THRESHOLD) > 0.5
    return {
        "patch_balanced_accuracy": cell_balanced_accuracy(logits, dense_to_patch_grid(alpha, grid, 0.25)),
        "tight_mask_iou": mask_iou(tight, alpha > 0.5),
    }


@torch.no_grad()
def segment_images(
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
    prob = torch.cat(
        [segmenter.predict_probability(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    tight = probability_to_mask(prob, tight_threshold, feather=feather)
    return prob, tight, probability_to_mask(prob, loose_threshold) > 0.5


def build_bank(
    train: StampBirds, holes: Tensor, inpainter: str = "pyramid", progress: bool = True
) -> BackgroundBank:
    """Inpaint every training image's hole into a background bank labelled with the image's class."""
    return _build_bank(
        train.images, train.labels, holes=holes, inpainter=inpainter, classes=train.classes, progress=progress
    )


def train_and_evaluate(
    splits: StampBirdsSplits,
    *,
    swap: Optional[BackgroundSwap] = None,
    alphas: Optional[Tensor] = None,
    epochs: int = 8,
    seed: int = 0,
    classifier: str = "small_cnn",
    randaugment: bool = False,
    group_dro: bool = False,
    on_epoch_end: Optional[Callable[[torch.nn.Module], None]] = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[torch.nn.Module, dict]:
    """Train a classifier (optionally with a background swap on every batch) and score it on test.

    With ``swap``, each training batch is swapped with ``swap.swap_batch(images, labels, alphas=alphas[batch])``
    (``alphas``: the training images' object alphas ``(N, 1, H, W)``, e.g. from :func:`segment_images`).
    ``on_epoch_end`` is passed to :func:`train_classifier` (called with the model after every epoch).
    Returns the model and ``{"average", "worst_group", "groups", "history", "seconds"}``.
    """
    torch.manual_seed(seed)
    model = build_classifier(classifier, num_classes=len(splits.train.classes))
    batch_fn = None
    if swap is not None:
        if alphas is None:
            raise ValueError("train_and_evaluate with a swap needs the training images' alphas (alphas=...)")

        def batch_fn(images: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            return swap.swap_batch(images, labels, alphas=alphas[idx])

    start = time.perf_counter()
    history = train_classifier(
        model, splits.train.images, splits.train.labels, epochs=epochs, batch_fn=batch_fn,
        randaugment=randaugment, groups=splits.train.groups, group_dro=group_dro,
        val=(splits.val.images, splits.val.labels, splits.val.groups), select_on="average",
        on_epoch_end=on_epoch_end, seed=seed, progress=progress, desc=desc,
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
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    return write_with(path, lambda tmp: image.save(tmp, format="PNG"))


def format_group_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per method, columns average / worst-group / every group."""
    head = "| method | average | worst group | " + " | ".join(GROUP_NAMES.values()) + " |"
    lines = [head, "|" + "---|" * (3 + len(GROUP_NAMES))]
    for name, r in results.items():
        groups = " | ".join(f"{r['groups'].get(g, float('nan')):.3f}" for g in GROUP_NAMES)
        lines.append(f"| {name} | {r['average']:.3f} | {r['worst_group']:.3f} | {groups} |")
    return "\n".join(lines)
