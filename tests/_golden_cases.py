"""Golden cases: fixed seeds, fixed inputs -> digests of the swapped batches, the bank bytes and the demo figures.

Written before the v0.2 refactor (issue 9) and pinned in ``tests/data/golden.json``; ``tests/test_golden.py``
checks the refactored code reproduces them. Regenerate (only when a change is meant to alter outputs, and
say why in the commit): ``python tests/_golden_cases.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from torch_backswap._io import atomic_write_text

GOLDEN = Path(__file__).parent / "data" / "golden.json"


def digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(str(t.dtype).encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]


def _scene(b: int = 6, size: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(b, 1, size, size)
    for i in range(b):
        y0, x0 = 6 + 2 * i, 8 + i
        masks[i, :, y0 : y0 + 14 + i, x0 : x0 + 12] = 1.0
    labels = torch.arange(b) % 2
    bank_images = torch.randint(0, 256, (8, 3, size, size), generator=g, dtype=torch.uint8)
    return images, masks, labels, bank_images, torch.arange(8) % 2


def swap_cases() -> dict:
    from torch_backswap import BackgroundBank, BackgroundSwap

    images, masks, labels, bank_images, bank_labels = _scene()
    bank = BackgroundBank(bank_images, bank_labels)
    out = {}
    swap = BackgroundSwap(bank, seed=0)
    out["given_masks_uint8"] = digest(swap.swap_batch(images, labels, alphas=masks))
    swap = BackgroundSwap(bank, seed=1, p=0.5, strategy="other_class")
    out["given_masks_p05_other_class"] = digest(swap.swap_batch(images, labels, alphas=masks))
    swap = BackgroundSwap(bank, seed=2, feather_px=1.5)
    out["given_masks_float_feather"] = digest(swap.swap_batch(images.float() / 255, labels, alphas=masks))
    return out


def segmenter_cases() -> dict:
    from torch_backswap import BackgroundSwap, PatchSegmenter, StampBirds
    from torch_backswap.build import build_bank

    torch.set_num_threads(1)
    data = StampBirds(split="train", n=24, image_size=64, seed=0)
    seg = PatchSegmenter.from_pretrained("torch-backswap/patchseg-tiny-s16")
    # the paper's route (pinned before the edge route became build_bank's default)
    bank = build_bank(data.images, data.labels, segmenter=seg, classes=data.classes, progress=False, batch_size=10,
                      refiner=None)
    out = {"bank_backgrounds": digest(bank.backgrounds), "bank_labels": digest(bank.labels)}
    swap = BackgroundSwap(bank, seg, seed=0)
    out["segmenter_swap_uint8"] = digest(swap(data.images[:12], data.labels[:12])[0])
    prob = seg.predict_probability(data.images[:8])
    out["probability_sum"] = round(float(prob.double().sum()), 3)
    return out


def edge_route_cases() -> dict:
    """The defaults since the edge route won (issue 10): ``build_bank``'s bank and ``from_pretrained``'s swap."""
    from torch_backswap import BackgroundSwap, StampBirds
    from torch_backswap.build import build_bank

    torch.set_num_threads(1)
    data = StampBirds(split="train", n=24, image_size=64, seed=0)
    bank = build_bank(data.images, data.labels, segmenter="torch-backswap/patchseg-tiny-s16", classes=data.classes,
                      progress=False, batch_size=10)
    swap = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", bank, seed=0)
    alpha = swap.segment(data.images[:8])
    return {"bank_backgrounds": digest(bank.backgrounds), "swap_uint8": digest(swap(data.images[:12], data.labels[:12])[0]),
            "alpha_sum": round(float(alpha.double().sum()), 3)}


def finetune_cases() -> dict:
    """Digests of fine-tuned weights and their history (scratch and given model; AdamW with a validation split,
    SGD without one). Pinned before ``finetune_segmenter`` was split into steps."""
    from torch_backswap.finetune import finetune_segmenter
    from torch_backswap.labels import PatchLabels
    from torch_backswap.segmenter import PatchSegmenter

    torch.set_num_threads(1)
    images, masks, *_ = _scene(b=16, size=32)
    images = (images // 4 + (masks * 160).to(torch.uint8))  # a bright object on dark noise: learnable
    labels = PatchLabels.from_dense_masks(masks[:, 0], [f"img{i:02d}" for i in range(16)], 4, drop_empty=False)
    small = {"input_size": 32, "width": 8}
    torch.manual_seed(0)
    given = PatchSegmenter(grid_size=4, **small)
    runs = {
        "scratch_adamw_val": finetune_segmenter(None, images, labels, epochs=5, batch_size=4, seed=5, lr=0.01,
                                                progress=False, scratch_kwargs=small),
        "given_sgd_no_val": finetune_segmenter(given, images, labels, epochs=2, batch_size=8, seed=6,
                                               progress=False, optimizer="sgd", val_fraction=0.0, max_shift=0),
    }
    out = {}
    for name, (model, history) in runs.items():
        state = model.state_dict()
        out[f"{name}_weights"] = digest(torch.cat([state[k].flatten().double() for k in sorted(state)]))
        out[f"{name}_history"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()
                                   if k != "seconds"} for h in history]
    return out


def compute() -> dict:
    return {"swap": swap_cases(), "segmenter": segmenter_cases(), "finetune": finetune_cases(),
            "edge_route": edge_route_cases()}


if __name__ == "__main__":
    if "--write" in sys.argv:
        pinned = json.loads(GOLDEN.read_text())  # the demo figures and older versions' entries stay
        atomic_write_text(GOLDEN, json.dumps({**pinned, **compute()}, indent=2, sort_keys=True) + "\n")
        print(GOLDEN.read_text())
    else:
        print(json.dumps(compute(), indent=2, sort_keys=True))
