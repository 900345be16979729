"""inpaint_quality.py — fill quality of every inpainter against the true background, on StampBirds.

Run from the repository root::

    python -m benchmarks.inpaint_quality [--n 300] [--sizes 128 64] [--threads 1] [--no-write]

StampBirds knows the background before the bird was pasted (``true_backgrounds``), so the fill of a
hole can be scored against ground truth. For each image size, on the first ``--n`` images of the test
split (held-out photos), two kinds of hole are filled:

* **alpha+d**: the exact bird alpha (> 0) dilated by ``round(size / 32)`` px — the hole a loose mask
  would cut, without segmentation errors;
* **seg loose**: the loose mask of the bundled segmenter (``torch-backswap/patchseg-tiny-s16``,
  probability > :data:`~torch_backswap.segmenter.LOOSE_THRESHOLD` = 0.1), the paper's hole
  (``build_bank(..., refiner=None)``). Skipped when the weights are not there. Bird pixels the mask misses stay in the
  "background" and count as error in the whole-image PSNR.

Reported per method: PSNR (dB, signal range 1) inside the hole only and over the whole image, mean ± std
over images, and the fill throughput in images/s (holes alpha+d, batches of ``--batch-size``, CPU,
``--threads`` torch threads). A reference row "bird left in" scores the unfilled composite. A second,
small table sweeps the segmenter's hole threshold (``--sweep``) with the ``pyramid`` fill: hole area,
share of the bird inside the hole, PSNR.

The table goes to the ``inpaint_quality`` section of ``benchmarks/RESULTS.md`` (through
``_common.write_section``) and the raw numbers to ``benchmarks/results/inpaint_quality.json``.
Takes well under a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from torch_backswap._io import atomic_write_text
from benchmarks._common import weights_id, dilate, loadavg, machine_line, make_inpainter, psnr, write_section

from torch_backswap.datasets import StampBirds  # noqa: E402
from torch_backswap.segmenter import LOOSE_THRESHOLD, PatchSegmenter  # noqa: E402

SEGMENTER = "torch-backswap/patchseg-tiny-s16"
METHODS = ["pyramid", "pyramid_smooth", "gray", "mean", "noise", "scramble_pixels", "scramble_patches"]
HERE = Path(__file__).resolve().parent








def fill_all(method: str, images: torch.Tensor, holes: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Fill every image in batches; returns (float filled images, seconds spent filling)."""
    fill = make_inpainter(method)
    out = []
    seconds = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].float().div(255.0)
        h = holes[i : i + batch_size]
        start = time.perf_counter()
        y = fill(x, h)
        seconds += time.perf_counter() - start
        out.append(y)
    return torch.cat(out), seconds


def fmt(values: torch.Tensor) -> str:
    v = values[torch.isfinite(values)]
    if v.numel() == 0:
        return "–"
    return f"{v.mean().item():.2f} ± {v.std().item():.2f}"


def run_size(size: int, args: argparse.Namespace, segmenter: PatchSegmenter | None) -> dict:
    data = StampBirds(split="test", image_size=size, n=args.n, seed=args.seed)
    images = data.images
    truth = data.true_backgrounds.float().div(255.0)
    bird = data.alpha > 0
    radius = max(1, round(size / 32))
    hole_sets = {"alpha+d": dilate(bird, radius)}
    if segmenter is not None:
        with torch.no_grad():
            prob = torch.cat([segmenter.predict_probability(images[i : i + args.batch_size])
                              for i in range(0, len(images), args.batch_size)])
        hole_sets["seg loose"] = prob > LOOSE_THRESHOLD
        result_sweep = []
        for threshold in args.sweep:
            holes = prob > threshold
            covered = (data.alpha * holes).sum(dim=(1, 2, 3)) / data.alpha.sum(dim=(1, 2, 3)).clamp_min(1e-6)
            filled, _ = fill_all("pyramid", images, holes, args.batch_size)
            result_sweep.append({
                "threshold": threshold,
                "hole_area_mean": holes.float().mean().item(),
                "bird_alpha_covered_mean": covered.mean().item(),
                "images_bird_fully_covered": int((covered > 0.999).sum()),
                "psnr_hole": psnr(filled, truth, holes).tolist(),
                "psnr_image": psnr(filled, truth).tolist(),
            })

    result: dict = {"size": size, "n": len(images), "dilation_px": radius, "holes": {}, "methods": {}}
    if segmenter is not None:
        result["threshold_sweep"] = result_sweep
    for kind, holes in hole_sets.items():
        area = holes.float().mean(dim=(1, 2, 3))
        covered = (data.alpha * holes).sum(dim=(1, 2, 3)) / data.alpha.sum(dim=(1, 2, 3)).clamp_min(1e-6)
        result["holes"][kind] = {
            "hole_area_mean": area.mean().item(),
            "bird_alpha_covered_mean": covered.mean().item(),
            "images_bird_fully_covered": int((covered > 0.999).sum()),
            "images_empty_hole": int((area == 0).sum()),
        }
    reference = images.float().div(255.0)
    result["methods"]["bird left in"] = {
        kind: {"psnr_hole": psnr(reference, truth, holes).tolist(), "psnr_image": psnr(reference, truth).tolist()}
        for kind, holes in hole_sets.items()
    }
    for method in args.methods:
        entry: dict = {}
        for kind, holes in hole_sets.items():
            filled, seconds = fill_all(method, images, holes, args.batch_size)
            entry[kind] = {
                "psnr_hole": psnr(filled, truth, holes).tolist(),
                "psnr_image": psnr(filled, truth).tolist(),
                "images_per_s": len(images) / max(seconds, 1e-9),
            }
        result["methods"][method] = entry
        print(f"{size}px {method:>16}: " + "  ".join(
            f"{k}: hole {fmt(torch.tensor(v['psnr_hole']))} dB, {v['images_per_s']:.0f} img/s" for k, v in entry.items()),
            flush=True)
    return result


def markdown(results: list[dict], args: argparse.Namespace, command: str, loads: tuple[str, str],
             seg_note: str, seconds: float) -> str:
    lines = [
        "## Inpainting fill quality (PSNR vs the true background, StampBirds test)",
        "",
        f"`{command}`",
        "",
        machine_line() + f"; load average (1/5/15 min) {loads[0]} at start, {loads[1]} at end; "
        f"{seconds:.0f} s in all. The machine is shared by several people at once, so the images/s "
        "are indicative only.",
        "",
        f"Holes: **alpha+d** = exact bird alpha (> 0) dilated by size/32 px (the hole a perfect loose mask "
        f"would cut); **seg loose** = {seg_note}. PSNR in dB (range 1), mean ± std over the images; "
        "*hole* = inside the hole only, *image* = whole image (pixels outside the hole are kept, so bird "
        "pixels that a hole misses count as error). images/s: fill only, alpha+d holes, "
        f"batches of {args.batch_size}, {torch.get_num_threads()} CPU thread(s). "
        "`pyramid_smooth` = `PyramidInpainter(texture=0)` (push-pull without patch texture); "
        "*bird left in* = the unfilled composite, for scale.",
        "",
    ]
    for res in results:
        kinds = list(res["holes"])
        lines.append(f"### {res['size']} px, {res['n']} test images (dilation {res['dilation_px']} px)")
        lines.append("")
        for kind in kinds:
            h = res["holes"][kind]
            lines.append(
                f"- {kind}: hole = {100 * h['hole_area_mean']:.1f} % of the image on average, covers "
                f"{100 * h['bird_alpha_covered_mean']:.1f} % of the bird alpha (bird fully inside the hole in "
                f"{h['images_bird_fully_covered']}/{res['n']} images; empty hole in {h['images_empty_hole']})"
            )
        lines.append("")
        head = "| method | " + " | ".join(f"{k}: PSNR hole | {k}: PSNR image" for k in kinds) + " | images/s |"
        lines.append(head)
        lines.append("|" + "---|" * (2 + 2 * len(kinds)))
        for method, entry in res["methods"].items():
            cells = []
            for kind in kinds:
                cells.append(fmt(torch.tensor(entry[kind]["psnr_hole"])))
                cells.append(fmt(torch.tensor(entry[kind]["psnr_image"])))
            speed = entry[kinds[0]].get("images_per_s")
            name = f"*{method}*" if method == "bird left in" else f"`{method}`"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if speed is None else f'{speed:.0f}'} |")
        lines.append("")
        for kind in kinds:
            means = {m: torch.tensor(e[kind]["psnr_hole"]).nanmean().item() for m, e in res["methods"].items()
                     if m != "bird left in"}
            best = max(means, key=means.get)
            gain = (torch.tensor(res["methods"]["pyramid"][kind]["psnr_image"]).mean()
                    - torch.tensor(res["methods"]["bird left in"][kind]["psnr_image"]).mean()).item()
            lines.append(f"- {kind}: best fill inside the hole `{best}` ({means[best]:.2f} dB); the default "
                         f"`pyramid` changes the whole-image PSNR by {gain:+.2f} dB versus leaving the bird in.")
        lines.append("")
        if res.get("threshold_sweep"):
            lines.append(f"Segmenter hole threshold sweep at {res['size']} px (`pyramid` fill; "
                         f"{LOOSE_THRESHOLD} is the default loose threshold):")
            lines.append("")
            lines.append("| hole = p > | hole area | bird alpha covered | bird fully inside | PSNR hole | PSNR image |")
            lines.append("|---|---|---|---|---|---|")
            for row in res["threshold_sweep"]:
                lines.append(
                    f"| {row['threshold']} | {100 * row['hole_area_mean']:.1f} % | "
                    f"{100 * row['bird_alpha_covered_mean']:.1f} % | {row['images_bird_fully_covered']}/{res['n']} | "
                    f"{fmt(torch.tensor(row['psnr_hole']))} | {fmt(torch.tensor(row['psnr_image']))} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="test images per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--seed", type=int, default=0, help="StampBirds seed")
    parser.add_argument("--segmenter", default=SEGMENTER, help="segmenter for the loose-mask holes")
    parser.add_argument("--sweep", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5, 0.67],
                        help="segmenter hole thresholds for the sweep table (pyramid fill)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "inpaint_quality.json")
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.inpaint_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    load_start = loadavg()
    start = time.perf_counter()

    try:
        segmenter = PatchSegmenter.from_pretrained(args.segmenter).eval()
        sha = weights_id(args.segmenter)
        seg_note = (f"bundled segmenter `{args.segmenter}` (model.safetensors sha256 {sha}…) probability > "
                    f"{LOOSE_THRESHOLD} (the paper's loose mask, `build_bank(..., refiner=None)`)")
    except (FileNotFoundError, OSError) as err:
        print(f"segmenter {args.segmenter!r} not available ({err}); only alpha+d holes", flush=True)
        segmenter = None
        seg_note = f"not run (segmenter `{args.segmenter}` not available)"

    results = [run_size(size, args, segmenter) for size in args.sizes]
    seconds = time.perf_counter() - start
    md = markdown(results, args, command.strip(), (load_start, loadavg()), seg_note, seconds)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"command": command, "results": results}, indent=1))
    if not args.no_write:
        print(f"wrote section 'inpaint_quality' of {write_section('inpaint_quality', md)}")


if __name__ == "__main__":
    main()
