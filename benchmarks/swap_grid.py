"""swap_grid.py — PNG grids of the swap pipeline and of the inpainters on StampBirds (128 px).

Run from the repository root::

    python -m benchmarks.swap_grid [--n-rows 8] [--n-compare 4] [--scale 1] [--no-write]

Writes two figures (and the ``swap_grid`` section of ``benchmarks/RESULTS.md``):

* ``benchmarks/figures/swap_grid.png`` — one StampBirds test image per row (two per group), columns:
  original | tight mask | loose mask (hole) | inpainted background | true background |
  swap (segmenter masks) | swap (true alpha). Masks come from the bundled segmenter
  (``torch-backswap/patchseg-tiny-s16``: tight = p > 0.67 with the transform's feather, loose = p > 0.1)
  when its weights are there, else from the exact bird alpha (loose = alpha dilated by 4 px). The
  background is the default ``pyramid`` fill of the loose hole. The swaps are
  ``BackgroundSwap(bank, segmenter, seed=0).swap_batch`` with a bank built by ``build_bank``
  from 256 StampBirds *train* images; the last column passes the exact alpha as ``alphas=`` (same seed,
  hence the same backgrounds), to separate segmentation errors from compositing.
* ``benchmarks/figures/inpainters.png`` — every inpainter on the same images, with two hole kinds
  (exact alpha dilated by 4 px; the segmenter's loose mask): original | hole | true background | one
  column per inpainter.

The hole is shown as a magenta tint over the image. ``--scale`` enlarges every tile with nearest
neighbour. Takes a few seconds on one CPU thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from torch_backswap._io import write_with
from benchmarks._common import dilate, loadavg, machine_line, make_inpainter, weights_id, write_section

from torch_backswap.build import build_bank  # noqa: E402
from torch_backswap.cutout import CutOut  # noqa: E402
from torch_backswap.datasets import StampBirds  # noqa: E402
from torch_backswap.inpaint import get_inpainter  # noqa: E402
from torch_backswap.segmenter import LOOSE_THRESHOLD, TIGHT_THRESHOLD, PatchSegmenter  # noqa: E402
from torch_backswap.transform import BackgroundSwap  # noqa: E402

SEGMENTER = "torch-backswap/patchseg-tiny-s16"
HERE = Path(__file__).resolve().parent
INPAINTERS = ["pyramid", "pyramid_smooth", "gray", "mean", "noise", "scramble_pixels", "scramble_patches"]
FEATHER = 0.1  # BackgroundSwap's default feather (probability units)
HOLE_TINT = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)








def tinted(images: torch.Tensor, holes: torch.Tensor, strength: float = 0.55) -> torch.Tensor:
    """Float images with the hole blended towards magenta."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    a = holes.float() * strength
    return x * (1 - a) + HOLE_TINT * a


def to_pil(tile: torch.Tensor, scale: int) -> Image.Image:
    """(3, H, W) or (1, H, W) float in [0, 1] or uint8 → RGB PIL image, enlarged with nearest."""
    t = tile.float() / 255.0 if tile.dtype == torch.uint8 else tile.float()
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    arr = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr, "RGB")
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def grid(columns: list[tuple[str, torch.Tensor]], row_labels: list[str] | None, scale: int, title: str) -> Image.Image:
    """Tile ``columns`` (header, (R, C, H, W) tensor) into one image with headers and optional row labels."""
    rows = columns[0][1].shape[0]
    h, w = columns[0][1].shape[-2] * scale, columns[0][1].shape[-1] * scale
    gap, head, title_h = 4, 34, 26
    small, big = font(12), font(15)
    left = 0
    if row_labels:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left = max(probe.textlength(t, font=small) for t in row_labels) + 12
    width = int(left + len(columns) * (w + gap) + gap)
    height = title_h + head + rows * (h + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap + 2, 5), title, fill="black", font=big)
    for c, (name, tiles) in enumerate(columns):
        x0 = int(left + gap + c * (w + gap))
        for k, line in enumerate(name.split("\n")[:2]):
            draw.text((x0 + w / 2, title_h + 2 + 15 * k), line, fill="black", font=small, anchor="ma")
        for r in range(rows):
            canvas.paste(to_pil(tiles[r], scale), (x0, title_h + head + r * (h + gap)))
    if row_labels:
        for r, label in enumerate(row_labels):
            draw.text((6, title_h + head + r * (h + gap) + h / 2), label, fill="black", font=small, anchor="lm")
    return canvas


def pick_rows(groups: torch.Tensor, per_group: int) -> list[int]:
    """The first ``per_group`` indices of each group, interleaved group by group."""
    picked = []
    for k in range(per_group):
        for g in range(4):
            idx = (groups == g).nonzero().flatten()
            picked.append(int(idx[k]))
    return picked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-rows", type=int, default=8, help="images in swap_grid.png (multiple of 4)")
    parser.add_argument("--n-compare", type=int, default=4, help="images in inpainters.png (multiple of 4)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scale", type=int, default=1, help="nearest-neighbour enlargement of each tile")
    parser.add_argument("--bank-n", type=int, default=256, help="StampBirds train images in the bank")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--segmenter", default=SEGMENTER)
    parser.add_argument("--out-dir", type=Path, default=HERE / "figures")
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = ("python -m benchmarks.swap_grid " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    start = time.perf_counter()
    load_start = loadavg()

    try:
        segmenter = PatchSegmenter.from_pretrained(args.segmenter).eval()
        seg_note = f"bundled segmenter `{args.segmenter}` (model.safetensors sha256 {weights_id(args.segmenter)}…)"
    except (FileNotFoundError, OSError) as err:
        print(f"segmenter {args.segmenter!r} not available ({err}); using the true alpha", flush=True)
        segmenter, seg_note = None, None

    need = max(args.n_rows, args.n_compare) // 4 + 1
    test = StampBirds(split="test", image_size=args.size, n=max(64, 8 * need))
    radius = max(1, round(args.size / 32))
    rows = pick_rows(test.groups, args.n_rows // 4)
    images, alpha, truth, labels = test.images[rows], test.alpha[rows], test.true_backgrounds[rows], test.labels[rows]
    with torch.no_grad():
        if segmenter is not None:
            cut_out = CutOut(segmenter, tight_threshold=TIGHT_THRESHOLD, feather=FEATHER)  # the paper's route
            tight = cut_out(images)
            loose = cut_out.probability(images) > LOOSE_THRESHOLD
        else:
            tight = alpha
            loose = dilate(alpha > 0, radius)
        background = get_inpainter("pyramid")(images.float() / 255.0, loose)

        train = StampBirds(split="train", image_size=args.size, n=args.bank_n)
        if segmenter is not None:
            bank = build_bank(train.images, train.labels, segmenter=segmenter, progress=False)
        else:
            bank = build_bank(train.images, train.labels, holes=dilate(train.alpha > 0, radius), progress=False)
        swapped_seg = BackgroundSwap(bank, segmenter, seed=0).swap_batch(
            images, labels, alphas=None if segmenter is not None else alpha)
        swapped_true = BackgroundSwap(bank, segmenter, seed=0).swap_batch(images, labels, alphas=alpha)

    bird = alpha.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    tight_cover = ((tight * alpha).sum(dim=(1, 2, 3)) / bird).tolist()
    empty_tight = int((tight.flatten(1).amax(dim=1) == 0).sum())
    group_names = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    row_labels = [group_names[int(test.groups[i])] for i in rows]
    mask_src = "segmenter" if segmenter is not None else "true alpha"
    columns = [
        ("original", images),
        (f"tight mask\n({mask_src}{' p>0.67' if segmenter is not None else ''})", tight),
        (f"loose hole\n({mask_src}{' p>0.1' if segmenter is not None else ' +4px'})", tinted(images, loose)),
        ("inpainted bg\n(pyramid)", background),
        ("true bg\n(ground truth)", truth),
        (f"swapped\n({mask_src} masks)", swapped_seg),
        ("swapped\n(true alpha)", swapped_true),
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    title = f"StampBirds test, {args.size} px: background swap with {mask_src} masks"
    fig1 = grid(columns, row_labels, args.scale, title)
    path1 = args.out_dir / "swap_grid.png"
    write_with(path1, lambda tmp: fig1.save(tmp, format="PNG", optimize=True))

    # inpainters side by side, two hole kinds
    rows2 = pick_rows(test.groups, args.n_compare // 4)
    imgs2, alpha2, truth2 = test.images[rows2], test.alpha[rows2], test.true_backgrounds[rows2]
    hole_kinds = [("alpha+4px", dilate(alpha2 > 0, radius))]
    if segmenter is not None:
        with torch.no_grad():
            hole_kinds.append(("seg p>0.1", segmenter.predict_probability(imgs2) > LOOSE_THRESHOLD))
    all_imgs = torch.cat([imgs2] * len(hole_kinds))
    all_holes = torch.cat([h for _, h in hole_kinds])
    labels2 = [f"{k}\n{group_names[int(test.groups[i])]}" for k, _ in hole_kinds for i in rows2]
    columns2 = [("original", all_imgs), ("hole", tinted(all_imgs, all_holes)),
                ("true bg", torch.cat([truth2] * len(hole_kinds)))]
    for name in INPAINTERS:
        with torch.no_grad():
            columns2.append((name.replace("_", "\n", 1) if len(name) > 12 else name,
                             make_inpainter(name)(all_imgs.float() / 255.0, all_holes)))
    title2 = f"StampBirds test, {args.size} px: every inpainter on the same holes (rows: hole kind, group)"
    fig2 = grid(columns2, [t.replace("\n", " · ") for t in labels2], args.scale, title2)
    path2 = args.out_dir / "inpainters.png"
    write_with(path2, lambda tmp: fig2.save(tmp, format="PNG", optimize=True))
    seconds = time.perf_counter() - start
    print(f"wrote {path1} {fig1.size} and {path2} {fig2.size} in {seconds:.1f} s")

    masks_line = (
        f"Masks: {seg_note}; tight = p > {TIGHT_THRESHOLD} with feather {FEATHER} (as `BackgroundSwap` uses it), "
        f"loose hole = p > {LOOSE_THRESHOLD}." if segmenter is not None else
        f"Masks: the exact StampBirds alpha (the segmenter weights were not available); loose hole = alpha "
        f"dilated by {radius} px."
    )
    if segmenter is not None:
        masks_line += (
            f" On the {len(rows)} rows of the swap grid the tight mask covers "
            f"{', '.join(f'{100 * c:.0f}' for c in tight_cover)} % of the bird's alpha; it is empty in "
            f"{empty_tight} of them, and those images come back unchanged (documented behaviour).")
    md = "\n".join([
        "## Swap and inpainter grids (StampBirds test, 128 px)",
        "",
        f"`{command}`",
        "",
        machine_line() + f"; load average {load_start} at start (shared machine); {seconds:.0f} s.",
        "",
        masks_line,
        "",
        f"![swap grid](figures/swap_grid.png) — rows: two test images per group; columns: original | tight "
        f"mask | loose hole (magenta) | `pyramid` fill of the hole | true background | "
        f"`BackgroundSwap(bank, segmenter, seed=0).swap_batch` | the same with the exact alpha as `alphas=` (same "
        f"seed, so the same backgrounds). Bank: `build_bank` on {args.bank_n} StampBirds train images "
        f"({'segmenter loose holes' if segmenter is not None else 'dilated alpha holes'}, `pyramid`).",
        "",
        f"![inpainters](figures/inpainters.png) — every inpainter on the same {args.n_compare} images, first with "
        f"the exact alpha dilated by {radius} px as the hole"
        f"{', then with the segmenter loose mask' if segmenter is not None else ''}.",
    ])
    if not args.no_write:
        print(f"wrote section 'swap_grid' of {write_section('swap_grid', md)}")


if __name__ == "__main__":
    main()
