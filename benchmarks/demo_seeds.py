"""Does ``backswap demo`` at its default size show what it is meant to show, on every seed? (issue 27)

The rule, written before any seed was run: the demo's default size is the smallest candidate
(``--n-train`` 1200, then 2000, then the full 3000) for which, on **each** of the seeds 0–4 (fixed in advance):

1. fine-tuning raises the segmenter's test patch balanced accuracy, and
2. BackSwap's worst-group accuracy exceeds ERM's by at least 0.10,

and whose median wall time, install excluded, is at most 300 s on a 2-core machine with no other load.

Outcome (2026-12-05, ``results/demo_seeds.json``): **no candidate passed.** At 1200 seed 2 gave BackSwap 0.077
vs ERM 0.047 (margin 0.03); at 2000 seed 2 gave 0.217 vs 0.190 (margin 0.03); the full 3000 takes about 355 s on a
quiet machine (over the time bound) and was not run. On held-out photos one seed's worst group is too noisy for a
per-seed margin. The demo keeps the 1200 size for its time; its figures are one seed of a noisy setting.

Run (resumable: seeds already in the JSON are kept)::

    python -m benchmarks.demo_seeds --n-train 1200 --refiner none --seeds 0 1 2 3 4

Writes ``benchmarks/results/demo_seeds.json``: per candidate, per seed, the demo's ``results.json`` figures,
the stage timings and the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from torch_backswap._io import atomic_write_text

RESULTS_JSON = Path(__file__).resolve().parent / "results" / "demo_seeds.json"
RULE_SEEDS = (0, 1, 2, 3, 4)
RULE_MARGIN = 0.10
RULE_SECONDS = 300.0


def candidate_key(n_train: int, refiner: str) -> str:
    return f"n_train={n_train},refiner={refiner}"


def passes(run: dict) -> dict:
    """The rule's two checks on one seed's demo figures."""
    seg, cls = run["segmenter"], run["classifiers"]
    finetune_gain = seg["after_finetune"]["patch_balanced_accuracy"] - seg["before_finetune"]["patch_balanced_accuracy"]
    wga_gain = cls["backswap"]["worst_group"] - cls["erm"]["worst_group"]
    return {"finetune_gain": finetune_gain, "worst_group_gain": wga_gain,
            "passes": finetune_gain > 0 and wga_gain >= RULE_MARGIN}


def main(argv: list[str] | None = None) -> int:
    from torch_backswap.demo import run_demo
    from torch_backswap.edge_refiner import DEFAULT_EDGE_REFINER

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, required=True)
    p.add_argument("--refiner", default=DEFAULT_EDGE_REFINER, help="'none' for the paper's route")
    p.add_argument("--seeds", nargs="+", type=int, default=list(RULE_SEEDS))
    p.add_argument("--json", type=Path, default=RESULTS_JSON)
    args = p.parse_args(argv)
    data = json.loads(args.json.read_text()) if args.json.is_file() else {}
    key = candidate_key(args.n_train, args.refiner)
    runs = data.setdefault(key, {})
    for seed in args.seeds:
        if str(seed) in runs:
            continue
        load_start = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_demo(tmp, seed=seed, n_train=args.n_train, progress=False,
                               refiner=None if args.refiner.lower() == "none" else args.refiner)
        segmenter = {k: v for k, v in summary["segmenter"].items() if k != "finetune_history"}
        run = {**{k: summary[k] for k in ("settings", "bank", "classifiers", "stage_seconds", "seconds", "threads")},
               "segmenter": segmenter, "load_start": load_start, "load_end": os.getloadavg()}
        runs[str(seed)] = run
        print(f"{key} seed {seed}: {json.dumps({k: summary['classifiers'][k]['worst_group'] for k in ('erm', 'backswap')})} "
              f"{summary['seconds']:.0f} s", flush=True)
        atomic_write_text(args.json, json.dumps(data, indent=1, sort_keys=True, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
