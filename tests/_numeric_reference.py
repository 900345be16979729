"""Reference cases of the float paths: fixed seeds and inputs -> tensors and figures, compared with tolerances.

``tests/test_numeric_reference.py`` checks the code against the figures stored in
``tests/data/numeric_reference.json`` (small figures, exact integers) and
``tests/data/numeric_reference.safetensors`` (reference tensors), and — independently of any stored figure —
that each case does what it is for (the swap puts the object on the bank's background; the bank has the
object removed; fine-tuning raises balanced accuracy).

What is compared bit for bit, and why that is safe on any CPU: only integer-only paths — which samples swap,
their bank indices and background classes (integer draws from a seeded ``torch.Generator``; no float
arithmetic decides them). Everything that passes through float convolutions, resampling or training is
compared with the tolerances in :data:`TOLERANCES`, each set from the spread measured between
``ATEN_CPU_CAPABILITY=default``, ``avx2`` and ``avx512`` at 1 and 2 threads (the largest difference seen is
in the comment next to it) with a wide margin, and far below what a real change of behaviour moves.

Regenerate (only for a change meant to alter outputs; say why in the commit)::

    python tests/_numeric_reference.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch_backswap.functional import Compositing
import torch.nn.functional as F

DATA = Path(__file__).parent / "data"
REFERENCE_JSON = DATA / "numeric_reference.json"
REFERENCE_TENSORS = DATA / "numeric_reference.safetensors"

#: Tolerances of the float paths, as ``(max abs difference, largest fraction of values that may differ)``
#: for uint8 images, or ``dict(atol=..., rtol=...)`` for ``torch.testing.assert_close``.
TOLERANCES = {
    # uint8 composite through float warps: a rounding at .5 may land one grey level apart on another SIMD
    # level (none seen across default/avx2/avx512); a behaviour change moves thousands of values by far more.
    "swap_uint8": (1, 0.005),
    # float composite: float32 rounding (seen: 1.2e-7 on 2.9 % of the values, default vs avx512)
    "swap_float": dict(atol=1e-5, rtol=0.0),
    # the same swaps composited by OpenCV (Compositing(backend="cv2"), what "auto" picks for uint8 CPU images when
    # cv2 imports) against the torch kernel's reference: fixed-point resampling and a uint8 moved alpha (composite's
    # module notes; seen: at most 2 levels, on 0.62 % of the values given masks, 0.98 % segmenting on the fly)
    "swap_uint8_cv2": (2, 0.02),
    # on-the-fly segmentation decides the cut-out by a threshold: a probability that sits on it may flip one
    # pixel between object and background (none seen); allow a few such pixels, never a different cut-out.
    "segmenter_swap_uint8": (255, 0.002),
    # banks: 8x8 block means of the uint8 backgrounds (one grey level on 3.4e-6 of the pixels seen, default vs
    # avx512: at most 1/64 of a level on a block mean); a changed fill moves block means by many levels.
    "bank_block_means": dict(atol=0.25, rtol=0.0),
    # segmenter logits through convolutions (seen: identical); float32 accumulation order differs by SIMD width
    "logits": dict(atol=1e-4, rtol=1e-4),
    # the edge route's alpha, 4x4 block means (seen: identical)
    "alpha_block_means": dict(atol=1e-3, rtol=0.0),
    # fine-tuned weights after a few epochs (seen: 2.6e-6 max, default vs avx512, 5 AdamW epochs)
    "finetune_weights": dict(atol=1e-4, rtol=1e-3),
    # the fine-tuning history's losses (float32 means over a few batches)
    "finetune_loss": dict(atol=1e-4, rtol=1e-4),
}


def swap_scene(b: int = 6, size: int = 48, seed: int = 0):
    """Random uint8 images with a box object each, labels, and a two-class bank of random backgrounds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(b, 1, size, size)
    for i in range(b):
        y0, x0 = 6 + 2 * i, 8 + i
        masks[i, :, y0 : y0 + 14 + i, x0 : x0 + 12] = 1.0
    labels = torch.arange(b) % 2
    bank_images = torch.randint(0, 256, (8, 3, size, size), generator=g, dtype=torch.uint8)
    return images, masks, labels, bank_images, torch.arange(8) % 2


def swap_runs(backend: str = "torch") -> dict:
    """name -> (swap, images, alphas, labels, output): the batched swap with given alphas. The reference is the torch
    compositing kernel's (``backend="torch"``); OpenCV's (``"cv2"``) has its own tolerance."""
    from torch_backswap import BackgroundBank, BackgroundSwap

    images, masks, labels, bank_images, bank_labels = swap_scene()
    bank = BackgroundBank(bank_images, bank_labels)
    comp = Compositing(backend=backend)
    runs = {}
    for name, swap, x in [
        ("given_masks_uint8", BackgroundSwap(bank, seed=0, compositing=comp), images),
        ("given_masks_p05_other_class", BackgroundSwap(bank, seed=1, p=0.5, strategy="other_class", compositing=comp),
         images),
        ("given_masks_float_feather", BackgroundSwap(bank, compositing=Compositing(feather_px=1.5, backend="torch"),
                                                     seed=2), images.float() / 255),
    ]:
        out = swap.swap_batch(x, labels, alphas=masks)
        runs[name] = (swap, x, masks, labels, out)
    return runs


def stampbirds_runs() -> dict:
    """The bundled segmenter on 24 StampBirds images: logits, both bank routes, the on-the-fly swaps."""
    from torch_backswap import BackgroundSwap, PatchSegmenter, StampBirds
    from torch_backswap.build import build_bank

    data = StampBirds(split="train", n=24, image_size=64, seed=0)
    seg = PatchSegmenter.from_pretrained("torch-backswap/patchseg-tiny-s16")
    paper_bank = build_bank(data.images, data.labels, segmenter=seg, classes=data.classes, progress=False,
                            batch_size=10, refiner=None)
    edge_bank = build_bank(data.images, data.labels, segmenter=seg, classes=data.classes, progress=False,
                           batch_size=10)
    edge_swap = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", edge_bank, seed=0)
    return {
        "data": data,
        "logits": seg.predict_logits(data.images[:8]),
        "paper_bank": paper_bank,
        "edge_bank": edge_bank,
        "segmenter": seg,
        **segmenter_swaps(data, seg, paper_bank, edge_bank),
        "edge_alpha": edge_swap.segment(data.images[:8]),
    }


def segmenter_swaps(data, seg, paper_bank, edge_bank, backend: str = "torch") -> dict:
    """``{"paper_swap": (swap, output), "edge_swap": ...}``: swaps segmenting 12 StampBirds images on the fly with
    each bank (compositing kernel ``backend``; the reference is torch's)."""
    from torch_backswap import BackgroundSwap

    comp = Compositing(backend=backend)
    paper_swap = BackgroundSwap(paper_bank, seg, seed=0, compositing=comp)
    edge_swap = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", edge_bank, seed=0, compositing=comp)
    return {"paper_swap": (paper_swap, paper_swap(data.images[:12], data.labels[:12])[0]),
            "edge_swap": (edge_swap, edge_swap(data.images[:12], data.labels[:12])[0])}


def finetune_runs() -> dict:
    """Fine-tuning a tiny segmenter on a learnable toy task: from scratch (AdamW, validation split) and a given
    model (SGD, no validation). name -> (model, history, images, labels)."""
    from torch_backswap.finetune import finetune_segmenter
    from torch_backswap.labels import PatchLabels
    from torch_backswap.segmenter import PatchSegmenter

    images, masks, *_ = swap_scene(b=16, size=32)
    images = images // 4 + (masks * 160).to(torch.uint8)  # a bright object on dark noise: learnable
    labels = PatchLabels.from_dense_masks(masks[:, 0], [f"img{i:02d}" for i in range(16)], 4, drop_empty=False)
    small = {"input_size": 32, "width": 8}
    torch.manual_seed(0)
    given = PatchSegmenter(grid_size=4, **small)
    given_before = {k: v.clone() for k, v in given.state_dict().items()}
    runs = {
        "scratch_adamw_val": finetune_segmenter(None, images, labels, epochs=5, batch_size=4, seed=5, lr=0.01,
                                                progress=False, scratch_kwargs=small),
        "given_sgd_no_val": finetune_segmenter(given, images, labels, epochs=2, batch_size=8, seed=6,
                                               progress=False, optimizer="sgd", val_fraction=0.0, max_shift=0),
    }
    return {name: (model, history, images, labels) for name, (model, history) in runs.items()} | {
        "given_before": given_before}


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> float32 means over ``block x block`` tiles."""
    return F.avg_pool2d(x.float(), block)


def flat_weights(model: torch.nn.Module) -> torch.Tensor:
    state = model.state_dict()
    return torch.cat([state[k].flatten().float() for k in sorted(state) if state[k].is_floating_point()])


def compute() -> tuple[dict, dict[str, torch.Tensor]]:
    """Everything the reference stores: ``(figures for JSON, tensors for safetensors)``."""
    figures: dict = {"swap": {}, "finetune": {}}
    tensors: dict[str, torch.Tensor] = {}
    for name, (swap, _, _, _, out) in swap_runs().items():
        record = swap.last_record
        figures["swap"][name] = {"swapped": record.swapped.tolist(), "bank_indices": record.bank_indices.tolist(),
                                 "background_labels": record.background_labels.tolist()}
        tensors[f"swap.{name}"] = out.contiguous()
    s = stampbirds_runs()
    tensors["segmenter.logits"] = s["logits"].contiguous()
    for route in ("paper", "edge"):
        tensors[f"bank.{route}.block_means"] = block_means(s[f"{route}_bank"].backgrounds, 8).contiguous()
        figures[f"bank_{route}_labels"] = s[f"{route}_bank"].labels.tolist()
        tensors[f"swap.{route}_segmenter"] = s[f"{route}_swap"][1].contiguous()
    tensors["edge.alpha_block_means"] = block_means(s["edge_alpha"], 4).contiguous()
    for name, run in finetune_runs().items():
        if name == "given_before":
            continue
        model, history = run[0], run[1]
        tensors[f"finetune.{name}.weights"] = flat_weights(model).contiguous()
        figures["finetune"][name] = [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    return figures, tensors


if __name__ == "__main__":
    from safetensors.torch import save_file

    from torch_backswap._io import atomic_write_text, write_with

    torch.set_num_threads(1)
    figures, tensors = compute()
    if "--write" in sys.argv:
        atomic_write_text(REFERENCE_JSON, json.dumps(figures, indent=1, sort_keys=True) + "\n")
        write_with(REFERENCE_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
        print(f"wrote {REFERENCE_JSON} and {REFERENCE_TENSORS}")
    else:
        print(json.dumps(figures, indent=1, sort_keys=True))
