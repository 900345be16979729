"""The paper's recipe as one command: ERM vs BackSwap on Waterbirds (with / without minority groups),
Spawrious (o2o / m2m × easy / medium / hard) and ImageNet-9, with the paper's settings.

Run from the repository root, on a GPU machine with the datasets under one root::

    python -m benchmarks.paper --root /data --device cuda --seeds 0 1 2
    python -m benchmarks.paper --root /data --tables waterbirds waterbirds_no_minority --device cuda
    python -m benchmarks.paper --smoke          # every table end to end on tiny fixtures, CPU, < 1 min

Expected under ``--root``: ``waterbird_complete95_forest2water2/`` (+ CUB ``segmentations/`` for the patch
labels, or ``--patch-labels masks.csv``), ``spawrious224/`` (+ ``--spawrious-masks`` for patch labels: the
release has no masks), ``bg_challenge/`` (test variants + ``fg_mask``) and the IN-9 training data
``original/train/<class>/`` (``--in9-train``, default ``ROOT``) with dense masks in ``fg_mask/train/<class>/<stem>.npy``
(e.g. thresholded from the ``only_fg`` training release) or ``--patch-labels``.

Per table and seed: patch labels for ``n_labeled`` training images from the dataset's dense masks (the
paper's covered-fraction threshold), the segmenter fine-tuned on them, tight / loose masks of every
training image, a background bank (loose holes inpainted), then the classifier trained with plain ERM and
with :class:`~torch_backswap.transform.BackgroundSwap` on every batch (the paper's jitter), scored on the
test split's groups. Writes ``benchmarks/results/paper_<table>.json`` (``method/seedN -> {worst_group,
average, groups, ...}``, the layout of the StampBirds benchmark) and a ``paper_<table>`` section of
``benchmarks/RESULTS.md`` (not in ``--smoke``, which writes to ``--out-dir`` or a temporary folder).

Deviations from the paper, by design of the harness: the classifier is trained with AdamW + one-cycle
(``torch_backswap.classifiers.train_classifier``) instead of SGD, on images held in memory at
``--size``; the swap runs on CPU batches before the transfer to the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks._common import loadavg, machine_line, write_section
from torch_backswap._io import atomic_write_text
from torch_backswap.build import build_bank
from torch_backswap.datasets import ImageNet9, Spawrious, Waterbirds
from torch_backswap.datasets.spawrious import BENCHMARKS as SPAWRIOUS_BENCHMARKS
from torch_backswap.diagnose import background_gap, imagenet9_bg_gap
from torch_backswap.classifiers import build_classifier, evaluate_groups, train_classifier
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.hub import DEFAULT_SEGMENTER
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.cutout import CutOut
from torch_backswap.segmenter import PatchSegmenter, probability_to_mask
from torch_backswap.transform import BackgroundSwap
from torch_backswap.jitter import JitterGenerator

HERE = Path(__file__).resolve().parent
TABLES = ("waterbirds", "waterbirds_no_minority", *[f"spawrious_{b}" for b in SPAWRIOUS_BENCHMARKS], "imagenet9")

#: the paper's settings (REFERENCE.md); ImageNet-9 is not in the paper's tables: it gets the "others" column
PAPER = {
    "waterbirds": dict(patch_threshold=0.25, tight=0.67, loose=0.1, translate_px=32.0, n_labeled=200, grid=16,
                       classifier="resnet50", epochs=50, batch_size=32, lr=1e-3, weight_decay=1e-3,
                       seg_lr=1.0, seg_epochs=200),
    "spawrious": dict(patch_threshold=0.2, tight=0.5, loose=0.1, translate_px=64.0, n_labeled=200, grid=16,
                      classifier="resnet50", epochs=10, batch_size=64, lr=3e-3, weight_decay=1e-3,
                      seg_lr=0.3, seg_epochs=200),
    "imagenet9": dict(patch_threshold=0.25, tight=0.67, loose=0.1, translate_px=32.0, n_labeled=200, grid=16,
                      classifier="resnet50", epochs=10, batch_size=64, lr=3e-3, weight_decay=1e-3,
                      seg_lr=0.3, seg_epochs=200),
}
SMOKE = dict(n_labeled=12, classifier="small_cnn", epochs=1, batch_size=16, seg_epochs=1)


@dataclass
class Split:
    """One split in memory: uint8 images (N,3,S,S), int64 labels and groups, optional float masks (N,1,S,S)."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    masks: torch.Tensor | None = None


def _family(table: str) -> str:
    return "spawrious" if table.startswith("spawrious") else ("imagenet9" if table == "imagenet9" else "waterbirds")


def to_memory(ds: Any, size: int, with_masks: bool, num_workers: int = 0, progress: bool = True) -> Split:
    """Decode a file-backed dataset into uint8 tensors at ``size``² (masks resized bilinearly, in [0, 1])."""
    from torchvision.transforms import v2
    from tqdm.auto import tqdm

    resize = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])
    ds.transform = resize
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=num_workers)
    images = torch.cat([x for x, _ in tqdm(loader, desc="decode", disable=not progress, leave=False)])
    masks = None
    if with_masks:
        masks = torch.stack([torch.nn.functional.interpolate(ds.mask(i)[None], size=(size, size), mode="bilinear",
                                                             antialias=True, align_corners=False)[0]
                             for i in range(len(ds))])
    return Split(images, ds.labels.clone(), ds.groups.clone(), masks)


def load_table(table: str, args: argparse.Namespace) -> tuple[Split, Split, Split, list[str], Any]:
    """(train, val, test, classes, extra) of a table; ``extra`` is what the evaluation needs besides test."""
    root, size = Path(args.root), args.size
    family = _family(table)
    if family == "waterbirds":
        kw = dict(segmentations=args.segmentations) if args.segmentations else {}
        train_ds = Waterbirds(root, "train", keep_groups=(0, 3) if table.endswith("no_minority") else None, **kw)
        has_masks = train_ds.mask_files is not None
        train = to_memory(train_ds, size, has_masks, args.num_workers, args.progress)
        val = to_memory(Waterbirds(root, "val", **kw), size, False, args.num_workers, args.progress)
        test = to_memory(Waterbirds(root, "test", **kw), size, has_masks, args.num_workers, args.progress)
        return train, val, test, train_ds.classes, train_ds.ids
    if family == "spawrious":
        bench = table[len("spawrious_"):]
        kw = dict(total=args.spawrious_total, masks=args.spawrious_masks)
        train_ds = Spawrious(root, bench, "train", **kw)
        has_masks = train_ds.mask_files is not None
        train = to_memory(train_ds, size, has_masks, args.num_workers, args.progress)
        val = to_memory(Spawrious(root, bench, "val", **kw), size, False, args.num_workers, args.progress)
        test = to_memory(Spawrious(root, bench, "test", **kw), size, False, args.num_workers, args.progress)
        return train, val, test, train_ds.classes, train_ds.ids
    train_root = Path(args.in9_train) if args.in9_train else root
    full = ImageNet9(train_root, "original", split="train")
    generator = torch.Generator().manual_seed(0)  # a fixed 10 % of the training data for model selection
    order = torch.randperm(len(full), generator=generator)
    n_val = max(1, len(full) // 10)
    train_ds = ImageNet9(train_root, "original", split="train")
    val_ds = ImageNet9(train_root, "original", split="train")
    for ds, idx in ((train_ds, order[n_val:]), (val_ds, order[:n_val])):
        keep = sorted(idx.tolist())
        ds.files = [ds.files[i] for i in keep]
        ds.ids = [ds.ids[i] for i in keep]
        ds.relative_paths = list(ds.ids)
        ds.labels = ds.labels[keep]
        ds.groups = ds.labels
        ds.mask_files = None if ds.mask_files is None else [ds.mask_files[i] for i in keep]
    has_masks = train_ds.mask_files is not None
    train = to_memory(train_ds, size, has_masks, args.num_workers, args.progress)
    val = to_memory(val_ds, size, False, args.num_workers, args.progress)
    test = to_memory(ImageNet9(root, "mixed_rand"), size, False, args.num_workers, args.progress)
    return train, val, test, train_ds.classes, train_ds.ids


def patch_labels_for(train: Split, ids: list[str], n: int, grid: int, threshold: float, seed: int,
                     given: str | None) -> tuple[torch.Tensor, PatchLabels]:
    """Indices into ``train`` and their patch labels: from ``given`` (a label file keyed like ``ids``) or
    from the dense masks of ``n`` random training images (empty grids skipped, as in the paper)."""
    if given:
        labels = PatchLabels.read(given)
        position = {i: k for k, i in enumerate(ids)}
        keep = [i for i in labels.ids if i in position]
        if not keep:
            raise ValueError(f"none of the {len(labels)} ids of {given!r} is a training image of this table")
        return torch.tensor([position[i] for i in keep]), labels.subset(keep)
    if train.masks is None:
        raise ValueError("this table's training split has no dense masks: give --patch-labels, --segmentations "
                         "(Waterbirds) or --spawrious-masks (Spawrious)")
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    grids = dense_to_patch_grid(train.masks[order] > 0.5, grid, threshold)
    chosen = order[grids.flatten(1).any(1)][:n]
    grids = dense_to_patch_grid(train.masks[chosen] > 0.5, grid, threshold)
    return chosen, PatchLabels([ids[int(i)] for i in chosen], grids)


def run_table(table: str, args: argparse.Namespace, records: dict, save: Callable[[], None]) -> None:
    family = _family(table)
    cfg = dict(PAPER[family], **(SMOKE if args.smoke else {}))
    for key in ("n_labeled", "classifier", "epochs", "seg_epochs", "batch_size"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    train, val, test, classes, ids = load_table(table, args)
    say = (lambda m: print(f"[{table}] {m}", flush=True)) if args.progress or args.smoke else (lambda m: None)
    say(f"train {len(train.labels)}, val {len(val.labels)}, test {len(test.labels)} at {args.size}px")
    for seed in args.seeds:
        todo = [m for m in ("erm", "backswap") if f"{m}/seed{seed}" not in records]
        if not todo:
            continue
        swap = bank = None
        info: dict = {}
        if "backswap" in todo:
            idx, labels = patch_labels_for(train, ids, cfg["n_labeled"], cfg["grid"], cfg["patch_threshold"], seed,
                                           args.patch_labels)
            if args.segmenter == "scratch-efficientnet_b0":  # the paper's detector: ImageNet EfficientNet-B0
                start, scratch = None, {"backbone": "efficientnet_b0", "pretrained_backbone": True,
                                        "grid_size": cfg["grid"]}
                opt = dict(optimizer="sgd", lr=cfg["seg_lr"])
            else:
                start, scratch, opt = PatchSegmenter.from_pretrained(args.segmenter), None, {}
            seg, history = finetune_segmenter(start, train.images[idx], labels, epochs=cfg["seg_epochs"], seed=seed,
                                              device=args.device, progress=args.progress, scratch_kwargs=scratch, **opt)
            seg = seg.to(args.device)
            tight, loose = [], []
            cut_out = CutOut(seg, tight_threshold=cfg["tight"], feather=0.0)  # the swap's one cut-out route
            for s in range(0, len(train.images), 128):
                x = train.images[s : s + 128].to(args.device)
                tight.append(cut_out(x).cpu())
                loose.append(probability_to_mask(cut_out.probability(x), cfg["loose"]).cpu() > 0.5)
            tight, loose = torch.cat(tight), torch.cat(loose)
            bank = build_bank(train.images, train.labels, holes=loose, classes=classes, progress=args.progress,
                              device=args.device).cpu()
            swap = BackgroundSwap(bank, jitter=JitterGenerator(translate_px=cfg["translate_px"]), seed=seed)
            info = {"n_labeled": len(labels), "bank": len(bank),
                    "segmenter_val_balanced_accuracy": max((h.get("val_balanced_accuracy") or 0) for h in history)}
        for method in todo:
            tic = time.perf_counter()
            torch.manual_seed(seed)
            model = build_classifier(cfg["classifier"], num_classes=len(classes), pretrained=args.pretrained)
            batch_fn = None
            if method == "backswap":
                def batch_fn(x, y, i, swap=swap, tight=tight):
                    return swap.swap_batch(x, y, alphas=tight[i])
            train_classifier(model, train.images, train.labels, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                             lr=cfg["lr"], weight_decay=cfg["weight_decay"], batch_fn=batch_fn,
                             val=(val.images, val.labels, val.groups), select_on="average", seed=seed,
                             device=args.device, progress=args.progress, desc=f"{table} {method} s{seed}")
            result = evaluate_groups(model, test.images, test.labels, test.groups, device=args.device)
            record: dict = {"worst_group": result["worst_group"], "average": result["average"],
                            "groups": {str(k): v for k, v in result["groups"].items()},
                            "settings": {k: v for k, v in cfg.items()}, "seconds": time.perf_counter() - tic}
            if method == "backswap":
                record.update(info)
            model = model.to(args.device)
            if family == "imagenet9":
                gap = imagenet9_bg_gap(model, args.root, size=args.size, device=args.device)
                record["in9_bg_gap"] = gap.as_dict()
            elif test.masks is not None and bank is not None:  # the label-free diagnostic, where masks exist
                gap = background_gap(model, (test.images, test.labels), bank, alphas=test.masks, device=args.device,
                                     seed=seed)
                record["bg_gap"] = gap.as_dict()
            records[f"{method}/seed{seed}"] = record
            save()
            say(f"{method} seed {seed}: worst group {record['worst_group']:.3f}, average {record['average']:.3f}")


def render(table: str, records: dict, command: str) -> str:
    lines = [f"## Paper recipe: {table}", "", f"`{command}`", "", machine_line(), "",
             "| method | seeds | average | worst group |", "|---|---|---|---|"]
    for method in ("erm", "backswap"):
        runs = [r for k, r in records.items() if k.split("/")[0] == method]
        if runs:
            avg = [r["average"] for r in runs]
            wga = [r["worst_group"] for r in runs]
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
            lines.append(f"| {method} | {len(runs)} | {statistics.fmean(avg):.3f} ± {sd(avg):.3f} | "
                         f"{statistics.fmean(wga):.3f} ± {sd(wga):.3f} |")
    return "\n".join(lines)


def make_smoke_root(root: Path) -> None:
    """The tiny fixtures of every table under ``root`` (see :mod:`benchmarks.paper_fixtures`)."""
    from benchmarks.paper_fixtures import write_imagenet9, write_spawrious, write_waterbirds

    write_waterbirds(root, {"train": [8, 2, 2, 8], "val": [2, 2, 2, 2], "test": [3, 3, 3, 3]}, size=32)
    write_spawrious(root, total=8, size=32, masks=True)
    write_imagenet9(root, per_class=2, size=32, variants=("original", "mixed_same", "mixed_rand"))
    # the training data is released apart from the challenge's test folders: ROOT/original/train/<class>/,
    # with its dense masks at ROOT/fg_mask/train/<class>/<stem>.npy
    write_imagenet9(root / "in9_train", per_class=3, size=32, variants=("original",), split="train", seed=1)
    for part in ("original", "fg_mask"):
        (root / "in9_train" / "bg_challenge" / part).rename(root / part)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="folder holding the datasets (see above)")
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=224, help="image side (paper: 224)")
    p.add_argument("--segmenter", default="scratch-efficientnet_b0",
                   help="'scratch-efficientnet_b0' (the paper's detector, ImageNet backbone: needs the torchvision "
                        f"weights) or a PatchSegmenter name/path, e.g. {DEFAULT_SEGMENTER}")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights for the classifier (paper: yes)")
    p.add_argument("--segmentations", help="Waterbirds: CUB segmentations folder (default: found under --root)")
    p.add_argument("--patch-labels", help="a patch-label file (e.g. the paper's masks.csv) instead of dense masks")
    p.add_argument("--spawrious-masks", help="Spawrious: folder of <relative path>.png object masks")
    p.add_argument("--spawrious-total", type=int, default=3168, help=argparse.SUPPRESS)
    p.add_argument("--in9-train", help="folder holding original/train/<class>/ (default: --root)")
    p.add_argument("--n-labeled", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seg-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--classifier", default=None, choices=["small_cnn", "resnet18", "resnet50"])
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--out-dir", default=None, help="results folder (default: benchmarks/, or a temp dir in --smoke)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny fixtures, CPU, 1 seed, 1 epoch: checks it runs")
    args = p.parse_args(argv)
    command = "python -m benchmarks.paper " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="backswap-paper-smoke-")
        args.root = str(Path(tmp.name) / "data")
        make_smoke_root(Path(args.root))
        args.seeds, args.device, args.size, args.num_workers = args.seeds[:1], "cpu", 32, 0
        args.segmenter, args.pretrained, args.spawrious_total = DEFAULT_SEGMENTER, False, 8
        args.spawrious_masks = str(Path(args.root) / "spawrious_masks")
        args.out_dir = args.out_dir or str(Path(tmp.name) / "out")
    elif not args.root:
        p.error("--root is required (or --smoke)")
    out = Path(args.out_dir) if args.out_dir else HERE
    load_start, tic = loadavg(), time.perf_counter()
    try:
        for table in args.tables:
            path = out / "results" / f"paper_{table}.json"
            records = json.loads(path.read_text()) if path.exists() else {}

            def save(path=path, records=records) -> None:
                atomic_write_text(path, json.dumps(records, indent=1, sort_keys=True))

            run_table(table, args, records, save)
            if not args.smoke and out == HERE:
                write_section(f"paper_{table}", render(table, records, command))
        print(f"done: {len(args.tables)} table(s) in {time.perf_counter() - tic:.0f} s; load average {load_start} -> "
              f"{loadavg()}; results in {out / 'results'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
