"""How many labeled images does the segmenter need? Active selection vs random order, on StampBirds.

The person is simulated with the true masks: labeling an image yields the 16×16 patch grid of its exact
alpha (cell covered ≥ 25 %, :func:`torch_backswap.labels.dense_to_patch_grid`). Both strategies start
from the same random seed set and then run the labeler's loop:

1. fine-tune the segmenter on all labels so far (:func:`torch_backswap.finetune.finetune_segmenter`,
   continuing from the previous round's model, as ``backswap label --retrain-every`` does);
2. measure patch balanced accuracy (:func:`torch_backswap.metrics.cell_balanced_accuracy`, cell logit > 0)
   on the group-balanced StampBirds val split. By default its backgrounds are crops of the *train*
   photos (``background_holdout="crop"``, as in the original Waterbirds): that is the labeler's use case,
   where the segmenter then separates the rest of the same training set. The accuracy on val images
   with held-out photos (``"photo"``) is recorded alongside;
3. label ``--step`` more images: **active** picks them one at a time with the labeler's own
   :class:`torch_backswap.labeler.ActiveSelector` (mean binary entropy of cell probabilities, scored
   lazily a chunk at a time, stale scores re-checked after each retrain); **random** takes them in a
   fixed random order.

It stops when the accuracy reaches ``--target`` (0.90) or after ``--max-labels``, and reports the number
of labeled images at which each strategy first reached the target::

    python -m benchmarks.labeling_efficiency [--seeds 0 1] [--out benchmarks/results/labeling_efficiency.json]

CPU only, one thread; the default settings take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from torch_backswap.datasets import StampBirds
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.labeler import ActiveSelector, cell_uncertainty
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.metrics import cell_balanced_accuracy
from torch_backswap.segmenter import PatchSegmenter


@torch.no_grad()
def predict_logits(model: PatchSegmenter, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """(N,S,S) float logits for uint8 (N,3,H,W) images."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def run_strategy(strategy: str, args: argparse.Namespace, seed: int, pool, pool_grids, target_set, other_set) -> dict:
    """One labeling session; returns the learning curve and the label count that reached the target.

    ``target_set`` / ``other_set``: (StampBirds val split, its (N,S,S) grids); the target is checked on
    the first, the second is only recorded.
    """
    val, val_grids = target_set
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool_grids), generator=gen).tolist()
    labeled: list[int] = order[: args.seed_labels]  # identical seed set for both strategies
    random_rest = order[args.seed_labels :]
    model: PatchSegmenter | None = None
    if args.start != "scratch":
        model = PatchSegmenter.from_pretrained(args.start)

    def score(ids):
        idx = [int(i) for i in ids]
        return cell_uncertainty(torch.sigmoid(predict_logits(model, pool.images[idx])))

    selector = ActiveSelector(lambda start, size: [str(i) for i in order[start : start + size]], score,
                              chunk_size=args.chunk)
    curve, reached, tic = [], None, time.perf_counter()
    while True:
        labels = PatchLabels(ids=[str(i) for i in labeled], grids=pool_grids[labeled])
        epochs = args.first_epochs if not curve else args.epochs
        model, _ = finetune_segmenter(
            model, pool.images[labeled], labels, epochs=epochs, batch_size=args.batch_size, seed=seed,
            progress=False, scratch_kwargs={"input_size": args.input_size},
        )
        bacc = cell_balanced_accuracy(predict_logits(model, val.images), val_grids)
        bacc2 = cell_balanced_accuracy(predict_logits(model, other_set[0].images), other_set[1])
        curve.append({"labels": len(labeled), "balanced_accuracy": round(bacc, 4),
                      f"balanced_accuracy_{other_set[0].background_holdout}_holdout": round(bacc2, 4),
                      "seconds": round(time.perf_counter() - tic, 1)})
        print(f"  {strategy:6s} seed {seed}: {len(labeled):4d} labels -> patch balanced accuracy {bacc:.3f}"
              f" (other val {bacc2:.3f})  ({curve[-1]['seconds']:.0f} s)", flush=True)
        if bacc >= args.target:
            reached = len(labeled)
            break
        if len(labeled) >= args.max_labels:
            break
        taken = set(labeled)
        if strategy == "active":
            selector.invalidate()  # the segmenter changed
            new = []
            for _ in range(args.step):
                pick = selector.pick(lambda i: int(i) in taken)
                if pick is None:
                    break
                taken.add(int(pick))
                new.append(int(pick))
        else:
            new = [i for i in random_rest if i not in taken][: args.step]
        if not new:
            break
        labeled = labeled + new
    return {"strategy": strategy, "seed": seed, "labels_to_target": reached, "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=600, help="unlabeled StampBirds train images to pick from")
    parser.add_argument("--val", type=int, default=200, help="StampBirds val images for the accuracy")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=128, help="segmenter input size (from scratch)")
    parser.add_argument("--start", default="torch-backswap/patchseg-tiny-s16",
                        help="segmenter name/path to start from (default: the bundled one, trained on non-bird "
                             "stamps), or 'scratch'")
    parser.add_argument("--holdout", default="crop", choices=["crop", "photo"],
                        help="background_holdout of the val split the target is measured on")
    parser.add_argument("--seed-labels", type=int, default=10, help="random images labeled before the first round")
    parser.add_argument("--step", type=int, default=20, help="images labeled between two retrainings")
    parser.add_argument("--max-labels", type=int, default=400)
    parser.add_argument("--first-epochs", type=int, default=20, help="epochs of the first round")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every later round (warm start)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64, help="ActiveSelector chunk size")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--write-results", action="store_true", help="write the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pool = StampBirds(split="train", n=args.pool, image_size=args.image_size, seed=0)
    val = StampBirds(split="val", n=args.val, image_size=args.image_size, seed=0, background_holdout=args.holdout)
    other = "photo" if args.holdout == "crop" else "crop"
    val2 = StampBirds(split="val", n=args.val, image_size=args.image_size, seed=0, background_holdout=other)
    pool_grids = dense_to_patch_grid(pool.alpha, args.grid, 0.25)
    val_grids = dense_to_patch_grid(val.alpha, args.grid, 0.25)
    val2_grids = dense_to_patch_grid(val2.alpha, args.grid, 0.25)

    runs = []
    for seed in args.seeds:
        for strategy in ("active", "random"):
            runs.append(run_strategy(strategy, args, seed, pool, pool_grids, (val, val_grids), (val2, val2_grids)))

    summary = {}
    for strategy in ("active", "random"):
        reached = [r["labels_to_target"] for r in runs if r["strategy"] == strategy]
        summary[strategy] = reached
        shown = ", ".join("not reached" if n is None else str(n) for n in reached)
        print(f"{strategy:6s}: labeled images to reach patch balanced accuracy {args.target:.2f}: {shown}")
    result = {"settings": vars(args), "labels_to_target": summary, "runs": runs}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.write_results:
        write_results(args, runs, argv)
    return result


def write_results(args, runs, argv) -> None:
    """The table of labeled images needed per strategy and seed, in its section of benchmarks/RESULTS.md."""
    import sys

    from benchmarks._common import machine_line, write_section

    cmd = "python -m benchmarks.labeling_efficiency " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [
        f"## Labeling efficiency: active selection vs random order (StampBirds {args.image_size} px, target "
        f"patch balanced accuracy {args.target:.2f})", "", f"`{cmd}`", "", machine_line(), "",
        f"Start: `{args.start}`, {args.seed_labels} random seed labels, then {args.step} more per round "
        f"(warm-start fine-tune, {args.epochs} epochs); pool {args.pool} train images; accuracy on {args.val} val "
        f"images with backgrounds held out by `{args.holdout}`. The person is simulated with the true alpha.", "",
        "| seed | strategy | labeled images to reach the target | final labels | final accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        last = r["curve"][-1] if r.get("curve") else {}
        reached = r["labels_to_target"] if r["labels_to_target"] is not None else "not reached"
        md.append(f"| {r['seed']} | {r['strategy']} | **{reached}** | {last.get('labels', '–')} | "
                  f"{last.get('balanced_accuracy', float('nan')):.3f} |")
    write_section("labeling_efficiency", "\n".join(md))


if __name__ == "__main__":
    main()
