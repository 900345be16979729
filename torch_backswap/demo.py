"""The main job: the whole AutoBackSwap pipeline on the embedded StampBirds benchmark, offline.

``backswap demo`` (or :func:`run_demo`) does, in a few minutes on two CPU cores (``--full``: the whole train
split and test set, about twice as long; ``--fast``: a one-minute smoke run):

1. **labels** — derives 16×16 patch labels for ~300 training images from the true alpha (standing in for
   a person with ``backswap label``);
2. **fine-tune** — fine-tunes the bundled segmenter on them; scores it on the held-out test split;
3. **bank** — segments every training image, inpaints the loose hole, keeps a background bank
   (:func:`~torch_backswap.build.build_bank`'s default route: flip-averaged logits, the bundled
   :class:`~torch_backswap.edge_refiner.EdgeRefiner`, hole p > 0.2 grown by 1/32 of the image side);
4. **train** — trains the same small CNN with plain ERM and with :class:`BackgroundSwap` (class-balanced
   backgrounds; the same route cuts the object out at p > 0.5) at 100 % train correlation (no training image
   breaks the correlation);
5. **report** — prints the group-accuracy table and writes ``results.json`` and ``swap_grid.png``.

The steps (:func:`load_splits`, :func:`simulated_patch_labels`, :func:`segmenter_quality`,
:func:`train_and_evaluate`, :func:`save_swap_grid`, :func:`format_group_table`) follow :func:`run_demo` in this
module; ``benchmarks/`` reuses them. The classifier and its training loop are :mod:`torch_backswap.classifiers`.
``refiner=None`` (``backswap demo --refiner none``) runs the paper's route instead (bilinear probability, cut-out
p > 0.67, hole p > 0.1).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from torch_backswap._io import atomic_write_text, write_with
from torch_backswap.build import build_bank
from torch_backswap.classifiers import build_classifier, evaluate_groups, train_classifier
from torch_backswap.cutout import CutOut
from torch_backswap.datasets import StampBirds
from torch_backswap.edge_refiner import DEFAULT_EDGE_REFINER, EdgeRefiner
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.hub import DEFAULT_SEGMENTER
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.metrics import cell_balanced_accuracy, mask_iou
from torch_backswap.segmenter import TIGHT_THRESHOLD, PatchSegmenter
from torch_backswap.transform import BackgroundSwap

__all__ = [
    "DEMO_SIZES",
    "run_demo",
    "StampBirdsSplits",
    "load_splits",
    "simulated_patch_labels",
    "segmenter_quality",
    "train_and_evaluate",
    "save_swap_grid",
    "format_group_table",
]

#: The demo's sizes: ``"default"`` (the README's first command: a few minutes on two CPU cores), ``"full"``
#: (the long version: the whole StampBirds train split and test set) and ``"fast"`` (a smoke run of about a
#: minute; its figures only show the pipeline runs end to end, not how good it is).
DEMO_SIZES = {
    "default": dict(n_train=1200, n_val=300, n_test=1200, n_labeled=300, finetune_epochs=12, epochs=8),
    "full": dict(n_train=None, n_val=None, n_test=None, n_labeled=300, finetune_epochs=12, epochs=8),
    "fast": dict(n_train=400, n_val=100, n_test=200, n_labeled=60, finetune_epochs=1, epochs=1),
}


def run_demo(
    out_dir: str | os.PathLike = "backswap-demo",
    *,
    size: str = "default",
    fast: bool = False,
    seed: int = 0,
    image_size: int = 64,
    correlation: float = 1.0,
    n_labeled: Optional[int] = None,
    segmenter: str = DEFAULT_SEGMENTER,
    refiner: Optional[str] = DEFAULT_EDGE_REFINER,
    finetune_epochs: Optional[int] = None,
    epochs: Optional[int] = None,
    n_train: Optional[int] = None,
    background_holdout: str = "photo",
    progress: bool = True,
) -> dict:
    """Run the whole pipeline (see the module docstring) and write ``results.json`` and ``swap_grid.png``.

    ``size`` picks :data:`DEMO_SIZES` (``fast=True`` is ``size="fast"``); ``n_labeled``, ``finetune_epochs``,
    ``epochs`` and ``n_train`` override it. ``background_holdout="crop"`` tests on unseen crops of the training
    photos instead of held-out photos (an easier setting: see ``benchmarks/RESULTS.md``). ``results.json`` holds every figure printed and ``stage_seconds``,
    the wall time of each stage.
    """
    if fast:
        size = "fast"
    if size not in DEMO_SIZES:
        raise ValueError(f"size must be one of {sorted(DEMO_SIZES)}, got {size!r}")
    preset = DEMO_SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    stage_start = [start]

    def stage_done(name: str) -> None:
        now = time.perf_counter()
        stage_seconds[name] = round(now - stage_start[0], 2)
        stage_start[0] = now

    sizes = {k: preset[k] for k in ("n_train", "n_val", "n_test")}
    if n_train is not None:
        sizes["n_train"] = n_train
    finetune_epochs = finetune_epochs or preset["finetune_epochs"]
    epochs = epochs or preset["epochs"]
    n_labeled = n_labeled or preset["n_labeled"]

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)

    say(f"StampBirds {image_size}px, train correlation {correlation} ({size} size)")
    splits = load_splits(image_size=image_size, correlation=correlation, seed=seed,
                         background_holdout=background_holdout, **sizes)
    say(f"splits: train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}")

    labeled_idx, labels = simulated_patch_labels(splits.train.alpha, n_labeled, seed=seed)
    stage_done("data_and_labels")
    say(f"1/5 patch labels for {len(labels)} training images (from the true alpha)")

    base = PatchSegmenter.from_pretrained(segmenter)
    before = segmenter_quality(base, splits.test.images, splits.test.alpha)
    seg, seg_history = finetune_segmenter(
        base, splits.train.images[labeled_idx], labels, epochs=finetune_epochs, seed=seed, progress=progress,
        output_dir=out / "segmenter",
    )
    after = segmenter_quality(seg, splits.test.images, splits.test.alpha)
    stage_done("finetune")
    say(f"2/5 segmenter fine-tuned: test patch balanced accuracy {before['patch_balanced_accuracy']:.3f} -> "
        f"{after['patch_balanced_accuracy']:.3f}, tight-mask IoU {before['tight_mask_iou']:.3f} -> "
        f"{after['tight_mask_iou']:.3f}")

    edge = EdgeRefiner.from_pretrained(refiner) if refiner else None
    train = splits.train
    bank = build_bank(train.images, train.labels, segmenter=seg, refiner=edge, classes=train.classes,
                      progress=progress, out=out / "bank.safetensors")
    stage_done("bank")
    say(f"3/5 background bank: {len(bank)} backgrounds ({bank.build_stats['images_per_s']:.0f} images/s), hole "
        f"p > {bank.metadata['loose_threshold']}" + (f" of the edge refiner, grown {bank.metadata['dilate']} px"
                                                       if edge is not None else ""))

    swap = BackgroundSwap(bank, CutOut(seg, edge), seed=seed)  # its cut-out route, run once per image below
    tight = _cut_out(swap, train.images)
    test_cut = _cut_out(swap, splits.test.images)
    cut_out = swap.cut_out  # the settings are the collaborator's; "refiner" records the name it was loaded from
    cut_out_quality = {"tight_threshold": cut_out.tight_threshold, "flip_average": cut_out.flip_average,
                       "refiner": refiner if cut_out.refiner is not None else None,
                       "tight_mask_iou": mask_iou(test_cut > 0.5, splits.test.alpha > 0.5)}
    stage_done("cut_out")
    say(f"3/5 cut-out (the swap's route): test tight-mask IoU {cut_out_quality['tight_mask_iou']:.3f}")
    results = {}
    _, results["erm"] = train_and_evaluate(splits, epochs=epochs, seed=seed, progress=progress, desc="ERM")
    stage_done("train_erm")
    say(f"4/5 ERM: worst-group {results['erm']['worst_group']:.3f}")
    _, results["backswap"] = train_and_evaluate(
        splits, swap=swap, alphas=tight, epochs=epochs, seed=seed, progress=progress, desc="BackSwap"
    )
    stage_done("train_backswap")
    say(f"4/5 BackSwap: worst-group {results['backswap']['worst_group']:.3f}")

    n_show = 8
    show = torch.arange(n_show) * (len(splits.train) // n_show)
    grid_swap = BackgroundSwap(bank, seed=seed + 1)
    swapped = grid_swap.swap_batch(splits.train.images[show], splits.train.labels[show], alphas=tight[show])
    holes_filled = bank.backgrounds[show]
    save_swap_grid(out / "swap_grid.png", splits.train.images[show], tight[show], holes_filled, swapped)
    stage_done("report")

    table = format_group_table(results)
    summary = {
        "settings": dict(size=size, image_size=image_size, correlation=correlation, seed=seed, fast=size == "fast",
                         background_holdout=background_holdout,
                         n_labeled=len(labels), finetune_epochs=finetune_epochs, epochs=epochs,
                         segmenter=segmenter, refiner=refiner, n_train=len(splits.train), n_val=len(splits.val),
                         n_test=len(splits.test)),
        "segmenter": {"before_finetune": before, "after_finetune": after,
                      "finetune_history": seg_history, "cut_out": cut_out_quality},
        "bank": {"size": len(bank), **bank.build_stats},
        "classifiers": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()},
        "stage_seconds": stage_seconds,
        "seconds": round(time.perf_counter() - start, 2),
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=float))
    say("5/5 test accuracy (group-balanced test set, " + ("held-out background photos" if background_holdout == "photo"
                                                          else "unseen crops of the training photos") + "):")
    if progress:
        print(table)
        print("stage timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds.items())
              + f"; total {summary['seconds']:.0f} s")
        print(f"wrote {out / 'results.json'} and {out / 'swap_grid.png'}")
    return summary


def _cut_out(swap: BackgroundSwap, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``swap``'s cut-out alpha of ``images``, float ``(N, 1, H, W)``, in batches (computed once, then given to
    every training batch's swap)."""
    return torch.cat([swap.segment(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


# ----------------------------------------------------------------------------------------------------------
# The StampBirds steps of the demo (reused by benchmarks/)


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
    """Patch balanced accuracy of the cell logits (cells ≥ 0.25 covered) and the IoU of the segmenter's cut-out
    on the paper's route (:class:`~torch_backswap.cutout.CutOut`: bilinear probability, p > 0.67, hard edge) against
    the true alpha > 0.5."""
    cut_out = CutOut(segmenter, tight_threshold=TIGHT_THRESHOLD, feather=0.0)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    logits = torch.cat([segmenter.predict_logits(x) for x in batches])
    tight = torch.cat([cut_out(x) for x in batches]) > 0.5
    cells = dense_to_patch_grid(alpha, segmenter.grid_size, 0.25)
    return {
        "patch_balanced_accuracy": cell_balanced_accuracy(logits, cells),
        "tight_mask_iou": mask_iou(tight, alpha > 0.5),
    }


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
    (``alphas``: the training images' object alphas ``(N, 1, H, W)``, e.g. the swap's cut-out as :func:`run_demo`
    computes it).
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
