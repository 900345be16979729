"""Accuracy harness: worst-group accuracy of ERM, baselines and BackSwap on StampBirds.

Run from the repository root (a full run is long; results are cached per run, so an interrupted run
resumes where it stopped, and several invocations add up)::

    python -m benchmarks.robustness --seeds 0 1 2

Methods (``--methods``):

* ``erm`` — plain training; ``erm_aug`` — ERM + RandAugment;
* ``backswap`` — the full pipeline: 300 patch-labelled training images (labels from the true alpha, a
  simulated person), the bundled segmenter fine-tuned on them, a bank built with the default (pyramid)
  inpainter, :class:`BackgroundSwap` on every training batch;
* ``backswap_gt`` — the same swap with the true alpha as cut-out and (dilated) hole: the oracle ceiling;
* ``gray``, ``mean``, ``noise``, ``scramble_patches`` — the infill ablation (learned masks, other fills);
* ``gt_cut`` / ``gt_bank`` — where the gap to the oracle comes from: the true alpha as cut-out with the
  learned bank, or the learned cut-out with the oracle's bank;
* ``groupdro``, ``dfr`` (and ``erm@0.95``) — group-label baselines. They need minority samples, so they
  run at train correlation 0.95 (``--minority-correlation``); everything else at ``--correlation``.

Writes ``benchmarks/results/robustness_<setting>.json`` (every run), its section of
``benchmarks/RESULTS.md`` and ``benchmarks/figures/robustness_<setting>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent

from benchmarks._common import machine_line, write_section

from torch_backswap.build import build_bank  # noqa: E402
from torch_backswap.experiments.classifier import evaluate_groups, fit_last_layer_dfr  # noqa: E402
from torch_backswap.experiments.pipeline import (  # noqa: E402
    GROUP_NAMES,
    load_splits,
    segment_images,
    segmenter_quality,
    simulated_patch_labels,
    train_and_evaluate,
)
from torch_backswap.finetune import finetune_segmenter  # noqa: E402
from torch_backswap.hub import DEFAULT_SEGMENTER  # noqa: E402
from torch_backswap.segmenter import TIGHT_THRESHOLD, PatchSegmenter  # noqa: E402
from torch_backswap.transform import BackgroundSwap  # noqa: E402

SWAP_METHODS = {"backswap": "pyramid", "gray": "gray", "mean": "mean", "noise": "noise",
                "scramble_patches": "scramble_patches"}
MINORITY_METHODS = ("erm@0.95", "groupdro", "dfr")
ALL_METHODS = ("erm", "erm_aug", "backswap", "backswap_gt", *[m for m in SWAP_METHODS if m != "backswap"],
               "gt_cut", "gt_bank", *MINORITY_METHODS)


def hole_psnr(filled: torch.Tensor, truth: torch.Tensor, holes: torch.Tensor) -> float:
    """PSNR (dB) of uint8 ``filled`` against ``truth`` over the hole pixels only."""
    h = holes.expand_as(filled)
    if not bool(h.any()):
        return float("nan")
    diff = (filled.float() - truth.float())[h]
    mse = float((diff**2).mean())
    return 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-12))).item()


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.setting = f"{args.image_size}px_corr{args.correlation}_{args.holdout}"
        if args.tight_threshold != TIGHT_THRESHOLD:
            self.setting += f"_tight{args.tight_threshold}"
        self.out = Path(args.out_dir) if args.out_dir else HERE
        self.path = self.out / "results" / f"robustness_{self.setting}.json"
        self.records = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._splits: dict[float, object] = {}
        self._masks: dict[int, tuple] = {}

    def save(self) -> None:
        """Write the results file, keeping runs that another invocation wrote meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records = {**on_disk, **self.records}
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.records, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def splits(self, correlation: float):
        if correlation not in self._splits:
            a = self.args
            self._splits[correlation] = load_splits(
                image_size=a.image_size, correlation=correlation, n_train=a.n_train, seed=a.data_seed,
                background_holdout=a.holdout)
        return self._splits[correlation]

    def learned_masks(self, seed: int):
        """Fine-tune the bundled segmenter on 300 simulated patch labels; tight alpha + loose holes of train."""
        if seed not in self._masks:
            a, splits = self.args, self.splits(self.args.correlation)
            idx, labels = simulated_patch_labels(splits.train.alpha, a.n_labeled, seed=seed)
            base = PatchSegmenter.from_pretrained(a.segmenter)
            seg, history = finetune_segmenter(base, splits.train.images[idx], labels, epochs=a.finetune_epochs,
                                              seed=seed, progress=a.progress)
            _, tight, loose = segment_images(seg, splits.train.images, tight_threshold=a.tight_threshold)
            quality = {
                "zero_shot_test": segmenter_quality(base, splits.test.images, splits.test.alpha),
                "finetuned_test": segmenter_quality(seg, splits.test.images, splits.test.alpha),
                "finetune_val_balanced_accuracy": max(h["val_balanced_accuracy"] for h in history),
            }
            self._masks[seed] = (tight, loose, quality)
        return self._masks[seed]

    def run(self, method: str, seed: int) -> dict:
        a = self.args
        correlation = a.minority_correlation if method in MINORITY_METHODS else a.correlation
        splits = self.splits(correlation)
        common = dict(epochs=a.epochs, seed=seed, classifier=a.classifier, progress=a.progress,
                      desc=f"{method} s{seed}")
        extra: dict = {"correlation": correlation}
        if method in ("erm", "erm@0.95"):
            _, r = train_and_evaluate(splits, **common)
        elif method == "erm_aug":
            _, r = train_and_evaluate(splits, randaugment=True, **common)
        elif method == "groupdro":
            _, r = train_and_evaluate(splits, group_dro=True, **common)
        elif method == "dfr":
            model, _ = train_and_evaluate(splits, **common)
            fit_last_layer_dfr(model, splits.val.images, splits.val.labels, splits.val.groups, seed=seed)
            r = evaluate_groups(model, splits.test.images, splits.test.labels, splits.test.groups)
        elif method in SWAP_METHODS or method in ("backswap_gt", "gt_cut", "gt_bank"):
            true_tight = splits.train.alpha
            # The oracle's loose hole: the true object dilated by ~1/32 of the image side (like p > 0.1 would).
            k = 2 * max(1, a.image_size // 32) + 1
            true_loose = F.max_pool2d((true_tight > 0.05).float(), k, stride=1, padding=k // 2) > 0.5
            inpainter = SWAP_METHODS.get(method, "pyramid")
            if method == "backswap_gt":
                tight, loose = true_tight, true_loose
            else:
                tight, loose, quality = self.learned_masks(seed)
                extra["segmenter"] = quality
                if method == "gt_cut":
                    tight = true_tight
                elif method == "gt_bank":
                    loose = true_loose
            t0 = time.perf_counter()
            bank = build_bank(splits.train.images, splits.train.labels, holes=loose, inpainter=inpainter,
                                        classes=splits.train.classes, progress=False)
            extra["bank_seconds"] = time.perf_counter() - t0
            extra["bank_hole_psnr_db"] = hole_psnr(bank.backgrounds, splits.train.true_backgrounds, loose)
            extra["tight_mask_iou_train"] = float(
                ((tight > 0.5) & (splits.train.alpha > 0.5)).sum() / ((tight > 0.5) | (splits.train.alpha > 0.5)).sum())
            swap = BackgroundSwap(bank, seed=seed)
            _, r = train_and_evaluate(splits, swap=swap, alphas=tight, **common)
        else:
            raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
        r = {k: v for k, v in r.items() if k != "history"}
        r["groups"] = {str(k): v for k, v in r["groups"].items()}
        r.update(extra)
        return r

    def __call__(self) -> None:
        a = self.args
        for seed in a.seeds:
            for method in a.methods:
                key = f"{method}/seed{seed}"
                if key in self.records and not a.force:
                    continue
                t0 = time.perf_counter()
                record = self.run(method, seed)
                record["seconds"] = time.perf_counter() - t0
                self.records[key] = record
                self.save()
                print(f"{key}: worst-group {record['worst_group']:.3f}, average {record['average']:.3f} "
                      f"({record['seconds']:.0f}s)", flush=True)
        self.report()

    def report(self) -> None:
        a = self.args
        rows, plot = [], []
        for method in ALL_METHODS:
            runs = [v for k, v in self.records.items() if k.split("/")[0] == method]
            if not runs:
                continue

            def ms(values):
                values = list(values)
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return statistics.mean(values), sd

            wg, avg = ms(r["worst_group"] for r in runs), ms(r["average"] for r in runs)
            groups = " | ".join(f"{statistics.mean(r['groups'][str(g)] for r in runs):.3f}" for g in GROUP_NAMES)
            psnr = [r["bank_hole_psnr_db"] for r in runs if "bank_hole_psnr_db" in r]
            iou = [r["tight_mask_iou_train"] for r in runs if "tight_mask_iou_train" in r]
            psnr_s = f"{statistics.mean(psnr):.1f}" if psnr else "–"
            iou_s = f"{statistics.mean(iou):.3f}" if iou else "–"
            rows.append(f"| {method} | {runs[0]['correlation']} | {len(runs)} | {avg[0]:.3f} ± {avg[1]:.3f} | "
                        f"**{wg[0]:.3f} ± {wg[1]:.3f}** | {groups} | {psnr_s} | {iou_s} |")
            plot.append((method, wg[0], wg[1], avg[0]))
        seg_rows = []
        for k, v in sorted(self.records.items()):
            if k.startswith("backswap/") and "segmenter" in v:
                q = v["segmenter"]
                seg_rows.append(
                    f"| {k.split('/')[1]} | {q['zero_shot_test']['patch_balanced_accuracy']:.3f} | "
                    f"{q['finetuned_test']['patch_balanced_accuracy']:.3f} | {q['zero_shot_test']['tight_mask_iou']:.3f} | "
                    f"{q['finetuned_test']['tight_mask_iou']:.3f} | {q['finetune_val_balanced_accuracy']:.3f} |")
        cmd = "python -m benchmarks.robustness " + " ".join(sys.argv[1:])
        md = [
            f"## Robustness: StampBirds {a.image_size}px, train correlation {a.correlation} "
            f"(group-label baselines at {a.minority_correlation}), backgrounds held out by {a.holdout}",
            "", f"Rendered by `{cmd}` from the runs cached in `{self.path.relative_to(self.out).as_posix()}`; each row's "
            f"runs come from `python -m benchmarks.robustness --holdout {a.holdout}"
            + (f" --tight-threshold {a.tight_threshold}" if a.tight_threshold != TIGHT_THRESHOLD else "")
            + " --seeds <seeds> --methods <method> --threads 1` (the seed count is in the table).",
            "", machine_line(), "",
            f"Classifier `{a.classifier}` from scratch, {a.epochs} epochs, {a.n_train or 3000} train images; "
            f"test = group-balanced, {'held-out background photos' if a.holdout == 'photo' else 'crops of the training photos'}. "
            f"mean ± std over seeds; groups are class/background.",
            "",
            "| method | train corr. | seeds | average | worst group | " + " | ".join(GROUP_NAMES.values())
            + " | bank hole PSNR (dB) | tight-mask IoU (train) |",
            "|" + "---|" * (8 + len(GROUP_NAMES) - 1),
            *rows,
        ]
        if seg_rows:
            md += ["", f"Segmenter (bundled `{a.segmenter}`, fine-tuned on {a.n_labeled} simulated patch labels, "
                   f"{a.finetune_epochs} epochs), on the test split:", "",
                   "| seed | patch bal. acc. zero-shot | fine-tuned | tight IoU zero-shot | fine-tuned | fine-tune val bal. acc. |",
                   "|---|---|---|---|---|---|", *seg_rows]
        fig = self.out / "figures" / f"robustness_{self.setting}.png"
        if plot:
            self.bar_plot(plot, fig)
            md += ["", f"![worst-group accuracy](figures/{fig.name})"]
        if self.out == HERE:
            write_section(f"robustness_{self.setting}", "\n".join(md))
        print("\n".join(md))

    def bar_plot(self, plot, path: Path) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)")
            return
        names, wg, sd, avg = zip(*plot)
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 3.6))
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], avg, 0.4, label="average", color="#9ab")
        ax.bar([x + 0.2 for x in xs], wg, 0.4, yerr=sd, capsize=3, label="worst group", color="#d63")
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"StampBirds {self.args.image_size}px, train correlation {self.args.correlation} "
                     f"(group-label baselines {self.args.minority_correlation}), test backgrounds: {self.args.holdout}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--correlation", type=float, default=1.0)
    p.add_argument("--minority-correlation", type=float, default=0.95)
    p.add_argument("--holdout", choices=("photo", "crop"), default="photo")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-labeled", type=int, default=300)
    p.add_argument("--finetune-epochs", type=int, default=12)
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTER)
    p.add_argument("--tight-threshold", type=float, default=TIGHT_THRESHOLD,
                   help="foreground probability of the learned cut-out (paper: 0.67); other values get their own results file")
    p.add_argument("--classifier", default="small_cnn", choices=("small_cnn", "resnet18"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="rerun runs already in the results file")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out-dir", default=None,
                   help="write results/figures here instead of benchmarks/ (and leave RESULTS.md alone)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = Runner(args)
    if args.report_only:
        runner.report()
    else:
        runner()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
