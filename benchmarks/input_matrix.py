"""The transform-side input matrix of issue 11: samples whose parts must stay consistent and inputs that must
raise a clear error, one case per line, run against the ``torch_backswap`` that Python imports.

It works on v0.1 (where a ``tv_tensors.Mask`` was the object's alpha) and v0.2 (``ObjectAlpha``); run it
against an older tree for the "before" column::

    mkdir -p /tmp/old && git archive 8207d89 torch_backswap weights | tar -x -C /tmp/old
    (cd /tmp && PYTHONPATH=/tmp/old python /work/main/benchmarks/input_matrix.py > /tmp/before.txt)
    python -m benchmarks.input_matrix --before /tmp/before.txt --before-name v0.1 --write
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from benchmarks._common import before_after_table
from torch_backswap.functional import Compositing


RESULTS_JSON = Path(__file__).resolve().parent / "results" / "input_matrix.json"

def run_cases() -> dict[str, str]:
    import torch_backswap as tb
    from torch_backswap.bank import BackgroundBank
    from torch_backswap.transform import BackgroundSwap

    V2 = hasattr(tb, "ObjectAlpha")  # v0.2: the object is an ObjectAlpha; v0.1: any tv_tensors.Mask
    Alpha = tb.ObjectAlpha if V2 else tv_tensors.Mask
    H = W = 32
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)
    obj = torch.zeros(1, H, W, dtype=torch.bool); obj[:, 8:24, 8:24] = True
    bank = BackgroundBank(torch.randint(0, 256, (4, 3, H, W), generator=g, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    class Seg(torch.nn.Module):
        def forward(self, x):
            out = torch.full((x.shape[0], 8, 8), -10.0); out[:, 2:6, 2:6] = 10.0; return out
    class NoSeg(torch.nn.Module):
        def forward(self, x): return torch.full((x.shape[0], 8, 8), -10.0)
    RESULTS: dict[str, str] = {}


    def run(name, fn):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                RESULTS[name] = f"{fn()}"
        except Exception as e:  # noqa: BLE001 - the outcome is the report
            RESULTS[name] = f"{type(e).__name__}: {str(e)[:200]}"
    def s(**kw): return BackgroundSwap(bank, seed=0, **kw)
    def c1():
        inst = torch.zeros(2, H, W, dtype=torch.bool); inst[0] = obj[0]
        out = s()(img, Alpha(obj.float()) if V2 else None, tv_tensors.Mask(inst)) if V2 else s()(img, tv_tensors.Mask(inst))
        return f"ok, mask shape {tuple(out[-1].shape)}"
    run("detection-style (2,H,W) Mask in the sample", c1)
    def c2():
        seg = tv_tensors.Mask(torch.where(obj[0], 7, 3).to(torch.uint8))
        out = s()(img, Alpha(obj.float()), seg) if V2 else s(compositing=Compositing(feather_px=0))(img, seg)
        return f"values after: {sorted(out[-1].unique().tolist())}"
    run("class-id segmentation Mask 0/3/7", c2)
    def c3():
        speck = torch.zeros(1, H, W, dtype=torch.bool); speck[:, 2:4, 2:4] = True
        m = tv_tensors.Mask(speck.to(torch.uint8) * 5)
        out = s()(img, Alpha(speck), m) if V2 else s()(img, m)
        return f"image unchanged: {torch.equal(out[0], img)}; mask unchanged: {torch.equal(out[-1], m)}"
    run("speck object: image and mask unchanged", c3)
    def c4():
        b = tv_tensors.BoundingBoxes([[8, 8, 24, 24]], format="XYXY", canvas_size=(H, W))
        out = s()(img, Alpha(obj.float()), b)
        moved = out[1].as_subclass(torch.Tensor) > 0.5
        return f"box {out[-1][0].tolist()}; object moved: {not torch.equal(moved, obj)}"
    run("BoundingBoxes of the moved object", c4)
    def c5():
        t = obj[0].long() * 4
        out = BackgroundSwap(bank, Seg(), seed=0)((img, t))
        return f"ok, target unchanged: {out[1] is t}"
    run("(image, (H,W) tensor target) tuple", c5)
    def c6():
        out = BackgroundSwap(bank, Seg(), seed=0)(img.float())
        return f"no error; output range [{out.min():.1f}, {out.max():.1f}]"
    run("float image in 0..255 (ToDtype without scale)", c6)
    def c7():
        out = BackgroundSwap(bank, Seg(), seed=0)(img.float() / 127.5 - 1)
        return f"no error; output range [{out.min():.2f}, {out.max():.2f}]"
    run("float image normalised to [-1, 1]", c7)
    def c8():
        x = img.float() / 255; x[0, 12, 8] = float("inf")
        out = BackgroundSwap(bank, Seg(), seed=0)(x)
        return f"no error; NaN in output: {bool(torch.isnan(out).any())}"
    run("one inf pixel next to the object", c8)
    def c9():
        x = torch.full((1, H, W), 255, dtype=torch.uint8)
        out = BackgroundSwap(bank, Seg(), p=0.0)(x)
        return f"max value {int(out.max())} (input 255); identical: {torch.equal(out, x)}"
    run("p=0 on a 1-channel uint8 image", c9)
    def c10():
        pil = Image.fromarray(np.full((H, W), 255, np.uint8), mode="L")
        out = BackgroundSwap(bank, NoSeg())(pil)
        return f"identical: {np.array_equal(np.asarray(out), np.asarray(pil))}"
    run("no foreground found on a PIL 'L' image", c10)
    def c11():
        x = torch.cat([img, torch.full((1, H, W), 77, dtype=torch.uint8)])
        out = BackgroundSwap(bank, Seg(), p=0.0)(x)
        return f"alpha channel kept: {bool((out[3] == 77).all())}"
    run("p=0 on an RGBA tensor", c11)
    for kind, lab in (("list", [0, 1]), ("NumPy", np.array([0, 1]))):
        def c12(lab=lab):
            x = torch.stack([img, img]); al = torch.stack([obj, obj]).float()
            out = s(strategy="other_class")(x, lab, Alpha(al))
            return f"ok, labels returned unchanged: {np.array_equal(np.asarray(out[1]), np.asarray(lab))}"
        run(f"other_class with labels as a {kind}", c12)
    def c13():
        x = torch.stack([img, img])
        return s().swap_batch(x, masks=obj[None].expand(3, -1, -1, -1)) if not V2 else s().swap_batch(x, alphas=obj[None].expand(3, -1, -1, -1))
    run("3 alphas for 2 images", c13)
    # issue 24: defects found trying the package as a user would
    def c14(hw, shape):
        big = torch.full((3, *hw), 255, dtype=torch.uint8)
        out = s()(big, Alpha(torch.ones(shape)))
        return f"ok, alpha back as {tuple(out[1].shape)}"
    run("ObjectAlpha (1,32,32) for a (3,64,64) image", lambda: c14((64, 64), (1, 32, 32)))
    run("ObjectAlpha (1,64,48) for a (3,48,64) image", lambda: c14((48, 64), (1, 64, 48)))
    def c15():
        seg = tv_tensors.Mask(torch.where(obj[0], 7, 3).to(torch.uint8))
        out = BackgroundSwap(bank, Seg(), seed=0)(img, seg)
        return f"values after: {sorted(out[-1].unique().tolist())}"
    run("class-id Mask 0/3/7 with the segmenter's cut-out (no alpha in the sample)", c15)
    def c16(collate):
        data = tb.ObjectAlphaDataset([(img, 0), (img, 1)], torch.stack([obj, obj]).float())
        swap = s(strategy="other_class")
        if collate:
            batch = tb.BackgroundSwapCollate(swap)([data[0], data[1]])
        else:
            batch = swap(data[0])
        return f"ok, background classes {swap.last_record.background_labels.tolist()}"
    run("ObjectAlphaDataset sample (image, alpha, label), strategy=other_class", lambda: c16(False))
    run("ObjectAlphaDataset batch through BackgroundSwapCollate, strategy=other_class", lambda: c16(True))
    def c17():
        from torch_backswap.functional import gather_backgrounds, sample_params, swap_backgrounds
        x = torch.stack([img, img]); al = torch.stack([obj, obj]).float()
        params = sample_params(2, bank, generator=torch.Generator().manual_seed(0))
        bgs = gather_backgrounds(bank, params, (H, W)); kept = bgs.clone()
        swap_backgrounds(x, al, bgs, params)
        return f"caller's backgrounds unchanged: {torch.equal(bgs, kept)}"
    run("functional.swap_backgrounds(images, alphas, backgrounds, params)", c17)
    x2, al2 = torch.stack([img, img]), Alpha(torch.stack([obj, obj]).float())
    def c18(labels):
        out = s()(x2, labels, al2)
        return f"ok, labels returned: {out[1]}"
    run("3 labels for 2 images, default strategy", lambda: c18([0, 1, 1]))
    run("label 5 for a bank of classes 0 and 1", lambda: c18([0, 5]))
    def c19():
        swap = s(strategy="other_class", labels_getter=None)
        return f"constructed; first call: {swap(x2, [0, 1], al2)[0].shape}"
    run("labels_getter=None with strategy=other_class", c19)
    def c20(extra):
        out = BackgroundSwap(bank, Seg(), seed=0)(tv_tensors.Image(img), extra)
        return f"first swapped: {not torch.equal(out[0], img)}; second item unchanged: {out[1] is extra}"
    run("two tv_tensors.Image in one sample", lambda: c20(tv_tensors.Image(img.clone())))
    run("tv_tensors.Image and a tv_tensors.Video in one sample", lambda: c20(tv_tensors.Video(img[None].clone())))
    run("a tv_tensors.Video alone", lambda: BackgroundSwap(bank, Seg(), seed=0)(tv_tensors.Video(img[None].clone())))
    def c21(p):
        x = img.clone()
        out = BackgroundSwap(bank, Seg(), seed=0, p=p)(x)
        return f"output is the input object: {out is x}; shares its memory: {out.data_ptr() == x.data_ptr()}"
    run("p=0 (not swapped): is the output the input?", lambda: c21(0.0))
    run("p=1 (swapped): is the output the input?", lambda: c21(1.0))
    return RESULTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="BackgroundSwap input matrix (issue 11)")
    parser.add_argument("--before", type=Path, help="this script's output for an older tree")
    parser.add_argument("--before-name", default="before")
    parser.add_argument("--write", action="store_true", help="also store the cases in benchmarks/results/ (RESULTS.md is rendered from there)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    after = run_cases()
    table = before_after_table(after, args.before, args.before_name, ("case",))
    if table is None:
        return
    print(table)
    if args.write:
        from benchmarks._common import write_case_matrix

        command = f"python -m benchmarks.input_matrix --before {args.before} --before-name {args.before_name} --write"
        path = write_case_matrix(RESULTS_JSON, title='BackgroundSwap inputs, before and after', command=command, columns=("case",),
                                 before_file=args.before, before_name=args.before_name, after=after,
                                 note='')
        print(f"wrote {path}; python -m benchmarks.report renders it into RESULTS.md")

if __name__ == "__main__":
    main()
