"""bank_scaling.py — past one process: distributed bank builds and a streamed bank vs a resident one.

Run from the repository root::

    python -m benchmarks.bank_scaling [--n 384] [--size 96] [--rounds 2] [--no-write]

1. **Build images/s, 1 vs 2 processes.** ``build_bank`` (bundled ``patchseg-tiny-s16`` segmenter + the default
   pyramid inpainter, StampBirds train images, shards of ``--shard-size``) launched with
   ``python -m torch.distributed.run --standalone --nproc_per_node={1,2}`` (gloo, one torch thread per
   process), alternating 1, 2, 1, 2, ... for ``--rounds`` rounds in the same run. images/s is the build's own
   global figure (images built by all ranks / seconds of the build loop on rank 0, process start-up and
   dataset generation excluded); the wall time of each launch is reported too. Both builds must be
   byte-identical.
2. **Streamed vs resident ``sample``.** A bank of ``--bank-n`` random 64x64 backgrounds with 4 imbalanced
   classes (55/25/15/5 %), sharded on disk; ``StreamingBackgroundBank`` with a cap of 1/8 of the bank (its
   background thread refilling) vs the whole bank resident (``BackgroundBank``), ``sample(64)`` in
   alternating timed windows; steady-state images/s and their ratio.
3. **Memory.** The streamed bank's working set + staging buffer (its own count) and the process's peak
   anonymous resident memory (``RssAnon``, sampled during the streamed run) above the level before the bank
   was opened — both against the cap. (Pages of the memory-mapped shards are file cache, counted apart as
   ``RssFile``.)
4. **Class balance.** Class frequencies of 10 000 class-balanced draws from the streamed bank (across its
   refills) and the share of the bank's backgrounds drawn at least once.

Results go to the ``bank_scaling`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks._common import loadavg, machine_line, write_section

SEGMENTER = "torch-backswap/patchseg-tiny-s16"
WORKER_ENV = "BACKSWAP_BANK_SCALING_JOB"  # set for the torchrun workers: the build job as JSON


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------------------------
# 1. build: a torchrun worker and the launcher
# ----------------------------------------------------------------------------------------------------------


def worker_build(out: str, n: int, size: int, shard_size: int, batch_size: int) -> None:
    """Run under torchrun: build the StampBirds bank sharded into ``out``; rank 0 writes ``out.json``."""
    from torch_backswap.build import build_bank
    from torch_backswap.datasets import StampBirds

    torch.set_num_threads(1)
    data = StampBirds(split="train", n=n, image_size=size, seed=0)
    manifest = build_bank(data.images, data.labels, SEGMENTER, out=out, shard_size=shard_size,
                          batch_size=batch_size, classes=data.classes, progress=int(os.environ.get("RANK", "0")) == 0)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out + ".json").write_text(json.dumps(manifest.build_stats))


def launch_build(nproc: int, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "benchmarks.bank_scaling"]
    job = {"out": str(out), "n": args.n, "size": args.size, "shard_size": args.shard_size,
           "batch_size": args.batch_size}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", WORKER_ENV: json.dumps(job)})
    stats = json.loads(Path(str(out) + ".json").read_text())
    stats["wall_s"] = time.perf_counter() - start
    stats["nproc"] = nproc
    stats["files"] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}
    return stats


# ----------------------------------------------------------------------------------------------------------
# 2-4. streamed vs resident
# ----------------------------------------------------------------------------------------------------------


def make_bank(path: Path, n: int, shard_size: int) -> None:
    from torch_backswap.bank import BackgroundBank

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    share = torch.tensor([0.55, 0.25, 0.15, 0.05])
    labels = torch.multinomial(share, n, replacement=True, generator=g).sort().values
    BackgroundBank(images, labels, classes=["a", "b", "c", "d"]).save(path, shard_size=shard_size)


def timed_rate(bank, seconds: float, batch: int, g: torch.Generator) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        bank.sample(batch, generator=g)
        n += batch
    return n / (time.perf_counter() - start)


class PeakAnon:
    """Sample ``RssAnon`` every few ms in a thread; ``peak`` in KiB."""

    def __init__(self) -> None:
        self.peak, self._stop = _status_kib("RssAnon"), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_kib("RssAnon"))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def stream_vs_resident(path: Path, args: argparse.Namespace) -> dict:
    from torch_backswap.bank import BackgroundBank
    from torch_backswap.streaming import StreamingBackgroundBank

    bank_bytes = args.bank_n * 3 * 64 * 64
    cap = bank_bytes // 8
    base_anon, base_file = _status_kib("RssAnon"), _status_kib("RssFile")
    with PeakAnon() as peak:
        streamed = StreamingBackgroundBank(path, max_bytes=cap)
        open_anon = (_status_kib("RssAnon") - base_anon) * 1024
        g = torch.Generator().manual_seed(0)
        timed_rate(streamed, 0.5, args.batch, g)  # warm-up: thread started, working set turning over
        stream_rates = [timed_rate(streamed, args.window, args.batch, g)]
    out = {"cap": cap, "bank_bytes": bank_bytes, "resident_bytes": streamed.resident_bytes,
           "peak_bytes": streamed.stats["peak_bytes"], "peak_anon_delta": (peak.peak - base_anon) * 1024,
           "open_anon_delta": open_anon,
           "file_delta": (_status_kib("RssFile") - base_file) * 1024}
    resident = BackgroundBank.load(path)
    paused = StreamingBackgroundBank(path, max_bytes=cap, background=False, refill_every=2**62)  # never refills
    resident_rates, paused_rates = [], []
    gr, gp = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    timed_rate(resident, 0.5, args.batch, gr)
    for r in range(args.windows):
        resident_rates.append(timed_rate(resident, args.window, args.batch, gr))
        paused_rates.append(timed_rate(paused, args.window, args.batch, gp))
        if r + 1 < args.windows:
            stream_rates.append(timed_rate(streamed, args.window, args.batch, g))
    # class balance over 10 000 draws across refills (batches of 100)
    gb = torch.Generator().manual_seed(1)
    drawn = torch.zeros(len(streamed), dtype=torch.long)
    for _ in range(100):
        idx = streamed.sample_indices(100, generator=gb)
        drawn += torch.bincount(idx.cpu(), minlength=len(streamed))
    streamed.close()
    # refill throughput (synchronous refills, nothing else running) and class balance with refills at fixed points
    sync = StreamingBackgroundBank(path, max_bytes=cap, background=False)
    start, loaded = time.perf_counter(), 0
    while time.perf_counter() - start < args.window:
        loaded += sync.refill()
    refill_rate = loaded / (time.perf_counter() - start)
    sync = StreamingBackgroundBank(path, max_bytes=cap, background=False)
    sync_drawn = torch.zeros(len(sync), dtype=torch.long)
    for _ in range(100):
        sync_drawn += torch.bincount(sync.sample_indices(100, generator=gb), minlength=len(sync))
    labels = resident.labels.cpu()
    out.update({
        "stream_rates": stream_rates, "resident_rates": resident_rates, "paused_rates": paused_rates,
        "stats": dict(streamed.stats),
        "class_freq": (torch.bincount(labels, weights=drawn.double(), minlength=4) / drawn.sum()).tolist(),
        "bank_freq": (torch.bincount(labels, minlength=4).double() / len(labels)).tolist(),
        "coverage": float((drawn > 0).double().mean()),
        "sync_class_freq": (torch.bincount(labels, weights=sync_drawn.double(), minlength=4) / sync_drawn.sum()).tolist(),
        "sync_coverage": float((sync_drawn > 0).double().mean()),
        "refill_rate": refill_rate, "block": sync._block,
        "resident_count": streamed.resident,
    })
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=384, help="images to build")
    parser.add_argument("--size", type=int, default=96, help="bank resolution of the build")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="1-process and 2-process builds each")
    parser.add_argument("--bank-n", type=int, default=4096, help="backgrounds of the streamed bank")
    parser.add_argument("--batch", type=int, default=64, help="sample() batch")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per timed sample window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per bank")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if WORKER_ENV in os.environ:
        worker_build(**json.loads(os.environ[WORKER_ENV]))
        return
    torch.set_num_threads(1)
    command = ("python -m benchmarks.bank_scaling " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        builds = []
        for r in range(args.rounds):
            for nproc in (1, 2):
                builds.append(launch_build(nproc, tmp / f"build{nproc}_{r}", args))
                print(f"build nproc={nproc}: {builds[-1]['images_per_s']:.1f} images/s "
                      f"(wall {builds[-1]['wall_s']:.1f} s)", flush=True)
        identical = all(b["files"] == builds[0]["files"] for b in builds)
        make_bank(tmp / "stream", args.bank_n, shard_size=512)
        sr = stream_vs_resident(tmp / "stream", args)
    load_end = loadavg()

    def med(xs):
        return sorted(xs)[len(xs) // 2]

    one = [b["images_per_s"] for b in builds if b["nproc"] == 1]
    two = [b["images_per_s"] for b in builds if b["nproc"] == 2]
    ratio = med(two) / med(one)
    s_rate, r_rate = med(sr["stream_rates"]), med(sr["resident_rates"])
    mib = 2**20
    freq = ", ".join(f"{f:.3f}" for f in sr["class_freq"])
    sync_freq = ", ".join(f"{f:.3f}" for f in sr["sync_class_freq"])
    bank_freq = ", ".join(f"{f:.3f}" for f in sr["bank_freq"])
    lines = [
        f"Command: `{command}`",
        "",
        (machine_line() + f"; load average {load_start} at the start, {load_end} at the end (the machine is shared: "
        "absolute rates are indicative, ratios are measured side by side in this run)."),
        "",
        (f"**Build, 1 vs 2 processes** (`torchrun --standalone --nproc_per_node=N`, gloo, 1 torch thread per process; "
        f"{args.n} StampBirds images at {args.size}², bundled segmenter + pyramid inpainter, shards of "
        f"{args.shard_size}, batches of {args.batch_size}; global images/s of the build loop on rank 0, in launch order):"),
        "",
        "| processes | images/s | wall s (incl. start-up) |",
        "|---|---|---|",
        *[f"| {b['nproc']} | {b['images_per_s']:.1f} | {b['wall_s']:.1f} |" for b in builds],
        "",
        (f"2-process / 1-process build rate (medians): **{ratio:.2f}x**; every build byte-identical to the first: "
        f"**{identical}**."),
        "",
        (f"**Streamed vs resident bank** ({args.bank_n} backgrounds of 64², {sr['bank_bytes'] / mib:.1f} MiB, 4 classes "
        f"with shares {bank_freq}; streamed cap {sr['cap'] / mib:.2f} MiB = 1/8 of the bank, {sr['resident_count']} "
        f"backgrounds resident, background refill thread on; `sample({args.batch})` in {args.window:g} s windows, "
        "alternating):"),
        "",
        "| bank | images/s per window | median |",
        "|---|---|---|",
        f"| resident `BackgroundBank` | {', '.join(f'{r:.0f}' for r in sr['resident_rates'])} | {r_rate:.0f} |",
        f"| `StreamingBackgroundBank` | {', '.join(f'{r:.0f}' for r in sr['stream_rates'])} | {s_rate:.0f} |",
        (f"| `StreamingBackgroundBank`, refills paused (lookup + lock cost only) | "
         f"{', '.join(f'{r:.0f}' for r in sr['paused_rates'])} | {med(sr['paused_rates']):.0f} |"),
        "",
        (f"Streamed / resident steady-state `sample` rate: **{s_rate / r_rate:.2f}x** "
        f"({sr['stats']['refills']} refills, {sr['stats']['loaded']} backgrounds loaded, {sr['stats']['misses']} misses; "
        f"refills paused: {med(sr['paused_rates']) / r_rate:.2f}x). Here `sample` draws far faster than a training "
        "step consumes, so the refill thread (one block per block drawn) runs flat out and shares the 2 cores and "
        "the GIL with the sampling loop."),
        "",
        (f"Memory: the bank's buffers (working set + staging buffer, fixed at open) {sr['resident_bytes'] / mib:.2f} MiB "
        f"vs cap {sr['cap'] / mib:.2f} MiB: **{'under' if sr['resident_bytes'] <= sr['cap'] else 'OVER'} the cap**. "
        f"Process anonymous memory (`RssAnon`) above the level before opening: {sr['open_anon_delta'] / mib:.2f} MiB "
        f"right after opening, peak {sr['peak_anon_delta'] / mib:.2f} MiB during the streamed run (that also holds the "
        "sampled batches and the refill thread's own stack and malloc arena); file-backed pages of the mapped shards "
        f"{sr['file_delta'] / mib:.2f} MiB (page cache, reclaimable)."),
        "",
        (f"Class balance, 10 000 class-balanced draws (100 x `sample_indices(100)`) from the streamed bank across its "
        f"refills: class frequencies {freq} (target 0.250 each; max deviation "
        f"{max(abs(f - 0.25) for f in sr['class_freq']):.3f}); {100 * sr['coverage']:.1f} % of the bank's backgrounds "
        "drawn at least once (coverage is bounded by the refills the thread completed while the draws ran; it skips a "
        "backlog beyond 4 blocks). With "
        f"`background=False` (a refill of {sr['block']} every {sr['block']} draws, inside `sample`): class frequencies "
        f"{sync_freq} (max deviation {max(abs(f - 0.25) for f in sr['sync_class_freq']):.3f}), "
        f"{100 * sr['sync_coverage']:.1f} % of the backgrounds drawn."),
        "",
        (f"Refill throughput (synchronous `refill()` in a loop, numpy.memmap reads of random backgrounds): "
        f"{sr['refill_rate']:.0f} backgrounds/s ({sr['refill_rate'] * 3 * 64 * 64 / mib:.0f} MiB/s)."),
    ]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        write_section("bank_scaling", md)


if __name__ == "__main__":
    main()
