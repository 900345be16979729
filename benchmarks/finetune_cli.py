"""``backswap finetune`` on a folder of ~300 patch-labelled images: accuracy and wall time (issue 2).

Writes 300 StampBirds training images (64 px, PNG) and their patch labels (16×16, derived from the
exact alpha: a cell is object when ≥ 25 % covered; standing in for a person) to a temporary folder, then
runs the real command line twice, side by side on the same folder:

* from the bundled weights: ``backswap finetune DIR labels.csv --out A``
* from scratch:             ``backswap finetune DIR labels.csv --out B --scratch``

and reports the best validation patch balanced accuracy (80/20 split of the labelled images), the epoch it
was reached, and the wall time. Run from the repository root::

    python -m benchmarks.finetune_cli [--epochs 30] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from benchmarks._common import machine_line, write_section

from torch_backswap.datasets import StampBirds  # noqa: E402
from torch_backswap.labels import PatchLabels, dense_to_patch_grid  # noqa: E402


def write_folder(root: Path, n: int, seed: int) -> Path:
    from PIL import Image

    data = StampBirds(split="train", image_size=64, seed=seed)
    grids = dense_to_patch_grid(data.alpha[:n], 16, threshold=0.25)
    ids = []
    for i in range(n):
        name = f"{'waterbird' if int(data.labels[i]) else 'landbird'}_{i:04d}.png"
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(root / name)
        ids.append(name)
    PatchLabels(ids=ids, grids=grids).write(root / "labels.csv")
    return root / "labels.csv"


def run(cmd: list[str]) -> tuple[float, list[dict]]:
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    out = Path(cmd[cmd.index("--out") + 1])
    return seconds, json.loads((out / "history.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        labels = write_folder(tmp / "images", args.n, args.seed)
        exe = [sys.executable, "-m", "torch_backswap"]
        for name, extra in (("bundled weights", []), ("from scratch", ["--scratch"])):
            out = tmp / name.replace(" ", "_")
            seconds, history = run([*exe, "finetune", str(tmp / "images"), str(labels), "--out", str(out),
                                    "--epochs", str(args.epochs), "--seed", str(args.seed), "--no-progress", *extra])
            if isinstance(history, dict):
                history = history.get("history", [])
            best = max(history, key=lambda h: h["val_balanced_accuracy"])
            first90 = next((h for h in history if h["val_balanced_accuracy"] >= 0.90), None)
            t90 = sum(h["seconds"] for h in history[: history.index(first90) + 1]) if first90 else None
            rows.append((name, best["val_balanced_accuracy"], best["epoch"], len(history), seconds,
                         first90["epoch"] if first90 else None, t90, best.get("val_cell_iou")))
    cmd = "python -m benchmarks.finetune_cli " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [
        f"## `backswap finetune` on {args.n} patch-labelled StampBirds images (64 px, 16×16 grid)",
        "", f"`{cmd}`", "", machine_line(), "",
        f"Validation = 20 % of the labelled images (same training photos); {args.epochs} epochs; the command's own "
        "wall time includes loading the images and saving the best model.",
        "",
        "| start | best val patch balanced accuracy | at epoch | val cell IoU there | first epoch ≥ 0.90 | "
        "training time to it (s) | epochs run | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, acc, ep, n_ep, sec, ep90, t90, iou in rows:
        md.append(f"| {name} | **{acc:.3f}** | {ep} | {iou:.3f} | {ep90 if ep90 else 'not reached'} | "
                  f"{f'{t90:.0f}' if t90 else '–'} | {n_ep} | {sec:.0f} |")
    write_section("finetune_cli", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render(data: dict) -> str:
    """The RESULTS.md section from ``results/finetune_cli.json``."""
    md = [
        f"## `backswap finetune` on {data['n']} patch-labelled StampBirds images (64 px, 16×16 grid)",
        "", f"`{data['command']}`", "", data["machine"] + (f" (recorded {data['recorded']}: {data['source']})"
                                                         if data.get("source") else ""), "",
        f"Validation = 20 % of the labelled images (same training photos); {data['epochs']} epochs; the command's own "
        "wall time includes loading the images and saving the best model.",
        "",
        "| start | best val patch balanced accuracy | at epoch | val cell IoU there | first epoch ≥ 0.90 | "
        "training time to it (s) | epochs run | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        t90 = f"{r['seconds_to_090']:.0f}" if r["seconds_to_090"] else "–"
        ep90 = r["first_epoch_090"] if r["first_epoch_090"] else "not reached"
        md.append(f"| {r['start']} | **{r['best_val_balanced_accuracy']:.3f}** | {r['best_epoch']} | "
                  f"{r['val_cell_iou']:.3f} | {ep90} | {t90} | {r['epochs_run']} | {r['wall_seconds']:.0f} |")
    return "\n".join(md)
