"""Accuracy harness: worst-group accuracy of ERM, baselines and BackSwap on StampBirds.

Run from the repository root (a full run is long; results are cached per run, so an interrupted run
resumes where it stopped, and several invocations add up)::

    python -m benchmarks.robustness --seeds 0 1 2

The two settings (``--holdout photo``: test backgrounds from held-out photos; ``crop``: held-out crops of the
training photos) train on the same images and differ only in val and test, so ``--holdout crop photo`` trains
each run once and scores it in both (each setting keeps the epoch its own val split selects; the records equal
those of single-setting runs) — half the compute for both results files.

Methods (``--methods``):

* ``erm`` — plain training; ``erm_aug`` — ERM + RandAugment;
* ``backswap`` — the full pipeline: 300 patch-labelled training images (labels from the true alpha, a
  simulated person), the bundled segmenter fine-tuned on them, a bank built with the default (pyramid)
  inpainter, :class:`BackgroundSwap` on every training batch;
* ``backswap_gt`` — the same swap with the true alpha as cut-out and (dilated) hole: the oracle ceiling;
* ``backswap_refined`` — ``backswap`` with the refined cut-out (:mod:`torch_backswap.refine`): flip-averaged
  logits, guided filter with the image as guide, tight threshold calibrated on the labelled images the
  fine-tune held out, hole = refined p > 0.2 grown image side / 32 px, 2 px at 64 px (the ``mask_quality``
  benchmark's recommendation);
* ``backswap_edge`` — ``backswap`` with the learned edge refiner (:class:`~torch_backswap.EdgeRefiner`, bundled
  ``edgerefine-tiny``) on the flip-averaged probability: cut-out p > 0.5 (the refiner is trained as a calibrated
  per-pixel probability; no threshold is fitted), hole = refined p > 0.2 grown image side / 32 px;
* ``edge_cut`` — the edge route split in two: ``backswap_edge``'s cut-out with ``backswap``'s (the paper's) bank,
  so ``edge_cut`` − ``backswap`` is what the edge cut-out brings and ``backswap_edge`` − ``edge_cut`` what its
  bank (the tighter hole) brings;
* ``gray``, ``mean``, ``noise``, ``scramble_patches`` — the infill ablation (learned masks, other fills);
* ``gt_cut`` / ``gt_bank`` — where the gap to the oracle comes from: the true alpha as cut-out with the
  learned bank, or the learned cut-out with the oracle's bank;
* ``gt_soft`` / ``gt_rim`` — the oracle with the edge of its cut-out changed (probes of why a learned cut-out can
  beat it on held-out photos): the true alpha Gaussian-blurred (σ = r) or grown by r px with a hard edge (a rim
  of the source background comes along), r = image side / 32 (2 px at 64 px); the oracle's bank;
* ``gt_trim`` — the learned cut-out trimmed to the true object (learned × true alpha: the learned shape errors
  inside the object, no rim of source background), with the oracle's bank;
* ``groupdro``, ``dfr`` (and ``erm@0.95``) — group-label baselines. They need minority samples, so they
  run at train correlation 0.95 (``--minority-correlation``); everything else at ``--correlation``.

Writes ``benchmarks/results/robustness_<setting>.json`` (every run), its section of
``benchmarks/RESULTS.md`` and ``benchmarks/figures/robustness_<setting>.png``. The setting is
``<size>px_corr<correlation>_<photo|crop>[_tight<t>][_v<pack version>]``: the StampBirds pack version 2 (more
held-out photos, the default) gets ``_v2``; ``--pack-version 1`` reproduces the version-1 files.

Every run records the test accuracy per background photo (``photos``), the run configuration and the git
commit (plus the hashes of the uncommitted source files it ran with). Tables give mean ± the 95 %
t-interval half-width over seeds (``t_{0.975, n-1} * s / sqrt(n)``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import kornia
import torch

HERE = Path(__file__).resolve().parent

from benchmarks._common import dilate, machine_line, mean_ci, write_section
from benchmarks._harness import cut_out_batches, fit_class_bias, fit_last_layer_dfr, segment_images

from torch_backswap.build import build_bank  # noqa: E402
from torch_backswap.cutout import CutOut  # noqa: E402
from torch_backswap.edge_refiner import DEFAULT_EDGE_REFINER, EdgeRefiner  # noqa: E402
from torch_backswap._io import atomic_write_text  # noqa: E402
from torch_backswap.datasets import StampBirds  # noqa: E402
from torch_backswap.classifiers import evaluate_groups, predict  # noqa: E402
from torch_backswap.demo import (  # noqa: E402
    GROUP_NAMES,
    StampBirdsSplits,
    segmenter_quality,
    simulated_patch_labels,
    train_and_evaluate,
)
from torch_backswap.finetune import finetune_segmenter  # noqa: E402
from torch_backswap.labels import dense_to_patch_grid  # noqa: E402
from torch_backswap.metrics import group_accuracies, mask_iou  # noqa: E402
from torch_backswap.refine import (  # noqa: E402
    REFINED_HOLE_THRESHOLD,
    REFINED_TIGHT_THRESHOLD,
    calibrate_threshold,
    cut_out_probability,
    hole_growth,
    loose_hole,
)
from torch_backswap.hub import DEFAULT_SEGMENTER  # noqa: E402
from torch_backswap.segmenter import TIGHT_THRESHOLD, PatchSegmenter  # noqa: E402
from torch_backswap.transform import BackgroundSwap  # noqa: E402

SWAP_METHODS = {"backswap": "pyramid", "gray": "gray", "mean": "mean", "noise": "noise",
                "scramble_patches": "scramble_patches"}
MINORITY_METHODS = ("erm@0.95", "groupdro", "dfr")
EDGE_PROBES = ("gt_soft", "gt_rim")
# Swap runs other than the infill ablation: the oracle, the refined cut-out, the attribution and the probes.
OTHER_SWAPS = ("backswap_gt", "backswap_refined", "backswap_edge", "edge_cut", "gt_cut", "gt_bank", *EDGE_PROBES,
               "gt_trim")
# Swap runs that use the fine-tuned segmenter's masks (their records carry its test quality).
LEARNED_MASK_METHODS = (*SWAP_METHODS, "backswap_refined", "backswap_edge", "edge_cut", "gt_cut", "gt_bank", "gt_trim")
# The cut-out route of each learned-mask method (train_masks): the paper's, the guided filter's, the edge refiner's.
MASK_ROUTE = {"backswap_refined": "refined", "backswap_edge": "edge", "edge_cut": "edge"}
ALL_METHODS = ("erm", "erm_aug", "backswap", "backswap_gt", "backswap_refined", "backswap_edge", "edge_cut",
               *[m for m in SWAP_METHODS if m != "backswap"], "gt_cut", "gt_bank", *EDGE_PROBES, "gt_trim",
               *MINORITY_METHODS)


MAIN_METHODS = ("erm", "backswap", "backswap_gt")
INFILL_METHODS = ("backswap", "gray", "mean", "noise", "scramble_patches")
# Source files whose content decides a run's figures (hashed into each record next to the git commit).
CODE_FILES = ("benchmarks/robustness.py", "benchmarks/_harness.py", "torch_backswap/demo.py",
              "torch_backswap/classifiers.py", "torch_backswap/transform.py", "torch_backswap/functional.py",
              "torch_backswap/build.py", "torch_backswap/inpaint.py", "torch_backswap/finetune.py",
              "torch_backswap/segmenter.py", "torch_backswap/datasets/stampbirds.py",
              "torch_backswap/datasets/stamp_composite.py")


# Why a method's seeds have a gap (rendered under the tables; keyed by (method, holdout) or method). From the
# results' git history (``git log -- benchmarks/results/``); "no reason recorded" where it gives none.
SEED_GAP_REASONS = {
    ("backswap_refined", "photo"): ("the first refined runs (commit 30a96b5) were trained and scored on crops only; "
                                    "the later seeds were trained once for both settings (`trained_with` in the "
                                    "JSON), so only they have a held-out-photo score"),
    "gt_bank": "no reason recorded (commit beba14d merged the seeds on either side of the gap)",
    "gt_trim": "no reason recorded (commit beba14d merged the seeds on either side of the gap)",
}

# The crop setting's confound, stated next to its figures (RESULTS.md and its headline).
CROP_CONFOUND = ("The crop setting's test backgrounds are crops of the StampBirds training photos, which are among "
                 "the photos the bundled segmenter (`patchseg-tiny-s16`) and edge refiner (`edgerefine-tiny`) were "
                 "trained on (their model cards): a learned cut-out is scored on backgrounds its models have seen. "
                 "The held-out-photo setting has no such overlap.")


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % t-interval half-width ``t_{0.975,n-1} * s / sqrt(n)`` (half-width nan for one value)."""
    return mean_ci(values)


def fmt_ci(values: list[float]) -> str:
    mean, half = t_interval(values)
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def code_version() -> dict:
    """The git commit the run used, the source files that differed from it and their content hashes."""
    root = HERE.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [f for f in CODE_FILES if git("status", "--porcelain", "--", f)]
    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "uncommitted": {f: hashlib.sha256((root / f).read_bytes()).hexdigest()[:16]
                            for f in dirty if (root / f).is_file()}}


def per_photo_accuracy(preds: torch.Tensor, data: StampBirds) -> dict:
    """Accuracy per background photo of ``data`` (and per group within it): ``{name: {n, accuracy, groups}}``."""
    out = {}
    correct = preds == data.labels
    for pid in data.photo_ids.unique().tolist():
        on = data.photo_ids == pid
        groups = {str(g): float(correct[on & (data.groups == g)].float().mean())
                  for g in data.groups[on].unique().tolist()}
        out[data.photo_names[pid]] = {"n": int(on.sum()), "accuracy": float(correct[on].float().mean()),
                                      "groups": groups}
    return out


def scored(record: dict, which: str = "raw") -> dict | None:
    """The record's test scores as trained (``"raw"``) or after :func:`fit_class_bias` on val (``"calibrated"``;
    ``None`` for runs made before it was recorded)."""
    return record if which == "raw" else record.get("calibrated")


def photo_worst(record: dict) -> float | None:
    """Mean over test photos of the worse class's accuracy on that photo (``None`` without per-photo results).

    Unlike the worst group, this does not reward a model that labels each held-out photo with one class: such
    a background classifier scores 0 on every photo, while its worst *group* can reach ~0.5 when it happens to
    map half the water photos to "landbird" and half to "waterbird".
    """
    photos = record.get("photos")
    if not photos:
        return None
    return statistics.fmean(min(p["groups"].values()) for p in photos.values())


@torch.no_grad()
def refined_probability(seg: PatchSegmenter, images: torch.Tensor, batch_size: int = 256,
                        refiner: str | EdgeRefiner = "guided") -> torch.Tensor:
    """Flip-averaged foreground probability ``(N, 1, H, W)``, refined by ``refiner``: the guided filter (radius two
    cells, as :func:`torch_backswap.refine.cut_out_alpha` with ``refiner="guided", flip_average=True``) or a learned
    edge refiner."""
    return torch.cat([cut_out_probability(seg, images[i : i + batch_size], refiner=refiner, flip_average=True)
                      for i in range(0, len(images), batch_size)])


def edge_probe_cut(method: str, alpha: torch.Tensor, radius: int) -> torch.Tensor:
    """The true alpha ``(N, 1, H, W)`` float in [0, 1] with its edge changed: ``gt_soft`` Gaussian-blurred
    (σ = ``radius`` px, kernel 4·radius + 1), ``gt_rim`` grown by ``radius`` px (max-pool) with a hard edge."""
    if method == "gt_soft":
        k = 4 * radius + 1
        blurred = kornia.filters.gaussian_blur2d(alpha, (k, k), (float(radius), float(radius)), border_type="replicate")
        return blurred.clamp_(0.0, 1.0)  # float rounding can leave 1 + 1e-7 inside the object
    if method == "gt_rim":
        return dilate(alpha > 0.5, radius).float()
    raise ValueError(f"unknown edge probe {method!r}; choose from {EDGE_PROBES}")


def hole_psnr(filled: torch.Tensor, truth: torch.Tensor, holes: torch.Tensor) -> float:
    """PSNR (dB) of uint8 ``filled`` against ``truth`` over the hole pixels only."""
    h = holes.expand_as(filled)
    if not bool(h.any()):
        return float("nan")
    diff = (filled.float() - truth.float())[h]
    mse = float((diff**2).mean())
    return 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-12))).item()


class BestEpoch:
    """``on_epoch_end`` hook that keeps the weights of the epoch with the best average accuracy on ``val`` (the
    first of equals), by :func:`~torch_backswap.classifiers.train_classifier`'s own rule."""

    def __init__(self, val: StampBirds) -> None:
        self.val, self.best_score, self.best_state = val, -1.0, None

    def __call__(self, model: torch.nn.Module) -> None:
        score = evaluate_groups(model, self.val.images, self.val.labels, self.val.groups)["average"]
        if score > self.best_score:
            self.best_score, self.best_state = score, copy.deepcopy(model.state_dict())


class Runner:
    def __init__(self, args: argparse.Namespace, shared: dict | None = None, records: dict | None = None) -> None:
        """``args``: the parsed command line with one ``holdout``. ``shared``: a cache of the per-seed work on the
        training split (fine-tuned segmenters, train masks) to share with runners of the other setting.
        ``records``: the cached runs, given (for rendering only: nothing is read from or written to disk)."""
        self.args = args
        self.setting = f"{args.image_size}px_corr{args.correlation}_{args.holdout}"
        if args.tight_threshold != TIGHT_THRESHOLD:
            self.setting += f"_tight{args.tight_threshold}"
        if args.pack_version != 1:
            self.setting += f"_v{args.pack_version}"
        self.code = code_version() if records is None else None
        self.out = Path(args.out_dir) if args.out_dir else HERE
        self.path = self.out / "results" / f"robustness_{self.setting}.json"
        if records is None:
            records = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records = records
        self._splits: dict[float, object] = {}
        self._quality: dict[tuple[int, str], dict] = {}
        shared = {} if shared is None else shared
        self._segmenters: dict[int, tuple] = shared.setdefault("segmenters", {})
        self._train_masks: dict[tuple[int, str], tuple] = shared.setdefault("train_masks", {})
        self._models: dict[str, torch.nn.Module] = shared.setdefault("models", {})

    def save(self) -> None:
        """Write the results file, keeping runs that another invocation wrote meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records = {**on_disk, **self.records}
        atomic_write_text(self.path, json.dumps(self.records, indent=1, sort_keys=True))

    def splits(self, correlation: float):
        if correlation not in self._splits:
            a = self.args
            kw = dict(image_size=a.image_size, correlation=correlation, seed=a.data_seed,
                      background_holdout=a.holdout, version=a.pack_version)
            self._splits[correlation] = StampBirdsSplits(
                train=StampBirds(split="train", n=a.n_train, **kw), val=StampBirds(split="val", **kw),
                test=StampBirds(split="test", n=a.n_test, **kw))
        return self._splits[correlation]

    def finetuned(self, seed: int) -> tuple[PatchSegmenter, PatchSegmenter, list[dict], torch.Tensor]:
        """The bundled segmenter fine-tuned on 300 simulated patch labels of train (cached per seed).

        Returns (zero-shot model, fine-tuned model, fine-tune history, train indices of the labelled images the
        fine-tune held out for model selection).
        """
        if seed not in self._segmenters:
            a, splits = self.args, self.splits(self.args.correlation)
            idx, labels = simulated_patch_labels(splits.train.alpha, a.n_labeled, seed=seed)
            base = PatchSegmenter.from_pretrained(a.segmenter)
            with tempfile.TemporaryDirectory() as tmp:
                seg, history = finetune_segmenter(base, splits.train.images[idx], labels, epochs=a.finetune_epochs,
                                                  seed=seed, progress=a.progress, output_dir=tmp)
                held_out = json.loads((Path(tmp) / "history.json").read_text())["val_ids"]
            self._segmenters[seed] = (base, seg, history, torch.tensor([int(i) for i in held_out]))
        return self._segmenters[seed]

    def train_masks(self, seed: int, route: str = "plain") -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Tight alpha and loose hole of train from the fine-tuned segmenter, and the tight threshold of the route
        (``None`` for the plain route); cached per seed and shared between settings.

        ``"plain"``: the paper's route (bilinear probability, p > ``--tight-threshold`` feathered, hole p > 0.1).
        ``"refined"``: flip-averaged logits, guided filter (radius two cells), tight threshold calibrated on the
        held-out labelled images, hole = refined p > 0.2 grown image side / 32 px (2 at 64 px). ``"edge"``:
        flip-averaged logits, the bundled edge refiner, tight threshold 0.5, the same hole.
        """
        key = (seed, route)
        if key not in self._train_masks:
            train = self.splits(self.args.correlation).train
            _, seg, _, held_out = self.finetuned(seed)
            if route == "plain":
                _, tight, loose = segment_images(seg, train.images, tight_threshold=self.args.tight_threshold)
                threshold = None
            else:
                prob = refined_probability(seg, train.images, refiner=self.route_refine(route))
                if route == "refined":
                    grids = dense_to_patch_grid(train.alpha[held_out], seg.grid_size, 0.25)
                    threshold, _ = calibrate_threshold(prob[held_out], grids)
                else:
                    threshold = REFINED_TIGHT_THRESHOLD
                tight = cut_out_batches(self.route_cut_out(seed, route, threshold, feather=0.1), train.images)
                loose = loose_hole(prob, REFINED_HOLE_THRESHOLD, dilate=hole_growth(train.images.shape[-2:]))
            self._train_masks[key] = (tight, loose, threshold)
        return self._train_masks[key]

    def route_refine(self, route: str) -> str | EdgeRefiner:
        """The ``refine`` of a refined route: ``"guided"``, or the bundled edge refiner (loaded once, shared between
        settings)."""
        if route == "refined":
            return "guided"
        if "edge_refiner" not in self._models:
            self._models["edge_refiner"] = EdgeRefiner.from_pretrained(DEFAULT_EDGE_REFINER)
        return self._models["edge_refiner"]

    def route_cut_out(self, seed: int, route: str, threshold: float, feather: float = 0.0) -> CutOut:
        """The cut-out of a refined route (``"refined"`` or ``"edge"``): the fine-tuned segmenter of ``seed``,
        flip-averaged, :meth:`route_refine`'s refiner, p > ``threshold`` with a ``feather`` ramp."""
        return CutOut(self.finetuned(seed)[1], self.route_refine(route), tight_threshold=threshold, feather=feather,
                      flip_average=True)

    def segmenter_test_quality(self, seed: int, route: str = "plain") -> dict:
        """The fine-tuned segmenter's quality on this setting's test (zero-shot, fine-tuned and, for the refined
        and edge routes, their cut-out at :meth:`train_masks`' threshold); cached per seed."""
        key = (seed, route)
        if key not in self._quality:
            test = self.splits(self.args.correlation).test
            base, seg, history, _ = self.finetuned(seed)
            quality = {
                "zero_shot_test": segmenter_quality(base, test.images, test.alpha),
                "finetuned_test": segmenter_quality(seg, test.images, test.alpha),
                "finetune_val_balanced_accuracy": max(h["val_balanced_accuracy"] for h in history),
            }
            if route != "plain":
                threshold = self.train_masks(seed, route)[2]
                test_mask = cut_out_batches(self.route_cut_out(seed, route, threshold), test.images) > 0.5
                # per image, averaged: the same IoU as segmenter_quality's columns and benchmarks.mask_quality
                quality[f"{route}_test"] = {"tight_threshold": threshold,
                                           "tight_mask_iou": mask_iou(test_mask, test.alpha > 0.5)}
            self._quality[key] = quality
        return self._quality[key]

    def run(self, method: str, seed: int, also: Sequence[Runner] = ()) -> list[dict]:
        """Train ``method`` once and score it in this setting and in each of ``also``'s: one record per runner.

        The settings share the training split (they differ in val and test only, checked); each keeps the epoch
        its own val split selects, so every record equals the one a run in that setting alone writes.
        """
        a = self.args
        correlation = a.minority_correlation if method in MINORITY_METHODS else a.correlation
        splits = self.splits(correlation)
        others = [o.splits(correlation) for o in also]
        for other in others:
            if not (torch.equal(other.train.images, splits.train.images)
                    and torch.equal(other.train.labels, splits.train.labels)):
                raise ValueError("joint runs need one training split; these settings train on different images")
        selectors = [BestEpoch(o.val) for o in others]
        common = dict(epochs=a.epochs, seed=seed, classifier=a.classifier, progress=a.progress,
                      desc=f"{method} s{seed}", on_epoch_end=(lambda m: [s(m) for s in selectors]) if others else None)
        extra: dict = {"correlation": correlation}
        if method in ("erm", "erm@0.95", "dfr"):
            model, _ = train_and_evaluate(splits, **common)
        elif method == "erm_aug":
            model, _ = train_and_evaluate(splits, randaugment=True, **common)
        elif method == "groupdro":
            model, _ = train_and_evaluate(splits, group_dro=True, **common)
        elif method in SWAP_METHODS or method in OTHER_SWAPS:
            true_tight = splits.train.alpha
            # The oracle's loose hole: the true object dilated by ~1/32 of the image side (like p > 0.1 would).
            radius = max(1, a.image_size // 32)
            true_loose = dilate(true_tight > 0.05, radius)
            inpainter = SWAP_METHODS.get(method, "pyramid")
            if method == "backswap_gt":
                tight, loose = true_tight, true_loose
            elif method in EDGE_PROBES:
                tight, loose = edge_probe_cut(method, true_tight, radius), true_loose
            else:
                tight, loose, _ = self.train_masks(seed, route=MASK_ROUTE.get(method, "plain"))
                if method == "edge_cut":
                    loose = self.train_masks(seed, route="plain")[1]
                elif method == "gt_cut":
                    tight = true_tight
                elif method == "gt_bank":
                    loose = true_loose
                elif method == "gt_trim":
                    tight, loose = tight * true_tight, true_loose
            t0 = time.perf_counter()
            bank = build_bank(splits.train.images, splits.train.labels, holes=loose, inpainter=inpainter,
                                        classes=splits.train.classes, progress=False)
            extra["bank_seconds"] = time.perf_counter() - t0
            extra["bank_hole_psnr_db"] = hole_psnr(bank.backgrounds, splits.train.true_backgrounds, loose)
            extra["bank_hole_fraction"] = float(loose.float().mean())
            extra["tight_mask_iou_train"] = float(
                ((tight > 0.5) & (splits.train.alpha > 0.5)).sum() / ((tight > 0.5) | (splits.train.alpha > 0.5)).sum())
            swap = BackgroundSwap(bank, seed=seed)
            model, _ = train_and_evaluate(splits, swap=swap, alphas=tight, **common)
        else:
            raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
        records = []
        for runner, run_splits, selector in zip((self, *also), (splits, *others), (None, *selectors)):
            scored_model = model
            if selector is not None:
                scored_model = copy.deepcopy(model)
                scored_model.load_state_dict(selector.best_state)
            if method == "dfr":
                fit_last_layer_dfr(scored_model, run_splits.val.images, run_splits.val.labels, run_splits.val.groups,
                                   seed=seed)
            own = dict(extra)
            if method in LEARNED_MASK_METHODS:
                own["segmenter"] = runner.segmenter_test_quality(seed, route=MASK_ROUTE.get(method, "plain"))
            if runner is not self:
                own["trained_with"] = self.setting
            records.append(runner.score(scored_model, run_splits, own))
        return records

    def score(self, model: torch.nn.Module, splits: StampBirdsSplits, extra: dict) -> dict:
        """A run's record: ``model``'s test scores (as trained and with the threshold recalibrated on val),
        per-photo accuracy, ``extra`` and the configuration. Recalibration shifts ``model``'s last-layer bias."""
        a = self.args
        r = evaluate_groups(model, splits.test.images, splits.test.labels, splits.test.groups)
        r["groups"] = {str(k): v for k, v in r["groups"].items()}
        r["photos"] = per_photo_accuracy(predict(model, splits.test.images), splits.test)
        # The same model with its decision threshold recalibrated on val (class labels only), scored again.
        offsets = fit_class_bias(model, splits.val.images, splits.val.labels)
        preds = predict(model, splits.test.images)
        groups = group_accuracies(preds, splits.test.labels, splits.test.groups)
        r["calibrated"] = {"average": float((preds == splits.test.labels).float().mean()),
                           "worst_group": min(groups.values()), "groups": {str(k): v for k, v in groups.items()},
                           "photos": per_photo_accuracy(preds, splits.test), "bias_offsets": offsets.tolist()}
        r.update(extra)
        r["config"] = {"pack_version": splits.test.version, "image_size": a.image_size, "epochs": a.epochs,
                       "classifier": a.classifier, "n_train": len(splits.train), "n_val": len(splits.val),
                       "n_test": len(splits.test), "n_labeled": a.n_labeled, "finetune_epochs": a.finetune_epochs,
                       "data_seed": a.data_seed, "tight_threshold": a.tight_threshold}
        r["code"] = self.code
        return r

    def __call__(self, also: Sequence[Runner] = ()) -> None:
        """Run every missing ``method/seedN`` of ``--methods`` × ``--seeds``; with ``also``, each run is trained
        once and scored in every setting that lacks it (see :meth:`run`)."""
        a = self.args
        for seed in a.seeds:
            for method in a.methods:
                key = f"{method}/seed{seed}"
                todo = [r for r in (self, *also) if a.force or key not in r.records]
                if not todo:
                    continue
                t0 = time.perf_counter()
                records = todo[0].run(method, seed, also=todo[1:])
                for runner, record in zip(todo, records):
                    record["seconds"] = time.perf_counter() - t0
                    runner.records[key] = record
                    runner.save()
                    print(f"{runner.setting} {key}: worst-group {record['worst_group']:.3f}, "
                          f"average {record['average']:.3f}, calibrated on val: worst-group "
                          f"{record['calibrated']['worst_group']:.3f} ({record['seconds']:.0f}s)", flush=True)
        for runner in (self, *also):
            runner.report()

    def _runs(self, method: str) -> list[dict]:
        """Cached runs of ``method``, in seed order."""
        keys = sorted((k for k in self.records if k.split("/")[0] == method), key=lambda k: int(k.split("seed")[1]))
        return [self.records[k] for k in keys]

    def values(self, method: str, which: str = "raw", key: str = "worst_group") -> list[float]:
        """``key`` of every cached run of ``method`` (seed order), as trained or val-calibrated (see :func:`scored`)."""
        return [scored(r, which)[key] for r in self._runs(method) if scored(r, which) is not None]

    def paired_difference(self, method: str, baseline: str, key: str = "worst_group", which: str = "raw") -> list[float]:
        """``method − baseline`` per seed, over the seeds both have runs for (a before/after on the same ruler)."""
        seeds = sorted({k.split("/seed")[1] for k in self.records if k.startswith(f"{method}/")}, key=int)
        pairs = [(scored(self.records[f"{method}/seed{s}"], which), scored(self.records[f"{baseline}/seed{s}"], which))
                 for s in seeds if f"{baseline}/seed{s}" in self.records]
        return [m[key] - b[key] for m, b in pairs if m is not None and b is not None]

    def targets(self, which: str = "raw") -> list[str]:
        """The issue's ruler targets, each stated as met / not met from the cached runs (``which``: the scores as
        trained, or with the decision threshold calibrated on val, see :func:`scored`)."""
        wg = {m: self.values(m, which) for m in MAIN_METHODS}
        title = "as trained" if which == "raw" else "decision threshold calibrated on val (`fit_class_bias`)"
        if not all(len(v) > 1 for v in wg.values()):
            return [f"Targets ({title}): not all main methods (" + ", ".join(MAIN_METHODS) + ") have two runs yet."]
        ci = {m: t_interval(v) for m, v in wg.items()}
        lines = [f"Targets, {title} (worst-group accuracy, mean ± 95 % t-interval over seeds):", ""]
        n_oracle = len(wg["backswap_gt"])
        half = ci["backswap_gt"][1]
        met = n_oracle >= 5 and half <= 0.05
        lines.append(f"- Oracle (`backswap_gt`) interval ≤ ± 0.05 with ≥ 5 seeds: **{'met' if met else 'NOT met'}** "
                     f"(± {half:.3f} over {n_oracle} seeds).")
        lo = {m: c[0] - c[1] for m, c in ci.items()}
        hi = {m: c[0] + c[1] for m, c in ci.items()}
        sep = hi["erm"] < lo["backswap"]
        lines.append(f"- ERM < learned (`backswap`) beyond the intervals: **{'met' if sep else 'NOT met'}** "
                     f"(ERM upper {hi['erm']:.3f} vs learned lower {lo['backswap']:.3f}).")
        order = ci["backswap"][0] <= ci["backswap_gt"][0]
        lines.append(f"- learned ≤ oracle (means): **{'met' if order else 'NOT met'}** "
                     f"({ci['backswap'][0]:.3f} vs {ci['backswap_gt'][0]:.3f}); the gap is "
                     f"{'beyond' if hi['backswap'] < lo['backswap_gt'] or hi['backswap_gt'] < lo['backswap'] else 'within'}"
                     " the intervals.")  # either way round: the intervals do not overlap
        pw = {m: [photo_worst(scored(r, which)) for r in self._runs(m)
                  if scored(r, which) is not None and photo_worst(scored(r, which)) is not None] for m in MAIN_METHODS}
        if all(len(v) > 1 for v in pw.values()):
            pci = {m: t_interval(v) for m, v in pw.items()}
            lines.append(
                f"- Same on the per-photo worst class: oracle ± {pci['backswap_gt'][1]:.3f} over {len(pw['backswap_gt'])} seeds "
                f"(**{'met' if len(pw['backswap_gt']) >= 5 and pci['backswap_gt'][1] <= 0.05 else 'NOT met'}**); "
                + ", ".join(f"{m} {fmt_ci(pw[m])}" for m in MAIN_METHODS) + "; ERM < learned beyond the intervals: "
                f"**{'met' if pci['erm'][0] + pci['erm'][1] < pci['backswap'][0] - pci['backswap'][1] else 'NOT met'}**; "
                f"learned ≤ oracle: **{'met' if pci['backswap'][0] <= pci['backswap_gt'][0] else 'NOT met'}**.")
        ratio = ci["backswap"][0] / ci["backswap_gt"][0] if ci["backswap_gt"][0] > 0 else float("nan")
        verdict = "met" if ratio >= 0.95 else "NOT met"
        if not order:
            verdict = "not measurable (the oracle scores below the method it bounds)"
        lines.append(f"- learned ≥ 0.95 × oracle: **{verdict}** ({ratio:.3f}×); "
                     f"learned ≥ ERM + 0.50: **{'met' if ci['backswap'][0] >= ci['erm'][0] + 0.5 else 'NOT met'}** "
                     f"(+{ci['backswap'][0] - ci['erm'][0]:.3f}).")
        for method, name in (("backswap_refined", "refined"), ("backswap_edge", "edge-refined")):
            values = self.values(method, which)
            paired = self.paired_difference(method, "backswap", which=which)
            if paired:
                lines.append(f"- {name} − plain cut-out, paired by seed ({len(paired)} seeds, same fine-tuned "
                             f"segmenter): {fmt_ci(paired)} worst-group accuracy.")
            if values:
                mean = t_interval(values)[0]
                r_ratio = mean / ci["backswap_gt"][0] if ci["backswap_gt"][0] > 0 else float("nan")
                r_verdict = "met" if r_ratio >= 0.95 else "NOT met"
                if not order:
                    r_verdict = "not measurable (the oracle scores below the learned pipeline)"
                lines.append(f"- {name} cut-out (`{method}`, {len(values)} seeds): {fmt_ci(values)}, "
                             f"{r_ratio:.3f}× oracle: **{r_verdict}**; "
                             f"≥ ERM + 0.50: **{'met' if mean >= ci['erm'][0] + 0.5 else 'NOT met'}** "
                             f"(+{mean - ci['erm'][0]:.3f}).")
        return lines

    def attribution(self) -> list[str]:
        """Where the learned pipeline's distance to the oracle comes from: ``gt_cut`` (true cut-out, learned bank)
        and ``gt_bank`` (learned cut-out, the oracle's bank) against ``backswap``, paired by seed (same fine-tuned
        segmenter); then the cut-out probes (``gt_soft``, ``gt_rim``, ``gt_trim``) against ``backswap_gt``, whose bank
        they share.
        Empty without such runs."""
        rows = []
        for method, what in (("gt_cut", "true cut-out, learned bank"), ("gt_bank", "learned cut-out, oracle's bank"),
                             ("backswap_gt", "true cut-out and the oracle's bank")):
            raw, cal = (self.paired_difference(method, "backswap", which=w) for w in ("raw", "calibrated"))
            if raw and (method != "backswap_gt" or rows):
                holes = [r["bank_hole_fraction"] for r in self._runs(method) if "bank_hole_fraction" in r]
                rows.append(f"| `{method}` − `backswap` | {what} | {len(raw)} | {fmt_ci(raw)} | "
                            f"{fmt_ci(cal) if cal else '–'} | {fmt_ci([100 * h for h in holes]) if holes else '–'} |")
        probes = []
        for method, what in (("gt_soft", "true alpha blurred, σ = r"), ("gt_rim", "true alpha grown by r px, hard edge"),
                             ("gt_trim", "learned cut-out × true alpha (no rim)")):
            raw, cal = (self.paired_difference(method, "backswap_gt", which=w) for w in ("raw", "calibrated"))
            if raw:
                iou = [r["tight_mask_iou_train"] for r in self._runs(method)]
                probes.append(f"| `{method}` − `backswap_gt` | {what} | {len(raw)} | {fmt_ci(raw)} | "
                              f"{fmt_ci(cal) if cal else '–'} | {statistics.fmean(iou):.3f} |")
        split = []
        for method, ref, what in (("edge_cut", "backswap", "the edge cut-out (both on the paper's bank)"),
                                  ("backswap_edge", "edge_cut", "the edge route's bank (both with the edge cut-out)")):
            raw, cal = (self.paired_difference(method, ref, which=w) for w in ("raw", "calibrated"))
            if raw:
                split.append(f"| `{method}` − `{ref}` | {what} | {len(raw)} | {fmt_ci(raw)} | "
                             f"{fmt_ci(cal) if cal else '–'} |")
        if split:
            split = ["", ("The edge route split in two (worst-group accuracy, paired by seed, mean ± 95 % t-interval): "
                          "what its cut-out brings and what its bank (hole = refined p > 0.2 grown side / 32 px) brings:"), "",
                     "| difference | what changes | seeds | as trained | recalibrated on val |", "|---|---|---|---|---|",
                     *split]
        if probes:
            probes = ["", ("Cut-out probes (the oracle's bank with another cut-out: the true alpha with its edge changed, "
                           "r = image side / 32, or the learned cut-out trimmed to the object; worst-group accuracy minus "
                           "`backswap_gt`'s, paired by seed, mean ± 95 % t-interval):"), "",
                      "| difference | cut-out | seeds | as trained | recalibrated on val | cut-out IoU with the true alpha |",
                      "|---|---|---|---|---|---|", *probes]
        probes += split
        if not rows:
            return probes[1:]
        holes = [100 * r["bank_hole_fraction"] for r in self._runs("backswap") if "bank_hole_fraction" in r]
        return [("Attribution (worst-group accuracy, paired by seed, mean ± 95 % t-interval of the per-seed difference; "
                 f"`backswap`'s bank hole: {fmt_ci(holes) if holes else '–'} % of the training image):"), "",
                "| difference | swap | seeds | as trained | recalibrated on val | its bank hole (% of image) |",
                "|---|---|---|---|---|---|", *rows, *probes]

    def report(self) -> None:
        a = self.args
        argv = list(sys.argv[1:])
        for flag in ("--write-results",):  # output plumbing: does not change what is rendered
            while flag in argv:
                argv.remove(flag)
        if "--out-dir" in argv:
            i = argv.index("--out-dir")
            del argv[i : i + 2]
        cmd = "python -m benchmarks.robustness " + " ".join(argv)
        md, plot = self.markdown(cmd, machine_line())
        fig = self.out / "figures" / f"robustness_{self.setting}.png"
        if plot:
            self.bar_plot(plot, fig)
        if self.out == HERE or a.write_results:
            write_section(f"robustness_{self.setting}", "\n".join(md), path=self.out / "RESULTS.md")
        print("\n".join(md))

    def seed_gaps(self) -> list[str]:
        """One line per method whose seeds are not 0..max (a run missing in the middle), or that lacks seeds the
        other setting has, with the reason recorded in :data:`SEED_GAP_REASONS` (or "no reason recorded")."""
        lines = []
        for method in ALL_METHODS:
            seeds = sorted(int(k.split("/seed")[1]) for k in self.records if k.split("/")[0] == method)
            if not seeds:
                continue
            missing = [s for s in range(max(seeds) + 1) if s not in seeds]
            if missing:
                reason = SEED_GAP_REASONS.get((method, self.args.holdout), SEED_GAP_REASONS.get(method, "no reason recorded"))
                lines.append(f"- `{method}`: {len(seeds)} seeds; seed{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(map(str, missing))} missing: {reason}.")
        if not lines:
            return []
        return ["Seed gaps (runs missing below a method's highest seed):", "", *lines]

    def markdown(self, cmd: str, machine: str) -> tuple[list[str], list]:
        """The section (markdown lines) and the bar-plot rows, from the cached runs only (``cmd``: the command
        named as the renderer; ``machine``: the date/machine line)."""
        a = self.args
        rows, plot, cal_rows = [], [], []
        for method in ALL_METHODS:
            runs = self._runs(method)
            if not runs:
                continue
            wg = [r["worst_group"] for r in runs]
            avg = [r["average"] for r in runs]
            groups = " | ".join(fmt_ci([r["groups"][str(g)] for r in runs]) for g in GROUP_NAMES)
            psnr = [r["bank_hole_psnr_db"] for r in runs if "bank_hole_psnr_db" in r]
            iou = [r["tight_mask_iou_train"] for r in runs if "tight_mask_iou_train" in r]
            psnr_s = f"{statistics.mean(psnr):.1f}" if psnr else "–"
            iou_s = f"{statistics.mean(iou):.3f}" if iou else "–"
            pw = [photo_worst(r) for r in runs if photo_worst(r) is not None]
            rows.append(f"| {method} | {runs[0]['correlation']} | {len(runs)} | {fmt_ci(avg)} | "
                        f"**{fmt_ci(wg)}** | {fmt_ci(pw) if pw else '–'} | {groups} | {psnr_s} | {iou_s} |")
            mean, half = t_interval(wg)
            plot.append((method, mean, 0.0 if math.isnan(half) else half, statistics.fmean(avg)))
            cal = [c for c in (scored(r, "calibrated") for r in runs) if c is not None]
            if cal:
                cal_groups = " | ".join(fmt_ci([c["groups"][str(g)] for c in cal]) for g in GROUP_NAMES)
                cal_rows.append(f"| {method} | {len(cal)} | {fmt_ci([c['average'] for c in cal])} | "
                                f"**{fmt_ci([c['worst_group'] for c in cal])}** | {fmt_ci([photo_worst(c) for c in cal])} | "
                                f"{cal_groups} |")
        photo_rows = []
        photo_names: list[str] = []
        for method in ALL_METHODS:
            for r in self._runs(method):
                photo_names += [p for p in r.get("photos", {}) if p not in photo_names]
        for method in ALL_METHODS:
            runs = [r for r in self._runs(method) if "photos" in r]
            if not runs or method not in (*MAIN_METHODS, "backswap_refined", "backswap_edge", *INFILL_METHODS):
                continue
            cells = []
            for p in photo_names:
                # the worst of the photo's groups (each photo carries one place, so two groups)
                vals = [min(r["photos"][p]["groups"].values()) for r in runs if p in r["photos"]]
                cells.append(fmt_ci(vals) if vals else "–")
            photo_rows.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
        seg_rows = []
        for k, v in sorted(self.records.items()):
            if k.startswith("backswap/") and "segmenter" in v:
                q = v["segmenter"]
                ref = self.records.get(k.replace("backswap/", "backswap_refined/"), {}).get("segmenter", {})
                ref = ref.get("refined_test")
                edge = self.records.get(k.replace("backswap/", "backswap_edge/"), {}).get("segmenter", {})
                edge = edge.get("edge_test")
                seg_rows.append(
                    f"| {k.split('/')[1]} | {q['zero_shot_test']['patch_balanced_accuracy']:.3f} | "
                    f"{q['finetuned_test']['patch_balanced_accuracy']:.3f} | {q['zero_shot_test']['tight_mask_iou']:.3f} | "
                    f"{q['finetuned_test']['tight_mask_iou']:.3f} | "
                    + (f"{ref['tight_mask_iou']:.3f} (p > {ref['tight_threshold']:.2f})" if ref else "–") + " | "
                    + (f"{edge['tight_mask_iou']:.3f}" if edge else "–")
                    + f" | {q['finetune_val_balanced_accuracy']:.3f} |")
        configs = {json.dumps(r.get("config", {}), sort_keys=True) for r in self.records.values()
                   if r.get("correlation") == a.correlation}
        commits = sorted({r["code"]["commit"][:10] + ("+uncommitted" if r["code"].get("uncommitted") else "")
                          for r in self.records.values() if "code" in r})
        base = (f"python -m benchmarks.robustness --holdout {a.holdout} --image-size {a.image_size} "
                f"--pack-version {a.pack_version} --epochs {a.epochs}"
                + (f" --n-train {a.n_train}" if a.n_train else "") + (f" --n-test {a.n_test}" if a.n_test else "")
                + (f" --classifier {a.classifier}" if a.classifier != "small_cnn" else "")
                + (f" --tight-threshold {a.tight_threshold}" if a.tight_threshold != TIGHT_THRESHOLD else ""))
        test = self.splits_meta()
        joint = sum("trained_with" in r for r in self.records.values())
        md = [
            f"## Robustness: StampBirds v{a.pack_version} {a.image_size}px, train correlation {a.correlation} "
            f"(group-label baselines at {a.minority_correlation}), backgrounds held out by {a.holdout}",
            "", f"Rendered by `{cmd}` from the runs cached in `{self.path.relative_to(self.out).as_posix()}`; each row's "
            f"runs come from `{base} --seeds <seeds> --methods <method> --threads 1` (the seed count is in the table). "
            f"Code: git {', '.join(commits) or 'unrecorded (runs made before commits were pinned)'} (per run in the JSON, "
            "with hashes of uncommitted source files).",
            *(["", (f"{joint} of the runs were trained once with `--holdout crop photo` and scored in both settings "
                    "(`trained_with` in the JSON; the same records a single-setting run writes).")] if joint else []),
            "", machine, "",
            f"Classifier `{a.classifier}` from scratch, {a.epochs} epochs, {test} "
            f"Cells: mean ± 95 % t-interval half-width over seeds (t_0.975,n-1 · s/√n); groups are class/background.",
        ]
        if a.holdout == "crop":
            md += ["", f"**Confound:** {CROP_CONFOUND}"]
        md += ["", "*Per-photo worst class*: on each test photo, the accuracy of the worse of its two classes, averaged "
               "over the test photos; a model that labels each photo with one class (a background classifier) scores 0, "
               "whereas its worst group can reach about 0.5."]
        if len(configs) > 1:
            md += ["", f"**Warning: the cached runs mix {len(configs)} configurations** (see `config` in the JSON)."]
        md += [
            "",
            "| method | train corr. | seeds | average | worst group | per-photo worst class | "
            + " | ".join(GROUP_NAMES.values()) + " | bank hole PSNR (dB) | tight-mask IoU (train) |",
            "|" + "---|" * (9 + len(GROUP_NAMES) - 1),
            *rows,
        ]
        if cal_rows:
            md += ["", "The same models with the decision threshold recalibrated on the validation split "
                   "(`fit_class_bias`: the logit offset with the best class-balanced val accuracy; class labels only, "
                   "applied alike to every method):", "",
                   "| method | seeds | average | worst group | per-photo worst class | "
                   + " | ".join(GROUP_NAMES.values()) + " |", "|" + "---|" * (5 + len(GROUP_NAMES)), *cal_rows]
        if photo_rows:
            md += ["", "Per test photo: the worse of its two groups (landbird and waterbird on that photo), "
                   "mean ± 95 % t-interval over seeds:", "",
                   "| method | seeds | " + " | ".join(photo_names) + " |", "|" + "---|" * (2 + len(photo_names)), *photo_rows]
        if a.correlation == 1.0 and a.tight_threshold == TIGHT_THRESHOLD:
            md += ["", *self.targets(), "", *self.targets("calibrated")]
        attribution = self.attribution()
        if attribution:
            md += ["", *attribution]
        if seg_rows:
            md += ["", f"Segmenter (bundled `{a.segmenter}`, fine-tuned on {a.n_labeled} simulated patch labels, "
                   f"{a.finetune_epochs} epochs), on the test split:", "",
                   "| seed | patch bal. acc. zero-shot | fine-tuned | tight IoU zero-shot | fine-tuned | fine-tuned, refined "
                   "(calibrated threshold) | fine-tuned, edge refiner (p > 0.5) | fine-tune val bal. acc. |",
                   "|---|---|---|---|---|---|---|---|", *seg_rows]
        gaps = self.seed_gaps()
        if gaps:
            md += ["", *gaps]
        if plot:
            md += ["", f"![worst-group accuracy](figures/robustness_{self.setting}.png)"]
        return md, plot

    def splits_meta(self) -> str:
        """One sentence on the split sizes and test photos, from the cached runs' configuration."""
        a = self.args
        cfg = next((r["config"] for r in self.records.values() if "config" in r), None)
        where = "held-out background photos" if a.holdout == "photo" else "crops of the training photos"
        if cfg is None:
            return f"{a.n_train or 3000} train images; test = group-balanced, {where}."
        return (f"{cfg['n_train']} train / {cfg['n_val']} val / {cfg['n_test']} test images; test = group-balanced, "
                f"{where}, each test photo used equally often (pack v{cfg['pack_version']}).")

    def bar_plot(self, plot, path: Path) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)")
            return
        names, wg, sd, avg = zip(*plot)
        fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.8 * len(names)), 3.8))
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], avg, 0.4, label="average", color="#9ab")
        ax.bar([x + 0.2 for x in xs], wg, 0.4, yerr=sd, capsize=3, label="worst group (95 % t-interval)",
               color="#d63")
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"StampBirds v{self.args.pack_version} {self.args.image_size}px, train correlation {self.args.correlation} "
                     f"(group-label baselines {self.args.minority_correlation}),\ntest backgrounds: {self.args.holdout}", fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)


def render(records: dict, holdout: str, *, cmd: str = "python -m benchmarks.report", machine: str = "") -> str:
    """The RESULTS.md section of one results file (``records``: its JSON, ``robustness_<setting>.json``), from the
    runs alone: the run configuration comes from the records, the rest from the command line's defaults. Draws
    no plot (the figure it links is written by :meth:`Runner.report`)."""
    config = next((r["config"] for r in records.values() if "config" in r), {})
    args = _parser().parse_args(["--holdout", holdout])
    for key in ("epochs", "n_train", "pack_version", "image_size", "tight_threshold", "finetune_epochs", "n_labeled",
                "classifier"):
        if key in config:
            setattr(args, key, config[key])
    runner = Runner(argparse.Namespace(**{**vars(args), "holdout": holdout}), records=records)
    md, _ = runner.markdown(cmd, machine)
    return "\n".join(md)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--correlation", type=float, default=1.0)
    p.add_argument("--minority-correlation", type=float, default=0.95)
    p.add_argument("--holdout", nargs="+", choices=("photo", "crop"), default=["photo"],
                   help="setting(s); several (e.g. crop photo) train each run once and score it in each setting")
    p.add_argument("--n-train", type=int, default=2000, help="train images (the v2 ruler: 2000)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default: the pack's, 2400 for v2)")
    p.add_argument("--pack-version", type=int, default=2, choices=(1, 2),
                   help="StampBirds pack version (2: more held-out photos; 1 reproduces the version-1 results files)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10, help="classifier epochs (the v2 ruler: 10)")
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
    p.add_argument("--write-results", action="store_true",
                   help="with --out-dir: still write the section of OUT_DIR/RESULTS.md (e.g. runs from a pinned checkout)")
    return p


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(set(args.holdout)) != len(args.holdout):
        p.error(f"--holdout: each setting once, got {args.holdout}")
    shared: dict = {}  # the settings share the training split, hence its segmenters and masks
    runners = [Runner(argparse.Namespace(**{**vars(args), "holdout": h}), shared=shared)
               for h in args.holdout]
    if args.report_only:
        for runner in runners:
            runner.report()
    else:
        runners[0](also=runners[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
