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
3. label ``--step`` more images: the active strategies pick them one at a time with the labeler's own
   :class:`torch_backswap.labeler.ActiveSelector` (mean binary entropy of cell probabilities, scored
   lazily a chunk at a time, stale scores re-checked after each retrain): **uncertainty** (the most
   uncertain image; the labeler's rule before v0.3, called "active" in older results), **topk_random** (a
   seeded draw among the ``--top-k`` most uncertain), **kcenter** (k-center greedy on the segmenter's
   pooled backbone features among the ``--top-k`` most uncertain, the labeled images counting as covered);
   **random** takes them in a fixed random order.

It stops when the accuracy reaches ``--target`` (0.90) or after ``--max-labels``, and reports the number
of labeled images at which each strategy first reached the target (mean ± 95 % t-interval over seeds,
counting a run that never reached it as ``--max-labels`` + ``--step``, flagged)::

    python -m benchmarks.labeling_efficiency [--seeds 0 1 2] [--out benchmarks/results/labeling_efficiency.json]

CPU only, one thread; the default settings take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks._common import mean_ci
from torch_backswap.datasets import StampBirds
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.labeler import ActiveSelector, cell_uncertainty
from torch_backswap.labeler.active import segmenter_features
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.metrics import cell_balanced_accuracy
from torch_backswap.segmenter import PatchSegmenter

STRATEGIES = ("random", "uncertainty", "topk_random", "kcenter")


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
        model.eval()
        logits, feats = segmenter_features(model, pool.images[idx])
        return cell_uncertainty(torch.sigmoid(logits)), feats

    selector = None
    if strategy != "random":
        selector = ActiveSelector(lambda start, size: [str(i) for i in order[start : start + size]], score,
                                  chunk_size=args.chunk, strategy=strategy, top_k=args.top_k, seed=seed)
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
        taken_now = {str(i) for i in labeled}
        if selector is not None:
            selector.invalidate()  # the segmenter changed
            new = []
            for _ in range(args.step):
                pick = selector.pick(taken_now.__contains__, covered=[str(i) for i in labeled])
                if pick is None:
                    break
                taken.add(int(pick))
                taken_now.add(pick)
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
    parser.add_argument("--top-k", type=int, default=40, help="uncertain pool of topk_random / kcenter")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out (same settings) and run only the missing seed/strategy pairs")
    parser.add_argument("--write-results", action="store_true", help="write the table to benchmarks/RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite the RESULTS.md section from --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report_only:
        saved = json.loads(Path(args.out).read_text())
        for key, value in saved["settings"].items():
            if key not in ("report_only", "write_results", "resume", "out"):
                setattr(args, key, value)
        write_results(args, saved["runs"], argv)
        return saved

    pool = StampBirds(split="train", n=args.pool, image_size=args.image_size, seed=0)
    val = StampBirds(split="val", n=args.val, image_size=args.image_size, seed=0, background_holdout=args.holdout)
    other = "photo" if args.holdout == "crop" else "crop"
    val2 = StampBirds(split="val", n=args.val, image_size=args.image_size, seed=0, background_holdout=other)
    pool_grids = dense_to_patch_grid(pool.alpha, args.grid, 0.25)
    val_grids = dense_to_patch_grid(val.alpha, args.grid, 0.25)
    val2_grids = dense_to_patch_grid(val2.alpha, args.grid, 0.25)

    runs = []
    if args.resume and args.out and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text())
        ignored = ("seeds", "strategies", "resume", "write_results", "threads", "out")
        same = {k: v for k, v in previous["settings"].items() if k not in ignored}
        mine = {k: v for k, v in vars(args).items() if k in same}
        if same != mine:
            raise SystemExit(f"--resume: {args.out} was written with other settings: {same} != {mine}")
        runs = [r for r in previous["runs"] if r["seed"] in args.seeds and r["strategy"] in args.strategies]
    done = {(r["seed"], r["strategy"]) for r in runs}

    def summarise() -> dict:
        summary = {s: [r["labels_to_target"] for r in runs if r["strategy"] == s] for s in args.strategies}
        result = {"settings": vars(args), "labels_to_target": summary, "runs": runs}
        if args.out:
            from torch_backswap._io import atomic_write_text

            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")  # after every run
        return result

    for seed in args.seeds:
        for strategy in args.strategies:
            if (seed, strategy) not in done:
                runs.append(run_strategy(strategy, args, seed, pool, pool_grids, (val, val_grids), (val2, val2_grids)))
                summarise()
    runs.sort(key=lambda r: (args.seeds.index(r["seed"]), args.strategies.index(r["strategy"])))
    result = summarise()
    for strategy, reached in result["labels_to_target"].items():
        shown = ", ".join("not reached" if n is None else str(n) for n in reached)
        mean, half = mean_ci([args.max_labels + args.step if n is None else n for n in reached])
        print(f"{strategy:11s}: labeled images to reach patch balanced accuracy {args.target:.2f}: {shown}"
              f"  (mean {mean:.0f} ± {half:.0f})")
    if args.write_results:
        write_results(args, runs, argv)
    return result


def write_results(args, runs, argv) -> None:
    """The table of labeled images needed per strategy and seed, in its section of benchmarks/RESULTS.md."""
    import sys

    from benchmarks._common import loadavg, machine_line, write_section

    cmd = "python -m benchmarks.labeling_efficiency " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.report_only:  # name the run that produced the numbers
        cmd = (f"python -m benchmarks.labeling_efficiency --seeds {' '.join(map(str, args.seeds))} --max-labels "
               f"{args.max_labels} --threads {args.threads} --out {args.out} --resume --write-results`; table rendered "
               f"by `{cmd}")
    write_section("labeling_efficiency", section_markdown(args, runs, cmd, machine_line(), loadavg()))


def render(result: dict, machine: str = "", load_end: str = "n/a") -> str:
    """The RESULTS.md section from the JSON alone (``machine``: the date/machine line; ``load_end``: the load
    average recorded at the end of the run)."""
    args = argparse.Namespace(**result["settings"])
    cmd = (f"python -m benchmarks.labeling_efficiency --seeds {' '.join(map(str, args.seeds))} --max-labels "
           f"{args.max_labels} --threads {args.threads} --out {args.out} --resume --write-results`; rendered "
           "by `python -m benchmarks.report")
    return section_markdown(args, result["runs"], cmd, machine, load_end)


def section_markdown(args, runs, cmd: str, machine: str, load_end: str) -> str:
    title = (f"## Labeling efficiency: active selection strategies vs random order (StampBirds {args.image_size} px, "
             f"target patch balanced accuracy {args.target:.2f})")
    setup = (f"Start: `{args.start}`, {args.seed_labels} random seed labels, then {args.step} more per round "
             f"(warm-start fine-tune, {args.epochs} epochs); pool {args.pool} train images; accuracy on {args.val} "
             f"val images with backgrounds held out by `{args.holdout}`. The person is simulated with the true alpha.")
    rules = ("Selection: `uncertainty` = most uncertain image (the old default, \"active\" in earlier results); "
             f"`topk_random` = seeded draw among the {args.top_k} most uncertain; `kcenter` = k-center greedy on "
             f"pooled segmenter features among the {args.top_k} most uncertain; `random` = fixed random order. "
             f"Load average at the end: {load_end}.")
    md = [
        title, "", f"`{cmd}`", "", machine, "", setup, "", rules, "",
        "| strategy | labeled images to reach the target, per seed | mean ± 95 % t-interval |",
        "|---|---|---|",
    ]
    for strategy in args.strategies:
        reached = [r["labels_to_target"] for r in runs if r["strategy"] == strategy]
        shown = ", ".join("not reached" if n is None else str(n) for n in reached)
        mean, half = mean_ci([args.max_labels + args.step if n is None else n for n in reached])
        flag = " (a run that missed counts as max + step)" if None in reached else ""
        md.append(f"| {strategy} | {shown} | **{mean:.0f} ± {half:.0f}**{flag} |")
    counts = [args.seed_labels + args.step, args.seed_labels + 2 * args.step]
    md += ["", ("The crossing point above is coarse (steps of 20) and noisy (the curve wobbles by ±0.01 around the "
           "target). Every run has its first two selected rounds, so they compare all strategies on equal labels "
           "(mean ± 95 % t-interval; Δ is paired with `random` on the same seed):"), "",
           "| strategy | " + " | ".join(f"accuracy at {n} labels | Δ vs random at {n}" for n in counts) + " |",
           "|---|" + "---|---|" * len(counts)]
    for strategy in args.strategies:
        cells = []
        for n in counts:
            acc = {r["seed"]: c["balanced_accuracy"] for r in runs if r["strategy"] == strategy
                   for c in r["curve"] if c["labels"] == n}
            ref = {r["seed"]: c["balanced_accuracy"] for r in runs if r["strategy"] == "random"
                   for c in r["curve"] if c["labels"] == n}
            mean, half = mean_ci(list(acc.values())) if acc else (float("nan"), float("nan"))
            paired = [acc[k] - ref[k] for k in acc if k in ref]
            dmean, dhalf = mean_ci(paired) if paired else (float("nan"), float("nan"))
            cells += [f"{mean:.3f} ± {half:.3f}", f"{dmean:+.3f} ± {dhalf:.3f}"]
        md.append(f"| {strategy} | " + " | ".join(cells) + " |")
    md += [
        "",
        "| seed | strategy | labeled images to reach the target | final labels | final accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        last = r["curve"][-1] if r.get("curve") else {}
        reached = r["labels_to_target"] if r["labels_to_target"] is not None else "not reached"
        md.append(f"| {r['seed']} | {r['strategy']} | **{reached}** | {last.get('labels', '–')} | "
                  f"{last.get('balanced_accuracy', float('nan')):.3f} |")
    if args.holdout == "crop":
        from benchmarks.robustness import CROP_CONFOUND

        md += ["", f"**Confound:** the target is measured on val backgrounds held out by crop. {CROP_CONFOUND}"]
    return "\n".join(md)


if __name__ == "__main__":
    main()
