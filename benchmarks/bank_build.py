"""bank_build.py — build a background bank from 1 000 StampBirds images at 224² and report images/s.

Run from the repository root::

    python -m benchmarks.bank_build [--n 1000] [--size 224] [--threads 1] [--device cpu] [--no-write]

On StampBirds train (``image_size=224``, ``n=1000``), ``build_bank`` runs with its tqdm
progress bar (unit: images, so the bar shows images/s) in these configurations, to separate the
segmenter's cost from the inpainter's:

1. **segmenter on the fly, default route** — the bundled ``torch-backswap/patchseg-tiny-s16`` segments every
   batch and its mirror image, the bundled edge refiner refines the probability, the hole (p > 0.2, grown
   size/32 px) is filled by the default ``pyramid`` inpainter (the normal use);
   then the same with ``refiner=None``, the **paper route** (the bilinear probability's loose mask, p > 0.1);
2. **segmenter only** — the same segmenter on the same batches, nothing else (its loose masks are kept);
3. **given holes, pyramid** — ``holes=`` the masks of step 2, so only resizing + inpainting + uint8;
4. **given holes, pyramid, true-alpha holes** — the exact bird alpha dilated by 7 px (smaller holes);
5. **given holes, gray** — the cheapest fill, i.e. the build loop's own overhead.

Then the bank of step 1 is saved (safetensors + JSON) and loaded back, checking that it is bit-identical.
Without the segmenter weights, steps 1–2 are skipped and step 3 uses the true-alpha holes.
The final state of each progress bar is copied into the ``bank_build`` section of
``benchmarks/RESULTS.md`` (through ``_common.write_section``). About a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import loadavg, machine_line, write_section
from torch_backswap.bank import BackgroundBank
from torch_backswap.build import build_bank
from torch_backswap.datasets import StampBirds
from torch_backswap.hub import resolve_pretrained
from torch_backswap.segmenter import (
    LOOSE_THRESHOLD,
    PatchSegmenter,
    logits_to_probability,
)

SEGMENTER = "torch-backswap/patchseg-tiny-s16"


class Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (the tqdm bar goes to both)."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.stream.write(s)
        self.copy.write(s)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # keep tqdm's carriage-return updates
        return False


def last_bar(text: str) -> str:
    """The final state of a tqdm bar from its captured output."""
    parts = [p.strip() for p in text.replace("\n", "\r").split("\r") if p.strip()]
    return parts[-1] if parts else ""


def build(label: str, *args, **kwargs) -> tuple[BackgroundBank, dict]:
    tee = Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):
        bank = build_bank(*args, progress=True, **kwargs)
    stats = dict(bank.build_stats)
    stats["bar"] = last_bar(tee.copy.getvalue())
    stats["label"] = label
    print(f"{label}: {stats['images_per_s']:.1f} images/s", flush=True)
    return bank, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--segmenter", default=SEGMENTER)
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = ("python -m benchmarks.bank_build " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    load_start = loadavg()
    start = time.perf_counter()

    t0 = time.perf_counter()
    data = StampBirds(split="train", image_size=args.size, n=args.n)
    data_seconds = time.perf_counter() - t0
    images, labels = data.images, data.labels
    radius = max(1, round(args.size / 32))
    alpha_holes = F.max_pool2d((data.alpha > 0).float(), 2 * radius + 1, stride=1, padding=radius) > 0.5

    try:
        segmenter = PatchSegmenter.from_pretrained(args.segmenter).eval().to(args.device)
        sha = hashlib.sha256((resolve_pretrained(args.segmenter) / "model.safetensors").read_bytes()).hexdigest()[:12]
        seg_note = f"`{args.segmenter}` (bundled, model.safetensors sha256 {sha}…)"
    except (FileNotFoundError, OSError) as err:
        print(f"segmenter {args.segmenter!r} not available ({err}); given holes only", flush=True)
        segmenter, seg_note = None, None

    rows: list[dict] = []
    bank = None
    seg_holes = None
    edge_area = None  # (grown px, threshold) of the default route's hole
    if segmenter is not None:
        bank, stats = build("segmenter + edge refiner on the fly + pyramid (default route)", images, labels,
                            segmenter=segmenter, inpainter="pyramid", size=args.size, batch_size=args.batch_size,
                            device=args.device)
        rows.append(stats)
        edge_area = float(bank.metadata["dilate"]), float(bank.metadata["loose_threshold"])
        _, stats = build("segmenter on the fly + pyramid (paper route, `refiner=None`)", images, labels,
                         segmenter=segmenter, refiner=None, inpainter="pyramid", size=args.size,
                         batch_size=args.batch_size, device=args.device)
        rows.append(stats)
        holes, seconds = [], 0.0
        with torch.no_grad():
            for i in range(0, len(images), args.batch_size):
                x = images[i : i + args.batch_size].to(args.device)
                t = time.perf_counter()
                holes.append(logits_to_probability(segmenter(x), (args.size, args.size)) > LOOSE_THRESHOLD)
                seconds += time.perf_counter() - t
        seg_holes = torch.cat(holes).cpu()
        rows.append({"label": "segmenter only (loose masks, no fill)", "images": len(images), "seconds": seconds,
                     "images_per_s": len(images) / seconds, "bar": "(no bar: timed loop)"})
        _, stats = build("given holes (segmenter's) + pyramid", images, labels, holes=seg_holes, inpainter="pyramid",
                         size=args.size, batch_size=args.batch_size, device=args.device)
        rows.append(stats)
    bank_alpha, stats = build(f"given holes (true alpha +{radius} px) + pyramid", images, labels, holes=alpha_holes,
                              inpainter="pyramid", size=args.size, batch_size=args.batch_size, device=args.device)
    rows.append(stats)
    _, stats = build("given holes (segmenter's) + gray" if seg_holes is not None else "given holes (true alpha) + gray",
                     images, labels, holes=seg_holes if seg_holes is not None else alpha_holes, inpainter="gray",
                     size=args.size, batch_size=args.batch_size, device=args.device)
    rows.append(stats)
    bank = bank if bank is not None else bank_alpha

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.safetensors"
        t = time.perf_counter()
        saved = bank.save(path)
        save_s = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        t = time.perf_counter()
        loaded = BackgroundBank.load(saved)
        load_s = time.perf_counter() - t
        identical = (torch.equal(loaded.backgrounds.cpu(), bank.backgrounds.cpu())
                     and torch.equal(loaded.labels.cpu(), bank.labels.cpu()))
    seconds = time.perf_counter() - start

    hole_area = (seg_holes if seg_holes is not None else alpha_holes).float().mean().item()
    lines = [
        f"## Background bank build: {args.n} StampBirds train images at {args.size}²",
        "",
        f"`{command}`",
        "",
        machine_line() + f"; device {args.device}; load average (1/5/15 min) {load_start} at start, {loadavg()} at "
        f"end; {seconds:.0f} s in all. The machine is shared by several people at once, so these rates are "
        "indicative only (they are per wall-clock second).",
        "",
        f"Segmenter: {seg_note or 'not available (given holes only)'}; "
        + (f"default route: flip-averaged logits, edge refiner, hole p > {edge_area[1]} grown {edge_area[0]:.0f} px. "
           if seg_note else "")
        + f"Paper route: loose hole p > {LOOSE_THRESHOLD} covers {100 * hole_area:.1f} % of the image on average "
        f"(the true alpha dilated by {radius} px: {100 * alpha_holes.float().mean().item():.1f} %). "
        f"Batches of {args.batch_size}; images already decoded in memory (StampBirds composites them at "
        f"construction: {data_seconds:.1f} s for {args.n} images, not counted).",
        "",
        "| configuration | images | seconds | images/s | final state of the progress bar |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        bar = r["bar"].replace("|", "\\|")
        lines.append(f"| {r['label']} | {r['images']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | `{bar}` |")
    rates = {r["label"].split(" (")[-1]: r["images_per_s"] for r in rows if "on the fly" in r["label"]}
    if len(rates) == 2:
        edge, paper = rates["default route)"], rates["paper route, `refiner=None`)"]
        lines += ["", f"Default (edge) route / paper route build rate, side by side in this run: **{edge / paper:.2f}×** "
                  "(the flip-averaged segmenter, the edge refiner at 64 px and the grown hole; a bank is built once)."]
    lines += [
        "",
        f"Save → load of the on-the-fly bank ({tuple(bank.backgrounds.shape)} uint8): {size_mb:.1f} MiB on disk, "
        f"save {save_s:.2f} s, load {load_s:.2f} s, bit-identical: **{identical}**.",
    ]
    md = "\n".join(lines)
    print(md)
    if not identical:
        raise SystemExit("saved and loaded banks differ")
    if not args.no_write:
        print(f"wrote section 'bank_build' of {write_section('bank_build', md)}")


if __name__ == "__main__":
    main()


def render(data: dict, throughput: dict | None = None) -> str:
    """The RESULTS.md section from ``results/bank_build.json`` (``data``), with a table that names the configuration
    of every other bank-build rate in RESULTS.md and its archive (``data["elsewhere"]``; the throughput section's
    rate is read from ``throughput``, its ``results/throughput.json``, where given), so no two rates stand
    unexplained."""
    lines = [
        f"## Background bank build: {data['n']} StampBirds train images at {data['size']}²",
        "",
        f"`{data['command']}`",
        "",
        f"{data['machine']}; device {data['device']}; load average (1/5/15 min) {data['load_start']} at start, "
        f"{data['load_end']} at end; {data['seconds']:.0f} s in all. The machine is shared by several people at once, so "
        "these rates are indicative only (they are per wall-clock second). "
        + (f"Recorded {data['recorded']}: {data['source']}." if data.get("source") else ""),
        "",
        f"Segmenter: {data['segmenter']}; default route: flip-averaged logits, edge refiner, hole p > "
        f"{data['edge_hole']['threshold']} grown {data['edge_hole']['growth_px']} px. Paper route: loose hole p > "
        f"{data['loose_threshold']} covers {100 * data['paper_hole_area']:.1f} % of the image on average (the true alpha "
        f"dilated by {data['alpha_radius']} px: {100 * data['alpha_hole_area']:.1f} %). Batches of {data['batch_size']}; "
        f"{data['threads']} torch thread(s); images already decoded in memory (StampBirds composites them at construction: "
        f"{data['data_seconds']:.1f} s for {data['n']} images, not counted).",
        "",
        "| configuration | images | seconds | images/s | final state of the progress bar |",
        "|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        bar = r["bar"].replace("|", "\\|")
        lines.append(f"| {r['label']} | {r['images']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | `{bar}` |")
    rates = {r["route"]: r["images_per_s"] for r in data["rows"] if r.get("route")}
    if {"edge", "paper"} <= set(rates):
        lines += ["", f"Default (edge) route / paper route build rate, side by side in this run: "
                  f"**{rates['edge'] / rates['paper']:.2f}×** (the flip-averaged segmenter, the edge refiner at 64 px "
                  "and the grown hole; a bank is built once)."]
    s = data["save"]
    lines += ["", f"Save → load of the on-the-fly bank ({tuple(s['shape'])} uint8): {s['size_mib']:.1f} MiB on disk, "
              f"save {s['save_s']:.2f} s, load {s['load_s']:.2f} s, bit-identical: **{s['identical']}**."]
    rows = [(f"this section, {r['label']}", r["images_per_s"], data["size"], r["route"], data["n"], data["threads"],
             data["recorded"], data["load"]) for r in data["rows"] if r.get("route")]
    for e in data.get("elsewhere", []):
        rate = e.get("images_per_s")
        if rate is None and throughput is not None and e.get("from_json") == "throughput.json:bank_build":
            rate = throughput.get("cpu", {}).get("bank_build")
        if rate is not None:
            rows.append((e["where"], rate, e["size"], e["route"], e["images"], e["threads"], e["recorded"], e["load"]))
    lines += ["", "Every bank-build rate in RESULTS.md and its archive, and what it measured (the rates differ by route, "
              "thread count and the load of the shared 2-core machine; the edge route is the default since "
              f"{data['edge_default_since']}; only rates measured side by side in one run compare):", "",
              "| figure | images/s | size | route | images | torch threads | recorded | load average |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {w} | {rate:.1f} | {size}² | {route} | {n} | {t} | {rec} | {load} |"
              for w, rate, size, route, n, t, rec, load in rows]
    return "\n".join(lines)
