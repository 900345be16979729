"""Does the label-free BG-gap find background reliance? ERM vs BackSwap on StampBirds, over seeds.

Run from the repository root::

    python -m benchmarks.diagnose_stampbirds --seeds 0 1 2 --threads 1

For each seed it trains a classifier with ERM, with BackSwap (segmenter fine-tuned on simulated patch
labels, learned bank) and with the oracle swap (true alpha), at 100 % train correlation, then measures
:func:`torch_backswap.diagnose.background_gap` on the test split: each test bird (its true alpha) is pasted
without jitter on backgrounds of its own class and of the other class from a *diagnostic bank* — the
true backgrounds of a fresh train-distribution draw (another data seed, so no classifier saw them), where
class and place coincide. No group label is used by the diagnostic; the test split's group labels only
score the worst-group accuracy it is compared with.

Runs are cached in ``benchmarks/results/diagnose_stampbirds.json`` (an interrupted run resumes); the
section ``diagnose_stampbirds`` of ``benchmarks/RESULTS.md`` is rendered from all cached runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from benchmarks._common import loadavg, machine_line, write_section
from benchmarks._harness import segment_images
from torch_backswap._io import atomic_write_text
from torch_backswap.bank import BackgroundBank
from torch_backswap.datasets import StampBirds
from torch_backswap.build import build_bank
from torch_backswap.datasets.stampbirds import LATEST_VERSION
from torch_backswap.demo import load_splits, simulated_patch_labels, train_and_evaluate
from torch_backswap.diagnose import background_gap, mean_interval
from torch_backswap.finetune import finetune_segmenter
from torch_backswap.hub import DEFAULT_SEGMENTER
from torch_backswap.segmenter import PatchSegmenter
from torch_backswap.transform import BackgroundSwap

HERE = Path(__file__).resolve().parent
METHODS = ("erm", "backswap", "backswap_gt")


def _setting(a: argparse.Namespace) -> str:
    return (f"{a.image_size}px_n{a.n_train}_e{a.epochs}_ft{a.finetune_epochs}_l{a.n_labeled}_{a.holdout}"
            f"_pack{LATEST_VERSION}")


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else float("nan")


def _ranks(x: list[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def run(args: argparse.Namespace) -> dict:
    path = Path(args.out_dir) / "results" / "diagnose_stampbirds.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    setting = _setting(args)
    records.setdefault(setting, {})
    splits = load_splits(image_size=args.image_size, correlation=1.0, n_train=args.n_train,
                         seed=args.data_seed, background_holdout=args.holdout)
    fresh = StampBirds(split="train", image_size=args.image_size, correlation=1.0, n=args.bank_size,
                       seed=args.data_seed + 1000, background_holdout=args.holdout)
    diag_bank = BackgroundBank(fresh.true_backgrounds, fresh.labels, classes=fresh.classes)
    for seed in args.seeds:
        todo = [m for m in args.methods if f"{m}/seed{seed}" not in records[setting]]
        if not todo:
            continue
        swap = None
        for method in todo:
            tic = time.perf_counter()
            if method == "erm":
                model, result = train_and_evaluate(splits, epochs=args.epochs, seed=seed, progress=args.progress,
                                                   desc=f"erm s{seed}")
            else:
                if method == "backswap":
                    idx, labels = simulated_patch_labels(splits.train.alpha, args.n_labeled, seed=seed)
                    base = PatchSegmenter.from_pretrained(DEFAULT_SEGMENTER)
                    seg, _ = finetune_segmenter(base, splits.train.images[idx], labels, epochs=args.finetune_epochs,
                                                seed=seed, progress=args.progress)
                    _, tight, loose = segment_images(seg, splits.train.images)
                else:
                    tight = splits.train.alpha
                    loose = torch.nn.functional.max_pool2d((splits.train.alpha > 0.05).float(), 5, 1, 2) > 0.5
                bank = build_bank(splits.train.images, splits.train.labels, holes=loose,
                                  classes=splits.train.classes, progress=args.progress)
                swap = BackgroundSwap(bank, seed=seed)
                model, result = train_and_evaluate(splits, swap=swap, alphas=tight, epochs=args.epochs, seed=seed,
                                                   progress=args.progress, desc=f"{method} s{seed}")
            gap = background_gap(model, splits.test, diag_bank, draws=args.draws, seed=seed, progress=args.progress)
            record = {
                "average": result["average"], "worst_group": result["worst_group"],
                "groups": {str(k): v for k, v in result["groups"].items()},
                "bg_gap": gap.as_dict(), "seconds": time.perf_counter() - tic,
            }
            records[setting][f"{method}/seed{seed}"] = record
            on_disk = json.loads(path.read_text()) if path.exists() else {}  # keep runs written meanwhile
            for key, runs in on_disk.items():
                records[key] = {**runs, **records.get(key, {})}
            atomic_write_text(path, json.dumps(records, indent=1, sort_keys=True))
            print(f"{method} seed {seed}: worst group {record['worst_group']:.3f}; {gap}", flush=True)
    return records[setting]


def render_cached(data: dict, setting: str = "64px_n1200_e5_ft4_l150_crop_pack2", machine: str = "") -> str:
    """The RESULTS.md section from the JSON alone (``data``: diagnose_stampbirds.json; ``setting``: its key)."""
    runs = data[setting]
    p = _parser()
    args = p.parse_args(["--report-only"])
    import re

    m = re.fullmatch(r"(\d+)px_n(\d+)_e(\d+)_ft(\d+)_l(\d+)_(photo|crop)_pack\d+", setting)
    args.image_size, args.n_train, args.epochs, args.finetune_epochs, args.n_labeled = map(int, m.groups()[:5])
    args.holdout = m.group(6)
    args.seeds = sorted({int(k.split("seed")[1]) for k in runs})
    assert _setting(args) == setting, (_setting(args), setting)
    text = render(args, runs, "", "", 0.0, machine=machine)
    if args.holdout == "crop":
        from benchmarks.robustness import CROP_CONFOUND

        text += f"\n\n**Confound:** {CROP_CONFOUND}"
    return text


def render(args: argparse.Namespace, runs: dict, load_start: str, load_end: str, seconds: float,
           machine: str | None = None) -> str:
    cmd = ("python -m benchmarks.diagnose_stampbirds --seeds " + " ".join(map(str, args.seeds))
           + f" --n-train {args.n_train} --epochs {args.epochs} --finetune-epochs {args.finetune_epochs}"
           + f" --n-labeled {args.n_labeled} --holdout {args.holdout} --draws {args.draws} --threads {args.threads}")
    lines = [
        "## Diagnostic: label-free BG-gap vs group-label worst-group accuracy (StampBirds)",
        "",
        f"`{cmd}`",
        "",
        (machine_line() if machine is None else machine) + (f"; rendered from the cached runs (each ran as the command above with its own --seeds / "
                          "--methods, 1 thread, 2–3 jobs sharing 2 CPU cores with other agents' work, load average "
                          "about 9–17); minutes per run are in the table." if args.report_only else
                          f"; load average (1/5/15 min) {load_start} at start, {load_end} at end; "
                          f"{seconds / 60:.1f} min wall for the runs made by this invocation."),
        "",
        f"Fast settings (the machine is 2 shared CPU cores): StampBirds (bundled pack v{LATEST_VERSION}) "
        f"{args.image_size}px, train correlation 1.0, "
        f"{args.n_train} train images, backgrounds held out by {args.holdout}; `small_cnn` from scratch, "
        f"{args.epochs} epochs; BackSwap's segmenter fine-tuned for {args.finetune_epochs} epochs on "
        f"{args.n_labeled} simulated patch labels. Diagnostic: `background_gap(model, test, bank, draws={args.draws})` "
        f"with the test birds' true alpha and a bank of {args.bank_size} true backgrounds from a fresh train-"
        "distribution draw (data seed +1000; class = place there). The BG-gap is own-class minus other-class "
        "accuracy; its interval is the paired t-interval over test samples (95 %). Method rows: mean ± 95 % "
        "t-interval over seeds.",
        "",
        "| method | seeds | original acc. | own-class bg | other-class bg | **BG-gap** | worst group (group labels) | average "
        "| min / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(values: list[float]) -> str:
        m, lo, hi = mean_interval(torch.tensor(values))
        return f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} ± {(hi - lo) / 2:.3f}"

    for method in METHODS:
        rs = [r for k, r in sorted(runs.items()) if k.split("/")[0] == method]
        if not rs:
            continue
        g = [r["bg_gap"] for r in rs]
        lines.append(
            f"| {method} | {len(rs)} | {fmt([x['original_accuracy'] for x in g])} | "
            f"{fmt([x['own_accuracy'] for x in g])} | {fmt([x['other_accuracy'] for x in g])} | "
            f"**{fmt([x['gap'] for x in g])}** | {fmt([r['worst_group'] for r in rs])} | "
            f"{fmt([r['average'] for r in rs])} | {statistics.fmean(r['seconds'] for r in rs) / 60:.1f} |")
    lines += ["", "Every run (BG-gap with its own 95 % interval over the test samples):", "",
              "| run | BG-gap [95 % CI] | worst group | average − worst group |", "|---|---|---|---|"]
    gaps, wgas, spreads = [], [], []
    for key, r in sorted(runs.items()):
        b = r["bg_gap"]
        gaps.append(b["gap"])
        wgas.append(r["worst_group"])
        spreads.append(r["average"] - r["worst_group"])
        lines.append(f"| {key} | {b['gap']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}] | {r['worst_group']:.3f} | "
                     f"{spreads[-1]:.3f} |")
    if len(gaps) >= 3:
        lines += [
            "",
            f"Agreement over the {len(gaps)} runs: Pearson r(BG-gap, worst-group acc.) = {_pearson(gaps, wgas):+.2f}, "
            f"Spearman ρ = {_pearson(_ranks(gaps), _ranks(wgas)):+.2f}; r(BG-gap, average − worst group) = "
            f"{_pearson(gaps, spreads):+.2f}. A negative r with the worst group means a bigger BG-gap goes with a "
            "worse worst group.",
        ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--n-labeled", type=int, default=200)
    p.add_argument("--holdout", choices=["photo", "crop"], default="crop")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--bank-size", type=int, default=600)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--report-only", action="store_true", help="render RESULTS.md from the cached runs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start, tic = loadavg(), time.perf_counter()
    if args.report_only:
        path = Path(args.out_dir) / "results" / "diagnose_stampbirds.json"
        runs = json.loads(path.read_text()).get(_setting(args), {})
    else:
        runs = run(args)
    text = render(args, runs, load_start, loadavg(), time.perf_counter() - tic)
    if Path(args.out_dir) == HERE:
        write_section("diagnose_stampbirds", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
