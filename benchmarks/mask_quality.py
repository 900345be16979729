"""Mask quality of the learned cut-out: does refinement turn coarse patch predictions into pixel-accurate masks?

Setting (as in ``benchmarks.robustness``): StampBirds at ``--image-size`` px, the bundled segmenter
``torch-backswap/patchseg-tiny-s16`` fine-tuned on ``--n-labeled`` (300) simulated patch labels of the train
split (16×16 cells covered ≥ 25 % by the true alpha), ``--finetune-epochs`` (12), one fine-tune per seed.
Every variant below is scored on the **same** test images with the **same** fine-tuned model of a seed:

* tight-mask IoU (:func:`torch_backswap.metrics.mask_iou`, per image, against alpha > 0.5);
* boundary F-score with a 1-px tolerance (:func:`torch_backswap.metrics.boundary_f_score`);
* ghost fraction: the share of object pixels outside the loose hole (:func:`torch_backswap.metrics.ghost_fraction`);
* hole area: the share of the image that gets inpainted.

Variants: ``baseline`` (bilinear upsampling of the cell probabilities, tight p > 0.67, hole p > 0.1: the
route before this benchmark), ``guided`` / ``bilateral`` (:func:`torch_backswap.refine.refine_probability`),
``edge`` (the learned :class:`torch_backswap.EdgeRefiner`, bundled ``edgerefine-tiny``; scored at its own
threshold p > 0.5),
``flip`` (:func:`torch_backswap.refine.flip_average_logits`), ``calibrated`` (tight threshold from
:func:`torch_backswap.refine.calibrate_threshold` on the labelled images the fine-tune held out for
validation – patch labels only, no alpha), ``input256`` (the segmenter run at 256 px without its final
pooling: 32×32 logits, a finer output stride at inference only) and their combinations; then the hole
alone (:func:`torch_backswap.refine.loose_hole`) at loose thresholds 0.1 / 0.2 / 0.3 grown by 0–2 px.

The refinement parameters are chosen on the StampBirds **val** split (exact alpha, seed 0's model, best IoU
over thresholds); the table is on **test**. Mean ± 95 % t-interval over the seeds::

    python -m benchmarks.mask_quality --seeds 0 1 2 --threads 1 --write-results

Fine-tuned models are cached under ``--cache-dir`` (safetensors, via ``save_pretrained``), so a rerun only
re-scores. Writes ``benchmarks/results/mask_quality.json`` and the ``mask_quality`` section of RESULTS.md
(``mask_quality_crop`` for ``--holdout crop``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks._common import mean_ci
from torch_backswap._io import atomic_write_text
from torch_backswap.demo import load_splits, simulated_patch_labels
from torch_backswap.edge_refiner import DEFAULT_EDGE_REFINER, EdgeRefiner
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.hub import DEFAULT_SEGMENTER
from torch_backswap.labels import dense_to_patch_grid
from torch_backswap.metrics import boundary_f_score, ghost_fraction, hole_area, mask_iou
from torch_backswap.refine import (
    calibrate_threshold,
    flip_average_logits,
    loose_hole,
    refine_probability,
)
from torch_backswap.segmenter import (
    LOOSE_THRESHOLD,
    TIGHT_THRESHOLD,
    PatchSegmenter,
    logits_to_probability,
)

HERE = Path(__file__).resolve().parent
TOLERANCE = 1  # boundary F tolerance in px
SUFFIX = {"photo": ""}  # file / section name suffix per background holdout (the photo setting is the main one)
FINETUNE_EPOCHS = 12  # the robustness ruler's; other values get their own results file and section

#: The route this benchmark recommends: (cut-out variant, hole variant, hole setting).
RECOMMENDED = ("flip+edge", "flip+edge", "p>0.2, +2 px")
HOLE_ROWS = ("baseline", "flip+guided", "flip+edge")  # variants whose hole is also scored at other loose thresholds


def setting_name(args) -> str:
    """``mask_quality[_<holdout>][_finetune<epochs>]``: the results file stem and RESULTS.md section."""
    name = f"mask_quality{SUFFIX.get(args.holdout, '_' + args.holdout)}"
    return name + (f"_finetune{args.finetune_epochs}" if args.finetune_epochs != FINETUNE_EPOCHS else "")


# ----------------------------------------------------------------------------------------------------------
# Segmenter outputs


@torch.no_grad()
def cell_logits(seg: PatchSegmenter, images: torch.Tensor, *, flip: bool, input_size: int | None = None,
                batch_size: int = 256) -> torch.Tensor:
    """(N, S', S') logits; ``input_size`` runs the tiny backbone at that size and skips the final pooling
    (S' = input_size / 8), ``flip`` averages with the mirror image."""
    seg.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        if input_size is None:
            return seg(x)
        old = seg.input_size
        seg.input_size = input_size
        try:
            return seg.net.head(seg.net.features(seg.normalize(x)))[:, 0]
        finally:
            seg.input_size = old

    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        if flip and input_size is None:
            out.append(flip_average_logits(seg, x))  # the library route
        else:
            out.append((run(x) + run(x.flip(-1)).flip(-1)) / 2 if flip else run(x))
    return torch.cat(out)


def probability(logits: torch.Tensor, images: torch.Tensor, refine: dict | EdgeRefiner | None) -> torch.Tensor:
    """(N,1,H,W) float32 probability at image size, refined with ``refine`` (kwargs of refine_probability, or the
    learned edge refiner)."""
    prob = logits_to_probability(logits, tuple(images.shape[-2:]))
    if refine:
        step = refine.predict_probability if isinstance(refine, EdgeRefiner) else (
            lambda x, p: refine_probability(p, x, **refine))
        prob = torch.cat([step(images[i : i + 512], prob[i : i + 512]) for i in range(0, len(prob), 512)])
    return prob


def scores(prob: torch.Tensor, alpha: torch.Tensor, tight: float, loose: float = LOOSE_THRESHOLD,
           dilate: int = 0) -> dict:
    truth = alpha > 0.5
    mask = prob > tight
    hole = loose_hole(prob, loose, dilate)
    return {"tight_iou": mask_iou(mask, truth), "boundary_f": boundary_f_score(mask, truth, TOLERANCE),
            "ghost": ghost_fraction(hole, alpha), "hole_area": hole_area(hole), "tight_threshold": tight}


def best_threshold_iou(prob: torch.Tensor, alpha: torch.Tensor) -> tuple[float, float]:
    """(best IoU, its threshold) over 0.1, 0.2, …, 0.9 – an oracle used only for choosing refinement parameters."""
    truth = alpha > 0.5
    best = max((mask_iou(prob > t, truth), t) for t in torch.arange(0.1, 0.91, 0.1).tolist())
    return best[0], round(best[1], 2)


# ----------------------------------------------------------------------------------------------------------
# The run


def finetuned(args: argparse.Namespace, splits, seed: int) -> tuple[PatchSegmenter, list[int]]:
    """The fine-tuned segmenter of ``seed`` (cached) and the train indices of its held-out labelled images."""
    idx, labels = simulated_patch_labels(splits.train.alpha, args.n_labeled, seed=seed)
    cache = Path(args.cache_dir) / f"{args.image_size}px_{args.holdout}_n{args.n_labeled}_e{args.finetune_epochs}_seed{seed}"
    done = cache / "finished"  # the fine-tune saves its best model as it goes: only a finished one counts
    if not done.exists():
        finetune_segmenter(PatchSegmenter.from_pretrained(args.segmenter), splits.train.images[idx], labels,
                           epochs=args.finetune_epochs, seed=seed, progress=args.progress, output_dir=cache)
        atomic_write_text(done, "")
    history = json.loads((cache / "history.json").read_text())
    seg = PatchSegmenter.from_pretrained(str(cache))
    return seg, [int(i) for i in history["val_ids"]]


def choose_parameters(seg: PatchSegmenter, val) -> tuple[dict, list[dict]]:
    """Refinement parameters with the best IoU over thresholds on the val split (seed 0's model)."""
    logits = cell_logits(seg, val.images, flip=False)
    grid = [{"method": "guided", "radius": r, "eps": e} for r in (2, 3, 4, 5, 6, 8) for e in (1e-4, 1e-3)]
    grid += [{"method": "bilateral", "radius": r, "sigma_color": c} for r in (3, 5) for c in (0.1, 0.2)]
    rows = []
    for params in tqdm(grid, desc="refinement parameters (val)", leave=False):
        iou, thr = best_threshold_iou(probability(logits, val.images, params), val.alpha)
        rows.append({**params, "val_best_iou": round(iou, 4), "at_threshold": thr})
    base_iou, base_thr = best_threshold_iou(probability(logits, val.images, None), val.alpha)
    rows.append({"method": "none", "val_best_iou": round(base_iou, 4), "at_threshold": base_thr})
    chosen = {}
    for method in ("guided", "bilateral"):
        best = max((r for r in rows if r["method"] == method), key=lambda r: r["val_best_iou"])
        chosen[method] = {k: v for k, v in best.items() if k not in ("val_best_iou", "at_threshold")}
    return chosen, rows


def evaluate_seed(args, splits, seed: int, chosen: dict, edge_refiner: EdgeRefiner) -> dict:
    seg, val_ids = finetuned(args, splits, seed)
    test, train = splits.test, splits.train
    calib_images = train.images[val_ids]
    calib_grids = dense_to_patch_grid(train.alpha[val_ids], seg.grid_size, 0.25)
    out: dict[str, dict] = {}
    logit_sets = {
        "plain": (cell_logits(seg, test.images, flip=False), cell_logits(seg, calib_images, flip=False)),
        "flip": (cell_logits(seg, test.images, flip=True), cell_logits(seg, calib_images, flip=True)),
        "input256": (cell_logits(seg, test.images, flip=False, input_size=256),
                     cell_logits(seg, calib_images, flip=False, input_size=256)),
    }
    refines = {"none": None, **chosen, "edge": edge_refiner}
    for logit_name, (test_logits, calib_logits) in logit_sets.items():
        for refine_name, params in refines.items():
            prob = probability(test_logits, test.images, params)
            calib_prob = probability(calib_logits, calib_images, params)
            threshold, _ = calibrate_threshold(calib_prob, calib_grids, criterion=args.criterion)
            parts = [p for p in (logit_name if logit_name != "plain" else "", refine_name if params else "") if p]
            name = "+".join(parts) or "baseline"
            # the edge refiner is trained as a per-pixel probability: its own threshold is 0.5
            out[name] = scores(prob, test.alpha, 0.5 if refine_name == "edge" else TIGHT_THRESHOLD)
            out[f"{name}+calibrated"] = scores(prob, test.alpha, threshold)
            iou, thr = best_threshold_iou(prob, test.alpha)
            out[f"{name}+calibrated"]["oracle_threshold_iou"] = iou
            out[f"{name}+calibrated"]["oracle_threshold"] = thr
            if name in HOLE_ROWS:  # the hole alone: ghost and area for other loose thresholds and growths
                out[name]["holes"] = {
                    f"p>{lo}, +{d} px": {"ghost": ghost_fraction(hole, test.alpha), "hole_area": hole_area(hole)}
                    for lo in (0.1, 0.2, 0.3) for d in (0, 1, 2) for hole in [loose_hole(prob, lo, d)]}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--holdout", choices=("photo", "crop"), default="photo")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=None, help="val images for choosing the refinement parameters")
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--n-labeled", type=int, default=300)
    p.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTER)
    p.add_argument("--cache-dir", default="/tmp/backswap-mask-quality", help="fine-tuned models (safetensors)")
    p.add_argument("--criterion", default="iou", choices=("iou", "f1", "balanced_accuracy"),
                   help="calibrate_threshold's agreement with the held-out patch labels")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None, help="default: benchmarks/results/mask_quality.json (photo holdout) or "
                   "mask_quality_<holdout>.json")
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--report-only", action="store_true", help="rewrite the RESULTS.md section from --out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = str(HERE / "results" / f"{setting_name(args)}.json")
    if args.report_only:
        saved = json.loads(Path(args.out).read_text())
        for key, value in saved["settings"].items():
            if key not in ("report_only", "write_results", "out"):
                setattr(args, key, value)
        cmd = ("python -m benchmarks.mask_quality " + (f"--holdout {args.holdout} " if args.holdout != "photo" else "")
               + f"--seeds {' '.join(map(str, args.seeds))} --n-val {args.n_val} --n-test {args.n_test} "
               + (f"--finetune-epochs {args.finetune_epochs} " if args.finetune_epochs != FINETUNE_EPOCHS else "")
               + f"--threads {args.threads} --write-results`; table rendered by `python -m benchmarks.mask_quality "
               + " ".join(argv if argv is not None else sys.argv[1:]))
        table = render(saved)
        print(table)
        write_results(args, saved, table, None, cmd=cmd)
        return saved
    tic = time.perf_counter()
    splits = load_splits(image_size=args.image_size, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                         background_holdout=args.holdout)
    seg0, _ = finetuned(args, splits, args.seeds[0])
    edge_refiner = EdgeRefiner.from_pretrained(DEFAULT_EDGE_REFINER)
    chosen, sweep = choose_parameters(seg0, splits.val)
    print("chosen refinement parameters (val):", chosen, flush=True)
    per_seed = {}
    for seed in tqdm(args.seeds, desc="seeds"):
        per_seed[f"seed{seed}"] = evaluate_seed(args, splits, seed, chosen, edge_refiner)
        print(f"seed {seed}: baseline {per_seed[f'seed{seed}']['baseline']}", flush=True)
    result = {"settings": vars(args), "chosen": chosen, "sweep": sweep, "runs": per_seed,
              "n_test": len(splits.test), "pack_version": getattr(splits.test, "version", None), "seconds": round(time.perf_counter() - tic, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    table = render(result)
    print(table)
    if args.write_results:
        write_results(args, result, table, argv)
    return result


def render(result: dict) -> str:
    """Markdown tables: one row per variant (mean ± 95 % t-interval over seeds; ΔIoU is paired per seed against
    ``baseline``), then the hole alone at other loose thresholds."""
    runs = result["runs"]
    names = list(next(iter(runs.values())))
    head = ("| variant | tight threshold | tight-mask IoU | Δ IoU vs baseline (paired) | boundary F (1 px) "
            "| ghost % of object | hole % of image | oracle-threshold IoU |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]

    def fmt(vals: list[float], digits: int) -> str:
        if not vals:
            return "–"
        mean, half = mean_ci(vals)
        return f"{mean:.{digits}f} ± {half:.{digits}f}" if len(vals) > 1 else f"{mean:.{digits}f}"

    for name in names:
        def cell(key: str, scale: float = 1.0, digits: int = 3, name: str = name) -> str:
            return fmt([r[name][key] * scale for r in runs.values() if key in r[name]], digits)
        delta = fmt([r[name]["tight_iou"] - r["baseline"]["tight_iou"] for r in runs.values()], 3)
        lines.append(f"| {name} | {cell('tight_threshold', digits=2)} | {cell('tight_iou')} | {delta} | "
                     f"{cell('boundary_f')} | {cell('ghost', 100, 2)} | {cell('hole_area', 100, 1)} | "
                     f"{cell('oracle_threshold_iou')} |")
    lines += ["", "The hole alone (`loose_hole(probability, p, growth)`), same images:", "",
              "| probability route | hole | ghost % of object | hole % of image |", "|---|---|---|---|"]
    for name in HOLE_ROWS:
        first = next(iter(runs.values()))[name].get("holes", {})
        for hole in first:
            ghost = fmt([r[name]["holes"][hole]["ghost"] * 100 for r in runs.values()], 2)
            area = fmt([r[name]["holes"][hole]["hole_area"] * 100 for r in runs.values()], 1)
            lines.append(f"| {name} | {hole} | {ghost} | {area} |")
    return "\n".join(lines)


def targets(result: dict) -> str:
    """The issue's targets, met or not, for the recommended route (:data:`RECOMMENDED`)."""
    runs = result["runs"].values()
    iou, iou_half = mean_ci([r[RECOMMENDED[0]]["tight_iou"] for r in runs])
    ghost, ghost_half = mean_ci([100 * r[RECOMMENDED[1]]["holes"][RECOMMENDED[2]]["ghost"] for r in runs])
    area, _ = mean_ci([100 * r[RECOMMENDED[1]]["holes"][RECOMMENDED[2]]["hole_area"] for r in runs])
    base, _ = mean_ci([100 * r["baseline"]["hole_area"] for r in runs])
    probability_route = RECOMMENDED[0].removesuffix("+calibrated")  # the "+calibrated" row carries the oracle column
    oracle, _ = mean_ci([r[f"{probability_route}+calibrated"]["oracle_threshold_iou"] for r in runs])
    return (f"**Targets** (recommended route: `{RECOMMENDED[0]}` for the cut-out, hole `{RECOMMENDED[2]}` of the "
            f"`{RECOMMENDED[1]}` probability): tight-mask IoU ≥ 0.80 – **{'met' if iou >= 0.80 else 'NOT met'}** "
            f"({iou:.3f} ± {iou_half:.3f}); ghost pixels ≤ 2 % of the object – "
            f"**{'met' if ghost <= 2 else 'NOT met'}** ({ghost:.2f} ± {ghost_half:.2f} %, with a hole of {area:.1f} % "
            f"of the image against {base:.1f} % for today's p > 0.1 hole)."
            + ("" if iou >= 0.80 else f" Why the IoU falls short: the best threshold chosen on the test alpha itself "
               f"reaches {oracle:.3f} for the same probability (oracle column), so what remains is the patch "
               "prediction itself (which cells are object), not the upsampling or the threshold."))


def render_section(result: dict, machine: str = "") -> str:
    """The whole RESULTS.md section of one results file, from the JSON alone (``machine``: the date/machine line)."""
    args = argparse.Namespace(**{"criterion": "iou", **result["settings"]})
    cmd = ("python -m benchmarks.mask_quality " + (f"--holdout {args.holdout} " if args.holdout != "photo" else "")
           + f"--seeds {' '.join(map(str, args.seeds))} --n-val {args.n_val} --n-test {args.n_test} "
           + (f"--finetune-epochs {args.finetune_epochs} " if args.finetune_epochs != FINETUNE_EPOCHS else "")
           + f"--threads {args.threads} --write-results`; rendered by `python -m benchmarks.report")
    return section_markdown(args, result, render(result), cmd, machine)


def write_results(args, result: dict, table: str, argv, cmd: str | None = None) -> None:
    from benchmarks._common import loadavg, machine_line, write_section

    if cmd is None:
        cmd = "python -m benchmarks.mask_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section(setting_name(args), section_markdown(args, result, table, cmd,
                                                       machine_line() + f"; load average {loadavg()}"))


def section_markdown(args, result: dict, table: str, cmd: str, machine: str) -> str:
    chosen = ", ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in p.items() if k != "method")
                       for m, p in result["chosen"].items())
    title = (f"## Mask quality: refinement of the learned cut-out (StampBirds {args.image_size} px, "
             f"backgrounds held out by {args.holdout}"
             + (f", fine-tune {args.finetune_epochs} epochs" if args.finetune_epochs != FINETUNE_EPOCHS else "") + ")")
    setup = (f"The bundled segmenter fine-tuned on {args.n_labeled} simulated patch labels ({args.finetune_epochs} "
             f"epochs), one model per seed ({len(result['runs'])} seeds: {', '.join(result['runs'])}); every row "
             f"scores the same {result['n_test']} test images against the exact alpha; mean ± 95 % t-interval over "
             f"seeds. Boundary F tolerance {TOLERANCE} px. Hole = p > {LOOSE_THRESHOLD} in the first table. "
             f"`calibrated` = tight threshold maximising the cell {args.criterion} of the re-gridded mask (cells "
             "≥ 25 % covered) against the labelled images the fine-tune held out (patch labels only, 60 images). "
             f"StampBirds pack version {result.get('pack_version')}. Refinement parameters chosen on val: "
             f"{chosen}. The oracle-threshold IoU (best threshold on test) is a ceiling, not a usable setting.")
    md = [title, "", f"`{cmd}`", "", machine, "", setup, "", table, "", targets(result)]
    if args.holdout == "crop":
        from benchmarks.robustness import CROP_CONFOUND

        md += ["", f"**Confound:** {CROP_CONFOUND}"]
    return "\n".join(md)


if __name__ == "__main__":
    main()
