"""Throughput of the background swap against the reference per-sample PIL paste and a plain copy (issue 5).

CPU suite (default) — one run, same inputs, interleaved rounds, medians::

    python -m benchmarks.throughput                 # 64², 128², 224²; writes the "throughput" section
    python -m benchmarks.throughput --quick         # 64² and 224², fewer rounds (~1 min)

Cases, images/s on batches of 64 at the same torch thread count (default 1, the per-core figure; the
reference paste is single-threaded Python/PIL):

* (a)  the reference recipe re-implemented: per sample, PIL crop to the mask's box, scale (0.5–1.5) and
       rotate (±30°) with nearest-neighbour resampling, translate (±32 px at 224 px, scaled with the image,
       clipped to stay in frame) and paste with the mask onto a PIL background. Decoded images in memory.
       (a') is the same with bilinear resampling (like for like with our bilinear composite).
       (a") the reference's per-sample path as a whole, as a ``Dataset.__getitem__`` does it: the mask comes
       from the S×S patch grid (nearest upsampling, blocky), image and mask get a full-frame
       ``torchvision.transforms.functional.affine`` (nearest), the paste, then ``pil_to_tensor``.
* (b)  ``BackgroundSwap`` per sample inside ``v2.Compose`` (the object's alpha carried in the sample as ``ObjectAlpha``).
* (c)  ``BackgroundSwap.swap_batch`` on the batch with a cached bank and given (uint8) masks (the default torch
       composite); (c, nearest) the same with nearest-neighbour resampling; (c, OpenCV) the same through
       ``Compositing(backend="cv2")``, OpenCV's uint8 kernel (only when ``cv2`` imports: the optional ``fast``
       extra; the rows are left out otherwise).
* (d)  ``swap_batch`` with on-the-fly segmentation (bundled tiny segmenter).
* (e)  a plain copy of the same bytes: ``index_select`` of B uint8 images from the bank (the bandwidth
       bound); (e') the same bytes converted to float32 (what a naive float pipeline pays at least).

Also: segmenter inference, bank build (default pyramid inpainter, segmenter on the fly, 2 threads), the
realistic loader yardstick (JPEG decode → RandomResizedCrop → flip, with and without the swap, and with a collate
that only copies the swap's bytes: the bandwidth bound), and where the time of one batched swap goes (segmenter,
cut-out, composite, the rest, and the uint8 copy of the same bytes). When ``cv2`` imports, the yardstick and the
breakdown also run the swap with the OpenCV composite, side by side with the torch kernel. The analysis under the
tables is generated from these measurements.

Device suite — the swap on an accelerator, and its overhead on a ResNet-50 bf16 training step::

    python -m benchmarks.throughput --device cuda   # 224², batch 256; writes "throughput-gpu" (< 8 min on one H200)
    python -m benchmarks.throughput --device cpu --quick   # the same code path at 64², batch 8 (smoke test; prints only)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch

from torch_backswap._io import atomic_write_text
from benchmarks._common import RESULTS, machine_line, write_section

SEGMENTER = "torch-backswap/patchseg-tiny-s16"


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def load_inputs(size: int, n: int, seed: int = 0) -> dict:
    """StampBirds train images at ``size``² with their exact alpha and true backgrounds (the bank)."""
    from torch_backswap.datasets import StampBirds

    ds = StampBirds(split="train", image_size=size, n=n, seed=seed)
    alpha = ds.alpha.float()
    return {
        "images": ds.images.contiguous(),
        "labels": ds.labels.long(),
        "alpha": alpha,
        # the mask cache format: uint8 0..255
        "masks": (alpha * 255.0).add_(0.5).to(torch.uint8),
        "backgrounds": ds.true_backgrounds.contiguous(),
    }


def select_rows(data: dict, idx: torch.Tensor, *keys: str) -> list[torch.Tensor]:
    """``data[key].index_select(0, idx)`` for each key: a case's inputs, selected before its timer starts."""
    return [data[k].index_select(0, idx) for k in keys]


def load_segmenter():
    from torch_backswap.segmenter import PatchSegmenter

    local = Path(__file__).resolve().parents[1] / "weights" / SEGMENTER.split("/")[-1]
    return PatchSegmenter.from_pretrained(local if local.is_dir() else SEGMENTER).eval()


def opencv_version() -> str | None:
    """OpenCV's version when ``cv2`` imports and this tree's ``Compositing`` has the OpenCV kernel
    (``backend="cv2"``), else ``None``: the OpenCV rows are measured only then."""
    try:
        import cv2

        from torch_backswap.functional import Compositing

        Compositing(backend="cv2")
    except (ImportError, TypeError, ValueError):
        return None
    return str(cv2.__version__)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_rate(times: list[float], n: int) -> float:
    return n / statistics.median(times)


# --------------------------------------------------------------------------------------------------
# (a) the reference per-sample PIL paste, re-implemented
# --------------------------------------------------------------------------------------------------


class ReferencePaste:
    """Per-sample PIL composite with the paper's parameter ranges (the reference scripts' recipe).

    The foreground and its mask are cropped to the mask's bounding box, scaled by ``U(0.5, 1.5)``,
    rotated by ``U(-30, 30)`` degrees (``expand=True``), their centre moved by ``U(-t, t)`` pixels per axis
    with ``t = 32 / 224 * W`` and clipped so the object stays in the frame, then pasted with the mask onto
    a copy of the background. ``resample``: ``"nearest"`` (reference) or ``"bilinear"``.
    """

    def __init__(self, resample: str = "nearest", seed: int = 0) -> None:
        from PIL import Image

        self.resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}[resample]
        self.rng = random.Random(seed)

    def __call__(self, image, mask, background):
        rng = self.rng
        w, h = image.size
        scale = rng.uniform(0.5, 1.5)
        angle = rng.uniform(-30.0, 30.0)
        t = 32.0 / 224.0 * w
        tx, ty = rng.uniform(-t, t), rng.uniform(-t, t)
        box = mask.getbbox()
        if box is None:  # nothing to paste: the image stays as it is
            return image.copy()
        fg = image.crop(box)
        m = mask.crop(box)
        size = (max(1, round(fg.width * scale)), max(1, round(fg.height * scale)))
        fg = fg.resize(size, self.resample).rotate(angle, resample=self.resample, expand=True)
        m = m.resize(size, self.resample).rotate(angle, resample=self.resample, expand=True)
        cx = (box[0] + box[2]) / 2.0 + tx
        cy = (box[1] + box[3]) / 2.0 + ty
        x0 = round(cx - fg.width / 2.0)
        y0 = round(cy - fg.height / 2.0)
        x0 = min(max(x0, 0), w - fg.width) if fg.width <= w else (w - fg.width) // 2
        y0 = min(max(y0, 0), h - fg.height) if fg.height <= h else (h - fg.height) // 2
        out = background.copy()
        out.paste(fg, (x0, y0), m)
        return out


class ReferencePipeline:
    """(a") the reference per-sample path end to end: grid mask → full-frame PIL affine → paste → tensor.

    ``grid`` is the S×S patch mask as a PIL ``L`` image; it is upsampled to the image with nearest
    neighbour as the reference scripts do. The affine is torchvision's on PIL (rotation about the image
    centre, the paper's ranges); the object is not clipped to the frame (the cost is the same).
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def __call__(self, image, grid, background):
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        rng = self.rng
        w, h = image.size
        t = 32.0 / 224.0 * w
        affine = {"angle": rng.uniform(-30.0, 30.0), "translate": [round(rng.uniform(-t, t)), round(rng.uniform(-t, t))],
                      "scale": rng.uniform(0.5, 1.5), "shear": [0.0, 0.0], "interpolation": InterpolationMode.NEAREST}
        mask = grid.resize((w, h), Image.NEAREST)
        fg = TF.affine(image, **affine)
        mask = TF.affine(mask, **affine)
        out = background.copy()
        out.paste(fg, (0, 0), mask)
        return TF.pil_to_tensor(out)


def to_pil(images: torch.Tensor, masks: torch.Tensor) -> tuple[list, list]:
    from PIL import Image

    pil_images = [Image.fromarray(x.permute(1, 2, 0).contiguous().numpy(), "RGB") for x in images]
    pil_masks = [Image.fromarray(m[0].contiguous().numpy(), "L") for m in masks]
    return pil_images, pil_masks


# --------------------------------------------------------------------------------------------------
# CPU suite
# --------------------------------------------------------------------------------------------------


def side_by_side(size: int, batch: int, rounds: int, bank_n: int, seg, threads: int) -> dict:
    """Interleaved rounds of (a), (a'), (b), (c), (c, OpenCV) where ``cv2`` imports, (d), (e), (e'), segmenter;
    images/s medians."""
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from torch_backswap import BackgroundBank, BackgroundSwap
    from torch_backswap.functional import Compositing

    try:
        from torch_backswap.segmenter import segmenter_input
    except ImportError:  # versions before issue 5: the segmenter resizes its input itself

        def segmenter_input(x, segmenter):
            return x

    torch.set_num_threads(threads)
    data = load_inputs(size, bank_n)
    n = data["images"].shape[0]
    bank = BackgroundBank(data["backgrounds"], data["labels"])
    swap_cache = BackgroundSwap(bank, seed=0)
    swap_nearest = BackgroundSwap(bank, seed=0, compositing=Compositing(interpolation="nearest"))
    swap_cv2 = BackgroundSwap(bank, seed=0, compositing=Compositing(backend="cv2")) if opencv_version() else None
    swap_seg = BackgroundSwap(bank, seg, seed=0)
    compose = v2.Compose([swap_cache])
    pil_images, pil_masks = to_pil(data["images"], data["masks"])
    pil_backgrounds, _ = to_pil(data["backgrounds"], data["masks"][:0])
    ref_nearest, ref_bilinear = ReferencePaste("nearest"), ReferencePaste("bilinear")
    ref_full = ReferencePipeline()
    from torch_backswap.labels import dense_to_patch_grid

    grids = dense_to_patch_grid(data["masks"].float() / max(1, int(data["masks"].max())), 16, threshold=0.25)
    pil_grids = [Image.fromarray(g.to(torch.uint8).mul(255).numpy(), "L") for g in grids]
    gen = torch.Generator().manual_seed(1)

    def batch_indices():
        return torch.randint(n, (batch,), generator=gen)

    # Every case is prepared outside the timer and timed as one call: the batched cases get their batch already
    # stacked (as a DataLoader's collate hands it over), the per-sample ones their decoded samples, so no case pays
    # for this benchmark's own input indexing (advanced indexing of a 64-image batch costs ~0.1 ms per image on one
    # core, about a quarter of the reference path's whole time).

    def run_reference(paste):
        def prepare(idx):
            pairs = list(zip(idx.tolist(), torch.randint(n, (batch,), generator=gen).tolist()))
            return lambda: [paste(pil_images[i], pil_masks[i], pil_backgrounds[j]) for i, j in pairs]
        return prepare

    def run_reference_full(idx):
        pairs = list(zip(idx.tolist(), torch.randint(n, (batch,), generator=gen).tolist()))
        return lambda: [ref_full(pil_images[i], pil_grids[i], pil_backgrounds[j]) for i, j in pairs]

    def run_compose(idx):
        samples = [{"image": tv_tensors.Image(data["images"][i]), "label": int(data["labels"][i]),
                    "alpha": object_alpha(data["masks"][i])} for i in idx.tolist()]
        return lambda: [compose(sample) for sample in samples]

    def run_batched(swap):
        def prepare(idx):
            x, y, m = select_rows(data, idx, "images", "labels", "masks")
            return lambda: swap.swap_batch(x, y, alphas=m)
        return prepare

    def run_batched_seg(idx):
        x, y = select_rows(data, idx, "images", "labels")
        return lambda: swap_seg.swap_batch(x, y)

    copy_reps = 20

    def run_copy(idx):
        picks = [torch.randint(n, (batch,), generator=gen) for _ in range(copy_reps)]

        def go():
            for j in picks:
                bank.backgrounds.index_select(0, j)
        return go

    def run_copy_f32(idx):
        return lambda: data["images"].index_select(0, idx).float()

    def run_segmenter(idx):
        x, = select_rows(data, idx, "images")

        def go():
            with torch.no_grad():
                seg(segmenter_input(x, seg))
        return go

    cases = {
        "a": run_reference(ref_nearest),
        "a_bilinear": run_reference(ref_bilinear),
        "a_full": run_reference_full,
        "b": run_compose,
        "c": run_batched(swap_cache),
        "c_nearest": run_batched(swap_nearest),
        **({"c_cv2": run_batched(swap_cv2)} if swap_cv2 is not None else {}),
        "d": run_batched_seg,
        "e": run_copy,
        "e_f32": run_copy_f32,
        "segmenter": run_segmenter,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for prepare in cases.values():  # warm-up
        prepare(batch_indices())()
    for _ in range(rounds):
        for key, prepare in cases.items():
            fn = prepare(batch_indices())
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times[key].append(dt / copy_reps if key == "e" else dt)
    rates = {k: median_rate(v, batch) for k, v in times.items()}
    rates["size"] = size
    rates["inputs_prepared"] = True  # inputs selected before the timer (runs before this change timed the indexing)
    return rates


def bank_build_rate(size: int, n: int, rounds: int, seg, threads: int = 2) -> float:
    from torch_backswap.build import build_bank

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = load_inputs(size, n, seed=1)
        rates = []
        for _ in range(rounds):
            bank = build_bank(data["images"], data["labels"], seg, "pyramid", batch_size=64, progress=False)
            rates.append(bank.build_stats["images_per_s"])
        return statistics.median(rates)
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------------
# the realistic loader yardstick (issue 12): ImageNet-style JPEGs, PIL decode, RandomResizedCrop, flip
# --------------------------------------------------------------------------------------------------

#: ImageNet-like JPEG size (width, height) of the yardstick's files.
JPEG_SIZE = (500, 375)


def write_jpegs(directory: Path, n: int, seed: int = 3, quality: int = 90) -> dict:
    """Render ``n`` StampBirds composites (real pack photos, birds pasted) at 500×375 and save them as JPEGs.

    Returns ``{"paths": [Path], "labels": [int], "alpha": uint8 (n, 1, 375, 500)}`` — the alpha is the exact
    bird alpha, resized like the image, for the pipelines that carry the object's mask in the sample.
    """
    import torch.nn.functional as F
    from PIL import Image

    from torch_backswap.datasets import StampBirds

    w, h = JPEG_SIZE
    ds = StampBirds(split="train", image_size=w, n=n, seed=seed)
    images = F.interpolate(ds.images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    alpha = F.interpolate(ds.alpha.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    alpha = (alpha.clamp_(0, 1) * 255).round_().to(torch.uint8)
    paths = []
    for i, x in enumerate(images):
        path = directory / f"{i:05d}.jpg"
        Image.fromarray(x.permute(1, 2, 0).contiguous().numpy(), "RGB").save(path, quality=quality)
        paths.append(path)
    return {"paths": paths, "labels": ds.labels.tolist(), "alpha": alpha}


def object_alpha(x: torch.Tensor):
    """Wrap a uint8 ``(1, H, W)`` alpha as the sample's object alpha (``ObjectAlpha``, else a plain ``Mask``)."""
    try:
        from torch_backswap.alpha import ObjectAlpha
    except ImportError:  # trees before the ObjectAlpha type: any tv_tensors.Mask is the alpha
        from torchvision.tv_tensors import Mask as ObjectAlpha
    return ObjectAlpha(x)


class JpegFiles(torch.utils.data.Dataset):
    """ImageNet-style samples: ``PIL.Image.open(path).convert("RGB")`` → ``transform`` → dict sample.

    Each sample is ``{"image": ..., "label": int}`` plus ``"alpha"`` (the object's alpha as an
    ``ObjectAlpha``, uint8 ``(1, H, W)``) when ``alpha`` is given; ``transform`` sees the whole dict.
    """

    def __init__(self, paths: list[Path], labels: list[int], transform, alpha: torch.Tensor | None = None) -> None:
        self.paths, self.labels, self.transform, self.alpha = paths, labels, transform, alpha

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            sample = {"image": im.convert("RGB"), "label": self.labels[i]}
        if self.alpha is not None:
            sample["alpha"] = object_alpha(self.alpha[i])
        return self.transform(sample)


def imagenet_transform(extra: list | None = None):
    """``RandomResizedCrop(224)`` → flip → uint8 ``tv_tensors.Image`` (then ``extra``, e.g. a swap)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
                       *(extra or [])])


class CopyCollate:
    """The physical yardstick of a collate swap: ``default_collate``, then the bytes a swap must move, as plain
    uint8 copies — one bank background per image read into a new batch, and the images read over it (object,
    background and alpha are ~0.2 MB per 224² image; the alpha is left out, so this is a lower bound)."""

    def __init__(self, bank) -> None:
        self.bank = bank
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, samples: list) -> dict:
        batch = torch.utils.data.default_collate(samples)
        images = batch["image"]
        idx = torch.randint(len(self.bank.backgrounds), (images.shape[0],), generator=self.gen)
        out = self.bank.backgrounds.index_select(0, idx)
        if out.shape == images.shape:
            out.copy_(images)
        batch["image"] = out
        return batch


def yardstick_configs(swap_seg, swap_given, extra: dict | None = None, bank=None) -> dict:
    """name → (carries alpha, per-sample transform, collate_fn) for the realistic loader yardstick."""
    from torch_backswap import BackgroundSwapCollate

    configs = {
        "loader alone (no swap)": (False, imagenet_transform(), None),
        "collate swap, segmenter on the fly (BackgroundSwapCollate)": (False, imagenet_transform(), BackgroundSwapCollate(swap_seg)),
        "collate swap, ObjectAlpha in the sample": (True, imagenet_transform(), BackgroundSwapCollate(swap_given)),
        "per-sample swap in Compose, segmenter on the fly": (False, imagenet_transform([swap_seg]), None),
        "per-sample swap in Compose, ObjectAlpha in the sample": (True, imagenet_transform([swap_given]), None),
    }
    if bank is not None:
        configs[YARD_COPY] = (False, imagenet_transform(), CopyCollate(bank))
    configs.update(extra or {})
    return configs


def yardstick(n: int, batch: int, rounds: int, seg, threads: int, extra_segmenters: dict | None = None) -> dict:
    """Images/s of the realistic loader with and without the swap, interleaved rounds, medians.

    ``num_workers=0`` and ``threads`` torch threads: the per-core cost of each pipeline. The first batch
    of every pass is excluded. ``extra_segmenters`` (name → segmenter) adds collate / per-sample rows with
    other segmenter variants (smaller input, int8, ...). Where ``cv2`` imports, the default segmenter's collate and
    per-sample rows and the collate ObjectAlpha row are also run with the OpenCV composite
    (``Compositing(backend="cv2")``; :data:`YARD_OPENCV`).
    """
    import tempfile

    from torch_backswap import BackgroundBank, BackgroundSwap, BackgroundSwapCollate

    torch.set_num_threads(threads)
    bank_data = load_inputs(224, 128, seed=4)
    bank = BackgroundBank(bank_data["backgrounds"], bank_data["labels"])
    swap_seg = BackgroundSwap(bank, seg, seed=0)
    swap_given = BackgroundSwap(bank, seed=0)
    extra = {}
    for name, s in (extra_segmenters or {}).items():
        sw = BackgroundSwap(bank, s, seed=0)
        extra[f"collate swap, segmenter {name}"] = (False, imagenet_transform(), BackgroundSwapCollate(sw))
        extra[f"per-sample swap in Compose, segmenter {name}"] = (False, imagenet_transform([sw]), None)
    if opencv_version():
        from torch_backswap.functional import Compositing

        cv2_seg = BackgroundSwap(bank, seg, seed=0, compositing=Compositing(backend="cv2"))
        cv2_given = BackgroundSwap(bank, seed=0, compositing=Compositing(backend="cv2"))
        extra[YARD_SEG_CV2] = (False, imagenet_transform(), BackgroundSwapCollate(cv2_seg))
        extra[YARD_GIVEN_CV2] = (True, imagenet_transform(), BackgroundSwapCollate(cv2_given))
        extra[YARD_SAMPLE_CV2] = (False, imagenet_transform([cv2_seg]), None)
    configs = yardstick_configs(swap_seg, swap_given, extra, bank=bank)
    times: dict[str, list[float]] = {k: [] for k in configs}
    seen: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="backswap-yardstick-") as tmp:
        files = write_jpegs(Path(tmp), n)
        for r in range(rounds + 1):  # round 0 warms up (file cache, allocator, lazy imports)
            for name, (with_alpha, transform, collate) in configs.items():
                ds = JpegFiles(files["paths"], files["labels"], transform, files["alpha"] if with_alpha else None)
                loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0,
                                                     collate_fn=collate, generator=torch.Generator().manual_seed(r))
                it = iter(loader)
                next(it)
                count = 0
                t0 = time.perf_counter()
                for b in it:
                    count += b["image"].shape[0]
                dt = time.perf_counter() - t0
                if r:
                    times[name].append(dt)
                    seen[name] = count
    rates = {k: seen[k] / statistics.median(v) for k, v in times.items()}
    return {"rates": rates, "n": n, "batch": batch, "rounds": rounds, "jpeg_size": JPEG_SIZE}


# --------------------------------------------------------------------------------------------------
# where the time of one batched swap goes (measured, for the analysis)
# --------------------------------------------------------------------------------------------------

#: The steps of :func:`swap_breakdown`, in the order they are reported.
STEP_LOGITS = "segmenter logits, float (uint8 resize + model)"
STEP_LOGITS_INT8 = "segmenter logits, int8"
STEP_CUT = "cut-out: logits → the alpha the swap uses"
STEP_COMPOSITE = "composite: given uint8 alpha, jitter matrices"
STEP_COMPOSITE_CV2 = "composite (OpenCV kernel): given uint8 alpha, jitter matrices"
STEP_GIVEN = "swap_batch, given uint8 alpha (every step)"
STEP_GIVEN_CV2 = "swap_batch, given uint8 alpha, OpenCV composite"
STEP_SEG = "swap_batch, segmenter on the fly (every step)"
STEP_SEG_INT8 = "swap_batch, int8 segmenter on the fly"
STEP_COPY = "uint8 copy of the same bytes (bank gather + image copy)"


def swap_breakdown(seg, seg_int8, batch: int, rounds: int, threads: int, size: int = 224) -> dict:
    """Milliseconds per image of each step of a batched swap at ``size``² (batch ``batch``), interleaved rounds,
    medians: the segmenter (float / int8), the cut-out, the composite alone, whole ``swap_batch`` calls and the
    plain uint8 copy of the same bytes; where ``cv2`` imports, also the composite and ``swap_batch`` with given alphas
    on the OpenCV kernel (``"opencv"`` in the result: its version, or ``None`` when it was not installed). Works on
    trees without ``logits_to_alpha`` (the float cut-out is timed)."""
    from torch_backswap import BackgroundBank, BackgroundSwap
    from torch_backswap.composite import composite
    from torch_backswap.jitter import jitter_affine, sample_jitter
    from torch_backswap.segmenter import TIGHT_THRESHOLD, logits_to_probability, probability_to_mask, segment_logits

    try:
        from torch_backswap.segmenter import logits_to_alpha
    except ImportError:  # trees before issue 25: the float cut-out at full resolution
        def logits_to_alpha(logits, hw, threshold, feather):
            return probability_to_mask(logits_to_probability(logits, hw), threshold, feather)

    torch.set_num_threads(threads)
    data = load_inputs(size, 4 * batch, seed=5)
    n = data["images"].shape[0]
    bank = BackgroundBank(data["backgrounds"], data["labels"])
    swap_given, swap_seg, swap_int8 = (BackgroundSwap(bank, s, seed=0) for s in (None, seg, seg_int8))
    opencv = opencv_version()
    if opencv:
        from torch_backswap.functional import Compositing

        swap_cv2 = BackgroundSwap(bank, seed=0, compositing=Compositing(backend="cv2"))
    gen = torch.Generator().manual_seed(0)
    hw = (size, size)
    logits_cache = {}

    def pick():
        return torch.randint(n, (batch,), generator=gen)

    # inputs are selected before the timer starts, as in side_by_side
    def cut(idx):
        key = tuple(idx.tolist())
        if key not in logits_cache:
            logits_cache.clear()
            logits_cache[key] = segment_logits(seg, *select_rows(data, idx, "images"))
        return lambda: logits_to_alpha(logits_cache[key], hw, TIGHT_THRESHOLD, 0.1)

    def comp(idx, **kwargs):
        x, m = select_rows(data, idx, "images", "masks")
        bgs = data["backgrounds"].index_select(0, pick())
        mats = jitter_affine(sample_jitter(batch, generator=gen), hw, m)
        return lambda: composite(x, m, bgs, mats, **kwargs)

    def copy(idx):
        x, = select_rows(data, idx, "images")
        j = pick()
        return lambda: bank.backgrounds.index_select(0, j).copy_(x)

    def logits(model):
        def prepare(idx):
            x, = select_rows(data, idx, "images")
            return lambda: segment_logits(model, x)
        return prepare

    def given(swap):
        def prepare(idx):
            x, m = select_rows(data, idx, "images", "masks")
            return lambda: swap.swap_batch(x, alphas=m)
        return prepare

    def segmenting(swap):
        def prepare(idx):
            x, = select_rows(data, idx, "images")
            return lambda: swap.swap_batch(x)
        return prepare

    steps = {
        STEP_LOGITS: logits(seg),
        STEP_LOGITS_INT8: logits(seg_int8),
        STEP_CUT: cut,
        STEP_COMPOSITE: comp,
        **({STEP_COMPOSITE_CV2: lambda idx: comp(idx, backend="cv2")} if opencv else {}),
        STEP_GIVEN: given(swap_given),
        **({STEP_GIVEN_CV2: given(swap_cv2)} if opencv else {}),
        STEP_SEG: segmenting(swap_seg),
        STEP_SEG_INT8: segmenting(swap_int8),
        STEP_COPY: copy,
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 warms up
            for name, make in steps.items():
                fn = make(pick())
                t0 = time.perf_counter()
                fn()
                if r:
                    times[name].append(time.perf_counter() - t0)
    return {"ms_per_image": {k: 1e3 * statistics.median(v) / batch for k, v in times.items()},
            "spread_ms_per_image": {k: 1e3 * (max(v) - min(v)) / batch for k, v in times.items()},
            "batch": batch, "size": size, "rounds": rounds, "opencv": opencv, "inputs_prepared": True}


# --------------------------------------------------------------------------------------------------
# segmenter: input size, layout and int8 against mask quality
# --------------------------------------------------------------------------------------------------


def segmenter_variants(seg, sizes: tuple[int, ...], calibration: torch.Tensor) -> dict:
    """name → (input size, segmenter): the float model at each input size, channels_last and int8 at its own."""
    import copy

    from torch_backswap.quantize import quantize_segmenter
    from torch_backswap.segmenter import PatchSegmenter

    local = Path(__file__).resolve().parents[1] / "weights" / SEGMENTER.split("/")[-1]
    out = {}
    for s in sizes:
        name = f"float32, input {s}²" + (" (default)" if s == seg.input_size else "")
        out[name] = (s, seg if s == seg.input_size else
                     PatchSegmenter.from_pretrained(local if local.is_dir() else SEGMENTER, input_size=s).eval())
    out[f"float32 channels_last, input {seg.input_size}²"] = (
        seg.input_size, copy.deepcopy(seg).to(memory_format=torch.channels_last))
    out[f"int8 (torch.ao static, x86), input {seg.input_size}²"] = (seg.input_size, quantize_segmenter(seg, calibration))
    return out


def segmenter_tradeoff(variants: dict, n_test: int, batch: int, rounds: int, threads: int) -> list[dict]:
    """Tight-mask IoU on the StampBirds test split (224²) and images/s (uint8 224² → logits) per variant."""
    from torch_backswap.datasets import StampBirds
    from torch_backswap.metrics import mask_iou
    from torch_backswap.segmenter import (
        TIGHT_THRESHOLD,
        segment_logits,
        segment_probability,
    )

    torch.set_num_threads(threads)
    test = StampBirds(split="test", image_size=224, n=n_test, seed=0)
    x, truth = test.images, test.alpha > 0.5
    rows = {}
    for name, (size, s) in variants.items():
        prob = torch.cat([segment_probability(s, x[i : i + 64]) for i in range(0, len(x), 64)])
        rows[name] = {"variant": name, "input_size": size, "tight_mask_iou": mask_iou(prob > TIGHT_THRESHOLD, truth)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    gen = torch.Generator().manual_seed(0)
    for r in range(rounds + 1):
        for name, (_, s) in variants.items():
            xb = x[torch.randint(len(x), (batch,), generator=gen)]
            t0 = time.perf_counter()
            segment_logits(s, xb)
            if r:
                times[name].append(time.perf_counter() - t0)
    for name in variants:
        rows[name]["images_per_s"] = median_rate(times[name], batch)
    return list(rows.values())


# --------------------------------------------------------------------------------------------------
# CPU suite: report
# --------------------------------------------------------------------------------------------------


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ok(cond: bool) -> str:
    return "met" if cond else "NOT met"


YARD_SEG = "collate swap, segmenter on the fly (BackgroundSwapCollate)"
YARD_SAMPLE = "per-sample swap in Compose, segmenter on the fly"
YARD_BASE = "loader alone (no swap)"
YARD_COPY = "collate, plain uint8 copy of the swap's bytes (the bandwidth bound)"
# the OpenCV-composite rows (where cv2 imports); the segmenter rows keep the "collate swap, segmenter" /
# "per-sample swap in Compose, segmenter" prefixes, so the targets' best variant may be one of them
YARD_SEG_CV2 = "collate swap, segmenter on the fly, OpenCV composite"
YARD_GIVEN_CV2 = "collate swap, ObjectAlpha in the sample, OpenCV composite"
YARD_SAMPLE_CV2 = "per-sample swap in Compose, segmenter on the fly, OpenCV composite"
YARD_OPENCV = (YARD_SEG_CV2, YARD_GIVEN_CV2, YARD_SAMPLE_CV2)


#: The run settings a CPU section is rendered with (stored in the JSON as ``settings``).
CPU_SETTINGS = ("quick", "threads", "batch", "rounds", "note", "sizes", "bank_n", "build_size", "build_n", "build_rounds",
                "yard_n", "yard_rounds", "seg_sizes", "tradeoff_n", "seg_batch")


def render(stored: dict) -> str:
    """The CPU section of RESULTS.md from ``results/throughput.json`` (``python -m benchmarks.report``)."""
    d = stored["cpu"]
    args = argparse.Namespace(**d["settings"])
    gpu = stored["device"]["markdown"] if "markdown" in stored.get("device", {}) else GPU_PENDING
    return cpu_markdown(args, d["rows"], d["bank_build"], d["yardstick"], d["segmenter_tradeoff"], d["breakdown"],
                        d["loadavg"][0], d["loadavg"][1], d["wall_s"], machine=d["machine"], cores=d["cores"]) + "\n\n" + gpu


def cpu_markdown(args, rows, build, yard, tradeoff, breakdown, load_before, load_after, wall, *, machine: str,
                 cores: int) -> str:
    cmd = "python -m benchmarks.throughput" + (" --quick" if args.quick else "") + (
        f" --threads {args.threads}" if args.threads != 1 else "")
    lines = [
        "## Throughput: swap vs reference PIL paste vs copy bound (CPU)",
        "",
        f"Command: `{cmd}`  ",
        machine + "  ",
        f"Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} on {cores} cores (shared with other jobs: compare "
        f"the ratios, measured side by side in this run, not the absolute figures); wall {wall:.0f} s. "
        + (f"Other load: {args.note}" if args.note else ""),
        "",
        "### The realistic loader (the yardstick)",
        "",
        (f"ImageNet-style: {yard['n']} JPEG files of {yard['jpeg_size'][0]}×{yard['jpeg_size'][1]} (StampBirds pack photos "
        "with birds composited, quality 90) in a temp dir; each sample `PIL.Image.open(...).convert(\"RGB\")` → "
        "`v2.RandomResizedCrop(224)` → `v2.RandomHorizontalFlip()` → uint8 `tv_tensors.Image`; batch "
        f"{yard['batch']}, `num_workers=0`, {args.threads} torch thread: the cost per core. Medians of {yard['rounds']} "
        "interleaved passes (after one warm-up pass), first batch of each pass excluded. The ObjectAlpha rows carry the "
        "bird's alpha (uint8, cropped and flipped with the image by the same v2 transforms)."
        + (" The OpenCV composite rows are the same swaps with `Compositing(backend=\"cv2\")` (the optional `fast` "
           "extra); the others use the default torch kernel." if any(k in yard["rates"] for k in YARD_OPENCV) else "")),
        "",
        "| pipeline | images/s | vs loader alone |",
        "|---|---|---|",
    ]
    rates = yard["rates"]
    base = rates[YARD_BASE]
    for name, v in rates.items():
        lines.append(f"| {name} | {fmt(v)} | {v / base:.2f} |")
    seg_ratio, sample_ratio = rates[YARD_SEG] / base, rates[YARD_SAMPLE] / base
    best_seg = max((v / base, k) for k, v in rates.items() if k.startswith("collate swap, segmenter"))
    best_sample = max((v / base, k) for k, v in rates.items() if k.startswith("per-sample swap in Compose, segmenter"))
    cv2_col = bool(rows) and all("c_cv2" in r for r in rows)
    lines += [
        "",
        (f"Targets: collate swap segmenting on the fly ≥ 0.70× the loader alone: {ok(seg_ratio >= 0.70)} with the default "
        f"segmenter ({seg_ratio:.2f}×); best variant {best_seg[0]:.2f}× ({best_seg[1]}). Per-sample swap ≥ 0.50×: "
        f"{ok(sample_ratio >= 0.50)} with the default segmenter ({sample_ratio:.2f}×); best variant {best_sample[0]:.2f}× "
        f"({best_sample[1]})."),
        "",
        "### The segmenter: input size, layout, int8 vs mask quality",
        "",
        (f"Tight-mask IoU (probability > 0.67 vs true alpha > 0.5, `metrics.mask_iou`) on the StampBirds test split "
        f"({args.tradeoff_n} images, 224², seed 0), and images/s of uint8 224² batches of {args.seg_batch} → logits "
        f"(`segment_logits`, including the uint8 resize to the input size), {args.threads} torch thread."),
        "",
        "| segmenter | input | tight-mask IoU | Δ IoU vs default | images/s | vs default |",
        "|---|---|---|---|---|---|",
    ]
    ref = tradeoff[0]
    for r in tradeoff:
        lines.append(f"| {r['variant']} | {r['input_size']}² | {r['tight_mask_iou']:.3f} | "
                     f"{r['tight_mask_iou'] - ref['tight_mask_iou']:+.3f} | {fmt(r['images_per_s'])} | "
                     f"{r['images_per_s'] / ref['images_per_s']:.2f}× |")
    int8 = next(r for r in tradeoff if r["variant"].startswith("int8"))
    lines += [
        "",
        (f"Mask quality (tight-mask IoU within 0.01 of the default): int8 {ok(abs(int8['tight_mask_iou'] - ref['tight_mask_iou']) <= 0.01)} "
        f"({int8['tight_mask_iou'] - ref['tight_mask_iou']:+.3f}); smaller inputs lose quality fast (table), so the default "
        "stays at its trained input size."),
        "",
        "### The swap against the reference paste and the copy bound",
        "",
        (f"Images/s, batch {args.batch}, medians of {args.rounds} interleaved rounds; same images, masks and bank for every "
        "column (StampBirds train split; bank = its true backgrounds). (c) and (c, nearest) carry the masks "
        "(`swap_batch(alphas=...)`), (d) segments on the fly."
        + (" Every case gets its inputs ready before the timer starts: the batched ones their batch already stacked "
           "(as a DataLoader's collate hands it over), the per-sample ones their decoded samples."
           if all(r.get("inputs_prepared") for r in rows) else "")
        + (" (c) OpenCV kernel is (c) composited by `Compositing(backend=\"cv2\")` (OpenCV's uint8 kernel, the optional "
           "`fast` extra); every other column uses the default torch kernel." if cv2_col else "")),
        "",
        ("| size | (a) PIL paste, nearest (reference) | (a') PIL paste, bilinear | (a\") reference path, full frame | "
        "(b) per-sample Compose | (c) batched, given masks | (c) nearest | " + ("(c) OpenCV kernel | " if cv2_col else "")
        + "(d) batched, segmenter | (e) uint8 copy | (e') float32 copy | segmenter alone | (c)/(a\") | (c nearest)/(a\") | "
        + ("(c OpenCV)/(a\") | " if cv2_col else "") + "(c)/(a') | (d)/(a\") | (c)/(e') | (c)/(e) |"),
        "|---" * (17 + 2 * cv2_col) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}² | {fmt(r['a'])} | {fmt(r['a_bilinear'])} | {fmt(r['a_full'])} | {fmt(r['b'])} | "
            f"{fmt(r['c'])} | {fmt(r['c_nearest'])} | " + (f"{fmt(r['c_cv2'])} | " if cv2_col else "")
            + f"{fmt(r['d'])} | {fmt(r['e'])} | {fmt(r['e_f32'])} | "
            f"{fmt(r['segmenter'])} | {r['c'] / r['a_full']:.2f} | {r['c_nearest'] / r['a_full']:.2f} | "
            + (f"{r['c_cv2'] / r['a_full']:.2f} | " if cv2_col else "")
            + f"{r['c'] / r['a_bilinear']:.2f} | {r['d'] / r['a_full']:.2f} | {r['c'] / r['e_f32']:.2f} | "
            f"{r['c'] / r['e']:.3f} |"
        )
    big = max(rows, key=lambda r: r["size"])
    if cv2_col:
        target = (f"Target at {big['size']}²: batched composite with given masks ≥ 2× (a\"): torch kernel (the default) "
                  f"{ok(big['c'] >= 2 * big['a_full'])} ({big['c'] / big['a_full']:.2f}× bilinear; like for like with the "
                  f"nearest-neighbour reference {big['c_nearest'] / big['a_full']:.2f}×); OpenCV kernel "
                  f"(`Compositing(backend=\"cv2\")`) {ok(big['c_cv2'] >= 2 * big['a_full'])} "
                  f"({big['c_cv2'] / big['a_full']:.2f}× bilinear).")
    else:
        target = (f"Target at {big['size']}²: batched composite with given masks ≥ 2× (a\"): {ok(big['c'] >= 2 * big['a_full'])} "
                  f"({big['c'] / big['a_full']:.2f}× bilinear; like for like with the nearest-neighbour reference "
                  f"{big['c_nearest'] / big['a_full']:.2f}×).")
    lines += [
        "",
        target,
        "",
        (f"Bank build at {args.build_size}² ({args.build_n} images, default `PyramidInpainter`, segmenter on the fly, "
        f"batch 64, 2 torch threads): **{fmt(build)} images/s** (issue 5 target ≥ 200: {ok(build >= 200)})."),
        "",
        *breakdown_markdown(breakdown, yard),
        "",
        analysis_markdown(rows, yard, tradeoff, breakdown),
    ]
    return "\n".join(lines)


def breakdown_markdown(breakdown: dict, yard: dict) -> list[str]:
    """The table of :func:`swap_breakdown`, each step also as a multiple of the loader's own time per image."""
    ms, spread = breakdown["ms_per_image"], breakdown["spread_ms_per_image"]
    loader_ms = 1e3 / yard["rates"][YARD_BASE]
    lines = [
        "### Where the time of a batched swap goes",
        "",
        (f"Milliseconds per image, {breakdown['size']}², batch {breakdown['batch']}, medians of {breakdown['rounds']} "
         "interleaved rounds (spread = max − min), same process as the tables above"
         + (", inputs selected before the timer" if breakdown.get("inputs_prepared") else "") + ". The loader's own time per image "
         f"(yardstick, loader alone) is {loader_ms:.2f} ms."),
        "",
        "| step | ms per image | spread | × loader time per image |",
        "|---|---|---|---|",
    ]
    for k, v in ms.items():
        lines.append(f"| {k} | {v:.3f} | {spread[k]:.3f} | {v / loader_ms:.2f} |")
    return lines


def opencv_sentence(ms: dict, breakdown: dict, rates: dict) -> str:
    """The analysis' sentence on the fused uint8 warp-and-blend kernel (OpenCV): its measured cost where this run had
    it, "not installed" where it did not, and the wording of the runs before it was measured (no ``"opencv"`` key)."""
    if STEP_COMPOSITE_CV2 in ms:
        text = (f"The fused uint8 warp-and-blend kernel, OpenCV's `warpAffine` (the optional `fast` extra, "
                f"`Compositing(backend=\"cv2\")`; OpenCV {breakdown.get('opencv') or '?'}), costs {ms[STEP_COMPOSITE_CV2]:.3f} "
                f"ms per image ({ms[STEP_COMPOSITE_CV2] / ms[STEP_COPY]:.1f}× the copy bound, "
                f"{ms[STEP_COMPOSITE] / ms[STEP_COMPOSITE_CV2]:.1f}× less than the torch kernel, the default)")
        if STEP_GIVEN_CV2 in ms:
            text += (f"; a whole `swap_batch` with given alphas takes {ms[STEP_GIVEN_CV2]:.3f} ms per image with it against "
                     f"{ms[STEP_GIVEN]:.3f} ms with the torch kernel")
        if YARD_SEG_CV2 in rates and YARD_SEG in rates:
            base = rates[YARD_BASE]
            text += (f"; in the loader, the collate swap segmenting on the fly keeps {rates[YARD_SEG_CV2] / base:.2f}× the "
                     f"loader alone with it against {rates[YARD_SEG] / base:.2f}× with the torch kernel")
        return text + "."
    if "opencv" in breakdown:
        return ("Closing the rest of the gap needs a fused uint8 warp-and-blend kernel: OpenCV's `warpAffine`, the "
                "optional `fast` extra (`Compositing(backend=\"cv2\")`), was not installed in this run, so it is not "
                "measured here.")
    return ("Closing the rest of the gap needs a fused uint8 warp-and-blend kernel (e.g. OpenCV's `warpAffine`, not a "
            "dependency of this package).")


def analysis_markdown(rows: list[dict], yard: dict, tradeoff: list[dict], breakdown: dict) -> str:
    """What the measurements say, every figure taken from this run's measurements."""
    ms = breakdown["ms_per_image"]
    rates = yard["rates"]
    loader_ms = 1e3 / rates[YARD_BASE]

    def cost(name: str) -> float:  # ms per image that a pipeline adds to the loader alone
        return 1e3 / rates[name] - loader_ms

    logits, logits_int8 = ms[STEP_LOGITS], ms[STEP_LOGITS_INT8]
    bound_float = 1.0 / (1.0 + logits / loader_ms)
    bound_int8 = 1.0 / (1.0 + logits_int8 / loader_ms)
    default, int8 = tradeoff[0], next(r for r in tradeoff if r["variant"].startswith("int8"))
    rest_given = ms[STEP_GIVEN] - ms[STEP_COMPOSITE]
    rest_seg = ms[STEP_SEG] - logits - ms[STEP_CUT] - ms[STEP_COMPOSITE]
    big = max(rows, key=lambda r: r["size"])
    sample_rows = [k for k in rates if k.startswith("per-sample swap in Compose, segmenter")]
    collate_rows = [k for k in rates if k.startswith("collate swap, segmenter")]
    per_sample = min(cost(k) for k in sample_rows)
    per_batch = min(cost(k) for k in collate_rows)
    lines = [
        "What the measurements say (per core; every figure below is from this run):",
        "",
        (f"* Segmenting on the fly: the default float segmenter alone costs {logits:.3f} ms per image, "
         f"{logits / loader_ms:.2f}× the loader's own {loader_ms:.2f} ms. Even with everything else free, a collate swap "
         f"with it keeps at most {bound_float:.2f}× the loader. The int8 segmenter (`quantize_segmenter`, opt-in) costs "
         f"{logits_int8:.3f} ms ({logits / logits_int8:.1f}× less; tight-mask IoU {int8['tight_mask_iou'] - default['tight_mask_iou']:+.3f} "
         f"vs the default), a bound of {bound_int8:.2f}×."),
        (f"* The cut-out (logits → the alpha the swap uses) costs {ms[STEP_CUT]:.3f} ms per image: for uint8 images it is "
         "thresholded at the grid's resolution and only the object's window is upsampled, into a uint8 alpha."),
        (f"* The composite with given alphas costs {ms[STEP_COMPOSITE]:.3f} ms per image against {ms[STEP_COPY]:.3f} ms for a "
         f"plain uint8 copy of the same bytes ({ms[STEP_COMPOSITE] / ms[STEP_COPY]:.1f}× the copy bound). It reads only the "
         "object's box, warps image and alpha in one 4-channel float bilinear `grid_sample` over the destination box and "
         "blends there only, a few tensor ops per sample. " + opencv_sentence(ms, breakdown, rates)),
        (f"* Around the composite, `swap_batch` with given alphas spends {rest_given:.3f} ms per image (sampling, bank "
         f"gather, jitter matrices, boxes, speck check); segmenting on the fly, {max(rest_seg, 0.0):.3f} ms per image go "
         "to neither segmenter, cut-out nor composite."),
        (f"* Per sample in `Compose` the best variant adds {per_sample:.2f} ms per image to the loader, against "
         f"{per_batch:.2f} ms in the collate swap: the difference is the per-call cost of running every step at batch 1 "
         "(the segmenter and dozens of small tensor ops per call)."),
        (f"* The bandwidth bound in the loader: a collate that only copies the swap's bytes keeps "
         f"{rates[YARD_COPY] / rates[YARD_BASE]:.2f}× the loader alone."
         if YARD_COPY in rates else "* (no copy-bound row in this run)"),
        (f"* At {big['size']}² the batched swap with given masks runs at {big['c'] / big['a_full']:.2f}× the reference "
         f"per-sample path (a\") and at {big['c'] / big['e']:.3f}× the uint8 copy (e)"
         + (f"; with the OpenCV kernel at {big['c_cv2'] / big['a_full']:.2f}× and {big['c_cv2'] / big['e']:.3f}×."
            if "c_cv2" in big else ".")),
    ]
    return "\n".join(lines)


def cpu_suite(args) -> dict:
    from torch_backswap.datasets import StampBirds

    load_before = os.getloadavg()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    seg = load_segmenter()
    calibration = StampBirds(split="train", image_size=224, n=64, seed=7).images
    variants = segmenter_variants(seg, args.seg_sizes, calibration)
    tradeoff = segmenter_tradeoff(variants, args.tradeoff_n, args.seg_batch, args.rounds, args.threads)
    for r in tradeoff:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    # the yardstick also runs the int8 segmenter (channels_last is in the table only: not faster here)
    extra = {"int8": next(s for name, (_, s) in variants.items() if name.startswith("int8"))}
    yard = yardstick(args.yard_n, 32, args.yard_rounds, seg, args.threads, extra_segmenters=extra)
    base = yard["rates"][YARD_BASE]
    for k, v in yard["rates"].items():
        print(f"{v:8.1f} images/s  {v / base:.2f}×  {k}", flush=True)
    rows = []
    for size in args.sizes:
        rows.append(side_by_side(size, args.batch, args.rounds, args.bank_n, seg, args.threads))
        print(json.dumps({k: round(v, 1) for k, v in rows[-1].items()}), flush=True)
    breakdown = swap_breakdown(seg, extra["int8"], 32, args.rounds, args.threads)
    for k, v in breakdown["ms_per_image"].items():
        print(f"{v:8.3f} ms/image  {k}", flush=True)
    build = bank_build_rate(args.build_size, args.build_n, args.build_rounds, seg, threads=2)
    print(f"bank build: {build:.1f} images/s", flush=True)
    wall = time.perf_counter() - start
    machine = machine_line().replace(f"{torch.get_num_threads()} torch threads", f"{args.threads} torch thread(s)")
    load_after = os.getloadavg()
    md = cpu_markdown(args, rows, build, yard, tradeoff, breakdown, load_before, load_after, wall, machine=machine,
                      cores=os.cpu_count())
    return {"markdown": md, "rows": rows, "bank_build": build, "yardstick": yard, "segmenter_tradeoff": tradeoff,
            "breakdown": breakdown, "wall_s": wall, "loadavg": [load_before, load_after], "threads": args.threads,
            "settings": {k: getattr(args, k) for k in CPU_SETTINGS}, "machine": machine, "cores": os.cpu_count()}


# --------------------------------------------------------------------------------------------------
# device suite (GPU; --device cpu runs the same code at a small size as a smoke test)
# --------------------------------------------------------------------------------------------------


def device_suite(args) -> dict:
    """Composite and swap images/s on the device, bank ``to(device)`` + ``sample``, and the ResNet-50 bf16
    channels-last train step fed by a loader of pinned uint8 batches: plain ``.to(device)`` vs
    :class:`~torch_backswap.loader.DeviceSwapLoader` (object alpha carried, and segmenting on the fly)."""
    import torch.nn.functional as F
    from torchvision import models

    from torch_backswap import BackgroundBank, BackgroundSwap
    from torch_backswap.functional import composite, jitter_affine, sample_jitter
    from torch_backswap.loader import DeviceSwapLoader

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    size = 224 if on_gpu else 64
    batch = 256 if on_gpu else 4
    rounds = args.rounds if on_gpu else 1
    reps = 20 if on_gpu else 1
    n_steps = 12 if on_gpu else 2
    if not on_gpu:
        torch.set_num_threads(args.threads)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    data = load_inputs(size, max(2 * batch, 64))
    n = data["images"].shape[0]
    gen = torch.Generator().manual_seed(0)

    # bank: to(device) and sample on the device
    cpu_bank = BackgroundBank(data["backgrounds"], data["labels"])
    move_times = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        bank = cpu_bank.to(device)
        sync(device)
        move_times.append(time.perf_counter() - t0)
    bank_rates = {"bank_to_device": median_rate(move_times, len(cpu_bank.backgrounds))}

    images = data["images"].to(device)
    labels = data["labels"].to(device)
    masks = data["masks"].to(device)
    alpha = data["alpha"].to(device)
    seg = load_segmenter().to(device)
    swap_given = BackgroundSwap(bank, seed=0)
    swap_seg = BackgroundSwap(bank, seg, seed=0)

    def pick():
        return torch.randint(n, (batch,), generator=gen).to(device)

    def timed(fn) -> float:
        idx = pick()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(idx)
        sync(device)
        return (time.perf_counter() - t0) / reps

    bgs = bank.sample(batch, generator=gen)
    params = sample_jitter(batch, generator=gen, device=device)

    def k_composite(idx):
        a = alpha[idx]
        composite(images[idx], a, bgs, jitter_affine(params, (size, size), a))

    kernels = {
        "composite (float alpha, jitter_affine + composite)": k_composite,
        "bank.sample (class-balanced gather)": lambda idx: bank.sample(batch, labels[idx], generator=gen),
        "swap_batch, given uint8 alphas": lambda idx: swap_given.swap_batch(images[idx], labels[idx], alphas=masks[idx]),
        "swap_batch, segmenter on the fly": lambda idx: swap_seg.swap_batch(images[idx], labels[idx]),
        "uint8 copy (index_select)": lambda idx: bank.backgrounds.index_select(0, idx),
    }
    with torch.no_grad():
        for fn in kernels.values():
            timed(fn)
        ktimes = {k: [] for k in kernels}
        for _ in range(rounds):
            for k, fn in kernels.items():
                ktimes[k].append(timed(fn))
    krates = {k: median_rate(v, batch) for k, v in ktimes.items()}
    krates.update(bank_rates)
    print(json.dumps({k: round(v) for k, v in krates.items()}), flush=True)

    # ResNet-50 bf16 channels-last train step, fed by a "DataLoader" of pinned uint8 CPU batches
    model = getattr(models, args.model)(weights=None, num_classes=2).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-3)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    def train_step(x_uint8, y):
        x = ((x_uint8.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def host_batches():
        out = []
        for _ in range(n_steps):
            idx = torch.randint(n, (batch,), generator=gen)
            b = {"image": data["images"][idx], "label": data["labels"][idx], "alpha": data["masks"][idx]}
            out.append({k: v.pin_memory() if on_gpu else v for k, v in b.items()})
        return out

    host = host_batches()

    def run_plain():
        for b in host:
            train_step(b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))

    def run_wrapped(loader):
        def go():
            for b in loader:
                train_step(b["image"], b["label"])
        return go

    steps = {
        "no swap (batch.to(device))": run_plain,
        "DeviceSwapLoader, ObjectAlpha carried": run_wrapped(DeviceSwapLoader(host, swap_given, device, alpha="alpha")),
        "DeviceSwapLoader, segmenter on the fly": run_wrapped(DeviceSwapLoader(host, swap_seg, device)),
    }

    def timed_epoch(fn) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return (time.perf_counter() - t0) / n_steps

    for fn in steps.values():  # warm-up (cudnn autotune, allocator)
        timed_epoch(fn)
    stimes = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            stimes[k].append(timed_epoch(fn))
    smed = {k: statistics.median(v) for k, v in stimes.items()}
    print(json.dumps({k: round(v * 1e3, 2) for k, v in smed.items()}), flush=True)
    wall = time.perf_counter() - start

    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({os.cpu_count()} cores, {args.threads} threads)"
    base = smed["no swap (batch.to(device))"]
    given = smed["DeviceSwapLoader, ObjectAlpha carried"]
    cmd = f"python -m benchmarks.throughput --device {args.device}" + (" --quick" if args.quick else "")
    md = "\n".join([
        "## Throughput on an accelerator: composite, bank, and the swap's overhead on a ResNet-50 step",
        "",
        f"Command: `{cmd}`  ",
        (f"{machine_line()}; device: **{name}**; {size}², batch {batch}, medians of {rounds} interleaved rounds "
        f"({reps} calls each); wall {wall:.0f} s."),
        "",
        "| kernel | images/s |",
        "|---|---|",
        *[f"| {k} | {fmt(v)} |" for k, v in krates.items()],
        "",
        (f"{args.model} (torchvision, random init, channels_last, bf16 autocast, SGD) train step; the loader is {n_steps} "
        "pinned uint8 CPU batches; with the wrapper the copy and the swap of the next batch run on a side stream "
        "during the current step:"),
        "",
        "| feed | ms per step | overhead vs no swap |",
        "|---|---|---|",
        *[f"| {k} | {v * 1e3:.1f} | {100 * (v / base - 1):+.1f} % |" for k, v in smed.items()],
        "",
        (f"Targets: composite ≥ 50 000 images/s at 224²: "
        f"{ok(krates['composite (float alpha, jitter_affine + composite)'] >= 50_000 and size == 224)}; the wrapper's "
        f"swap adds ≤ 5 % to the step (ObjectAlpha carried): {ok(given <= 1.05 * base and on_gpu)} "
        f"({100 * (given / base - 1):+.1f} %)."),
    ])
    return {"markdown": md, "kernels": krates, "steps_s": smed, "device": name, "size": size, "batch": batch,
            "wall_s": wall, "model": args.model}


GPU_PENDING = """## Throughput on an accelerator: composite, bank, and the swap's overhead on a ResNet-50 step

Pending a GPU session: run `python -m benchmarks.throughput --device cuda` (224², batch 256, < 8 min on one
H200: composite and swap images/s, bank `to("cuda")` + `sample`, and the ResNet-50 bf16 channels-last train step
fed plainly vs through `DeviceSwapLoader`). The same code runs on CPU at 64², batch 4 with
`python -m benchmarks.throughput --device cpu --quick` (smoke test; prints, writes nothing)."""


def save_json(key: str, result: dict) -> None:
    """Merge ``result`` (without its markdown) into ``benchmarks/results/throughput.json`` under ``key``."""
    from torch_backswap._io import atomic_write_text

    path = Path(__file__).resolve().parent / "results" / "throughput.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if not isinstance(stored, dict) or "rows" in stored:  # the single-suite layout before issue 12
        stored = {}
    stored[key] = {k: v for k, v in result.items() if k != "markdown"}
    atomic_write_text(path, json.dumps(stored, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes, rounds and images")
    parser.add_argument("--device", default=None, help="run the device suite on this device (cuda, or cpu as a smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (bank build uses 2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--model", default="resnet50", help="torchvision classifier of the device suite's train step")
    parser.add_argument("--note", default="", help="free text about other load on the machine, for RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md or results/")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    args.sizes = (224,) if args.quick else (64, 128, 224)
    args.bank_n = 128 if args.quick else 512
    args.build_size, args.build_n, args.build_rounds = 224, (128 if args.quick else 256), (1 if args.quick else 3)
    args.yard_n, args.yard_rounds = (128, 2) if args.quick else (256, 3)
    args.seg_sizes = (128, 96, 64) if args.quick else (128, 112, 96, 80, 64)
    args.tradeoff_n, args.seg_batch = (128 if args.quick else 400), 32

    if args.device is not None:
        result = device_suite(args)
        on_gpu = torch.device(args.device).type == "cuda"
        section, key = ("throughput-gpu", "device") if on_gpu else (None, None)
    else:
        result = cpu_suite(args)
        section, key = "throughput", "cpu"
    print(result["markdown"])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=1, default=str))
    if section is not None and not args.no_write:
        save_json(key, result)
        if section == "throughput-gpu":
            write_section(section, result["markdown"])
            print(f"wrote section {section!r} of {RESULTS}")
        else:
            print("stored results/throughput.json; python -m benchmarks.report renders it into RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
