"""build_bank(): segment every image, fill its loose mask with an inpainter, keep the uint8 backgrounds.

One function, three ways to run it:

* **In memory** (``out=None``, the default): returns a :class:`~torch_backswap.bank.BackgroundBank`.
  With ``out="bank.safetensors"`` the bank is also saved to that file.
* **Sharded and resumable** (``out=<directory>``, ``shard_size=S``): shard ``k`` holds images
  ``[k*S, (k+1)*S)`` and is written durably as ``shard-0000k.safetensors`` as soon as it is done; the
  manifest (``manifest.json``) is written last. Killing the build at any moment and running the same call
  again rebuilds only the shards that are missing, unreadable or changed (each kept shard is checked against the
  sha256 the manifest recorded, or without a manifest against the checksum in its own header) and ends
  byte-identical to an uninterrupted build.
  Returns the :class:`~torch_backswap.bankfiles.BankManifest`; load it with
  :meth:`BackgroundBank.load(out) <torch_backswap.bank.BackgroundBank.load>` or stream it with
  :class:`~torch_backswap.streaming.StreamingBackgroundBank`.
* **Distributed** (the sharded build under ``torchrun --nproc_per_node=N``, any number of nodes; gloo on
  CPU, NCCL on GPU): rank 0 lists the missing shards and broadcasts the list, rank ``r`` builds shards
  ``todo[r::N]``, rank 0 writes the manifest after a barrier. Same files, byte for byte, as one process.
  The process group is taken from ``torch.distributed`` if initialised, else created from torchrun's
  environment (and destroyed at the end). Progress shows on rank 0 only, with the global images/s.
  Across nodes, ``out`` must be a directory every node sees (a shared file system): rank 0 lists and
  verifies what is there, every rank writes its own shards into it.

Determinism: batches never straddle a shard boundary and each batch is filled with the inpainter's own
seeded generator (``PyramidInpainter(seed=0)`` re-seeds on every call), so every shard depends only on its
images and the settings — never on the rank, the number of processes or where a resumed run started.
(An inpainter with ``seed=None`` draws from the global RNG and is not reproducible.)
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._bank_source import ImageSource
from ._dist import Dist
from ._image import to_uint8_rgb
from ._io import BackswapFileError
from .bank import BackgroundBank, _as_size
from .bankfiles import (
    MANIFEST,
    BankManifest,
    ShardInfo,
    read_bank_file,
    read_bank_header,
    sha256_file,
    shard_name,
    write_shard,
)
from .edge_refiner import DEFAULT_EDGE_REFINER

__all__ = ["build_bank"]


def _model_name(model: Any) -> str | None:
    """What the bank's metadata records for a segmenter or refiner: its name or path, else its class name."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return None if model is None else str(model)
    for attr in ("name_or_path", "_name_or_path", "pretrained_name"):
        value = getattr(model, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return str(value)
    return type(model).__name__


def _inpainter_name(fill: Any) -> str:
    from .inpaint import Inpainter

    if isinstance(fill, Inpainter):
        return repr(fill)
    if hasattr(fill, "__qualname__"):  # a function: its repr holds a memory address
        return f"{getattr(fill, '__module__', '')}.{fill.__qualname__}"
    return type(fill).__qualname__


def _ready_module(module: Any, device: torch.device, loader: Any) -> Any:
    """A model in eval mode on ``device`` that is never the caller's module moved or switched: loaded with
    ``loader.from_pretrained`` when given as a name or path; the caller's module itself when it already is in
    eval mode on ``device``, else a deep copy. Other callables are returned as they are."""
    if isinstance(module, (str, os.PathLike)):
        return loader.from_pretrained(module).eval().to(device)
    if isinstance(module, torch.nn.Module):
        tensors = [*module.parameters(), *module.buffers()]
        on_device = all(t.device == device for t in tensors)
        if module.training or any(m.training for m in module.modules()) or not on_device:
            module = copy.deepcopy(module).eval().to(device)
    return module


def _hole_route(refiner: Any, flip_average: bool | None, loose_threshold: float | None, dilate: int | None,
                size: tuple[int, int]) -> tuple[Any, bool, float, int]:
    """``build_bank``'s hole route with its defaults filled in: ``(refiner, flip_average, loose threshold, dilate
    px)``. A refiner brings the measured route's defaults (flip-averaged, p > 0.2, grown size/32 px); without one
    they are the paper's (no flip, p > 0.1, not grown)."""
    from .refine import REFINED_HOLE_THRESHOLD, hole_growth
    from .segmenter import LOOSE_THRESHOLD

    _check_refiner(refiner)
    routed = refiner is not None
    loose = (REFINED_HOLE_THRESHOLD if routed else LOOSE_THRESHOLD) if loose_threshold is None else float(loose_threshold)
    if not 0.0 <= loose <= 1.0:
        raise ValueError(f"loose_threshold must be in [0, 1], got {loose_threshold!r}")
    if dilate is not None and (not isinstance(dilate, int) or isinstance(dilate, bool) or dilate < 0):
        raise ValueError(f"dilate must be an int >= 0 (pixels) or None, got {dilate!r}")
    flip = routed if flip_average is None else bool(flip_average)
    return refiner, flip, loose, (hole_growth(size) if routed else 0) if dilate is None else dilate


def _check_refiner(refiner: Any) -> None:
    from .refine import REFINE_METHODS, is_learned_refiner

    if isinstance(refiner, str) and refiner in REFINE_METHODS:
        raise ValueError(
            f"refiner must be a learned refiner (a name or path for EdgeRefiner.from_pretrained, or a loaded one) or "
            f"None, got the filter name {refiner!r}; for a filtered hole pass holes=loose_hole(cut_out_probability("
            f"segmenter, images, refiner={refiner!r}), threshold)"
        )
    if refiner is not None and not isinstance(refiner, (str, os.PathLike)) and not is_learned_refiner(refiner):
        raise TypeError(f"refiner must be None, a name or path of an EdgeRefiner, or a learned refiner with "
                        f"predict_probability(images, probability), got {type(refiner).__name__}")


def _default_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ----------------------------------------------------------------------------------------------------------
# the build
# ----------------------------------------------------------------------------------------------------------


class _Builder:
    """Segment + inpaint batches of a :class:`ImageSource` on one device."""

    def __init__(self, source: ImageSource, segmenter: Any, fill: Any, holes: Tensor | None, device: torch.device, *,
                 refiner: Any = None, flip_average: bool = False, loose: float, dilate: int) -> None:
        self.source, self.segmenter, self.fill, self.device = source, segmenter, fill, device
        self.refiner, self.flip_average, self.loose, self.dilate = refiner, flip_average, loose, dilate
        self.holes = holes
        if holes is not None and holes.shape[0] != source.n:
            raise ValueError(f"holes has {holes.shape[0]} masks for {source.n} images")

    def backgrounds(self, start: int, x: Tensor) -> Tensor:
        from .refine import cut_out_probability, loose_hole

        size = self.source.size
        x = x.to(self.device)
        b = x.shape[0]
        with torch.no_grad():
            if self.holes is not None:
                hole = self.holes[start : start + b].to(self.device)
                hole = hole > 0.5 if hole.dtype.is_floating_point else hole.bool()
                if tuple(hole.shape[-2:]) != size:
                    hole = torch.nn.functional.interpolate(hole.float(), size=size, mode="nearest") > 0.5
            else:
                prob = cut_out_probability(self.segmenter, x, refiner=self.refiner, flip_average=self.flip_average)
                hole = loose_hole(prob, self.loose, self.dilate)
            # uint8 in -> uint8 out: the inpainter rounds exactly as to_uint8_rgb would
            filled = self.fill(x, hole)
        return to_uint8_rgb(filled, "the inpainter's output", check_values=False) if filled.dtype != torch.uint8 else filled


def _batch_ranges(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, stop)) for s in range(start, stop, batch_size)]


def build_bank(
    images: Tensor | Sequence | torch.utils.data.Dataset,
    labels: Tensor | Sequence[int] | None = None,
    segmenter: Any = None,
    inpainter: Any = "pyramid",
    *,
    holes: Tensor | None = None,
    size: int | Sequence[int] | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    refiner: Any = DEFAULT_EDGE_REFINER,
    flip_average: bool | None = None,
    loose_threshold: float | None = None,
    dilate: int | None = None,
    classes: Sequence[str] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    metadata: dict | None = None,
    out: str | os.PathLike | None = None,
    shard_size: int | None = None,
) -> BackgroundBank | BankManifest:
    """Segment every image, fill its loose mask with the inpainter and keep the uint8 result.

    Args:
        images: uint8/float tensor ``(N, C, H, W)`` (C in 1/3/4), a sequence of images (PIL / tensors), or
            a map-style dataset whose items are ``image`` or ``(image, label, ...)`` /
            ``{"image": ..., "label": ...}``.
        labels: ``(N,)`` integer class labels (optional when the dataset yields them; non-integer values
            such as ``[0.5, 1.7]`` raise ``ValueError``).
        segmenter: a :class:`~torch_backswap.segmenter.PatchSegmenter`, a name / path for
            ``PatchSegmenter.from_pretrained``, or any callable ``images -> (B, S, S) logits``. Never moved
            or switched to eval mode: a module in training mode or on another device is deep-copied.
            Not needed when ``holes`` are given.
        inpainter: name or object for :func:`~torch_backswap.inpaint.get_inpainter`.
        holes: optional ``(N, 1, H, W)`` given hole masks (bool / float > 0.5) instead of a segmenter
            (resized to ``size`` with nearest neighbour).
        size: bank resolution ``(H, W)`` or int; every image is resized to it (antialiased; the aspect
            ratio is not kept). Default: the first image's size.
        batch_size: images per segment-and-inpaint step.
        device: where segmentation and inpainting run (an in-memory bank is returned on this device).
            Under torchrun ``"cuda"`` means ``cuda:LOCAL_RANK``.
        refiner: the learned refiner that snaps the segmenter's probability to the image's edges before the
            hole is cut: a name or path for :meth:`EdgeRefiner.from_pretrained
            <torch_backswap.edge_refiner.EdgeRefiner.from_pretrained>` (default: the bundled
            ``torch-backswap/edgerefine-tiny``), a loaded refiner (never moved or switched, as ``segmenter``), or
            ``None`` for the paper's route (the bilinear probability, no flip, p > 0.1, not grown). The default
            is the route measured best (``benchmarks/RESULTS.md``, *mask_quality* and *robustness*
            ``backswap_edge``).
        flip_average: average the segmenter's logits with the mirror image's (default: on with a refiner).
        loose_threshold: foreground probability above which a pixel is a hole (default
            :data:`~torch_backswap.refine.REFINED_HOLE_THRESHOLD` = 0.2 with a refiner, else
            :data:`~torch_backswap.segmenter.LOOSE_THRESHOLD` = 0.1, the paper's loose mask).
        dilate: pixels to grow the hole by (default :func:`~torch_backswap.refine.hole_growth` of the bank size
            with a refiner, 1/32 of the shorter side: 2 px at 64 px; else 0).
        classes: class names stored with the bank.
        num_workers: DataLoader workers to decode a dataset.
        progress: show a tqdm bar (unit: images, so it reports images/s; rank 0 only).
        metadata: extra JSON-serialisable metadata to store.
        out: ``None``; a ``.safetensors`` file to save the in-memory bank to; or, with ``shard_size``,
            the directory of a sharded, resumable build.
        shard_size: backgrounds per shard (makes the build sharded, resumable and distributable).

    Returns:
        The in-memory :class:`~torch_backswap.bank.BackgroundBank` (without ``shard_size``), or the
        :class:`~torch_backswap.bankfiles.BankManifest` of the sharded bank in ``out``. Either carries
        ``build_stats = {"images", "seconds", "images_per_s"}`` (images built by all ranks in this run).

    Example:
        >>> import torch
        >>> images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
        >>> holes = torch.zeros(4, 1, 16, 16, dtype=torch.bool); holes[:, :, 4:12, 4:12] = True
        >>> bank = build_bank(images, [0, 1, 0, 1], holes=holes, progress=False)
        >>> len(bank), bank.size
        (4, (16, 16))
    """
    from .edge_refiner import EdgeRefiner
    from .inpaint import get_inpainter
    from .refine import REFINED_TIGHT_THRESHOLD
    from .segmenter import TIGHT_THRESHOLD, PatchSegmenter

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    if shard_size is not None and out is None:
        raise ValueError("shard_size needs out=<directory> to write the shards to, got out=None")
    if segmenter is None and holes is None:
        raise ValueError("build_bank needs a segmenter (or given holes), got segmenter=None")
    if shard_size is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("a distributed build (WORLD_SIZE > 1) writes shards: pass out=<directory> and shard_size")
    device = _default_device(device)
    source = ImageSource(images, labels, _as_size(size), num_workers)
    refiner, flip_average, loose, dilate = _hole_route(
        None if holes is not None else refiner, flip_average, loose_threshold, dilate, source.size  # given holes: none
    )
    routed = refiner is not None
    seg_name = None if holes is not None else _model_name(segmenter)
    fill = get_inpainter(inpainter)
    builder = _Builder(
        source, None if holes is not None else _ready_module(segmenter, device, PatchSegmenter), fill, holes, device,
        refiner=_ready_module(refiner, device, EdgeRefiner), flip_average=flip_average, loose=loose, dilate=dilate,
    )
    settings = {
        "segmenter": seg_name,
        "inpainter": _inpainter_name(fill),
        "loose_threshold": loose,
        "tight_threshold": REFINED_TIGHT_THRESHOLD if routed else TIGHT_THRESHOLD,
        "source_count": source.n,
    }
    if routed or flip_average or dilate:  # the paper's route keeps the settings (and the files) it always had
        settings.update({"refiner": _model_name(refiner), "flip_average": flip_average, "dilate": dilate})
    if shard_size is None:
        bank = _build_in_memory(builder, batch_size, classes, dict(settings, **(metadata or {})), progress)
        if out is not None:
            bank.save(out)
        return bank
    settings.update({"resolution": list(source.size), "batch_size": batch_size, "shard_size": shard_size,
                     "device_type": device.type, "given_holes": holes is not None})
    return _build_shards(builder, Path(out), shard_size, batch_size, classes, settings, dict(metadata or {}),
                         progress)


def _build_in_memory(builder: _Builder, batch_size: int, classes: Sequence[str] | None, meta: dict,
                     progress: bool) -> BackgroundBank:
    from tqdm.auto import tqdm

    source = builder.source
    out_bg, out_lab = [], []
    start = time.perf_counter()
    with tqdm(total=source.n, unit="img", desc="building background bank", disable=not progress) as bar:
        for s, x, lab in source.batches(_batch_ranges(0, source.n, batch_size)):
            out_bg.append(builder.backgrounds(s, x))
            out_lab.append(lab)
            bar.update(x.shape[0])
            bar.set_postfix(images_per_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.0f}")
    seconds = time.perf_counter() - start
    if any(lab is None for lab in out_lab):
        raise ValueError("build_bank needs labels: pass labels= or a dataset yielding (image, label)")
    bank = BackgroundBank(torch.cat(out_bg), torch.cat(out_lab).to(builder.device), classes, meta)
    bank.build_stats = {"images": source.n, "seconds": seconds, "images_per_s": source.n / max(seconds, 1e-9)}
    return bank


def _existing_shard(path: Path, index: int, count: int, shard_meta: dict,
                    recorded: ShardInfo | None = None) -> ShardInfo | None:
    """The :class:`ShardInfo` of a complete, intact shard from an earlier run; ``None`` (rebuild it) when absent,
    unreadable, or changed since it was written: its bytes differ from the ``recorded`` sha256 of a finished build's
    manifest, or, without one, its tensors from the checksum in its own header. ``ValueError`` when it was built
    with other settings (never mix two builds in one directory)."""
    if not path.is_file():
        return None
    try:
        meta = read_bank_header(path)
    except BackswapFileError:
        return None  # written by no build of ours (shards are renamed into place whole): rebuild it
    got = {k: meta.get(k) for k in shard_meta} | {"shard": meta.get("shard"), "count": meta.get("count")}
    want = dict(shard_meta, shard=index, count=count)
    if got != want:
        raise ValueError(
            f"{path} was built with other settings than this run: {got!r} != {want!r}; "
            "use another output directory or delete it"
        )
    info = ShardInfo(path.name, count, path.stat().st_size, sha256_file(path))
    if recorded is not None:
        return info if info == recorded else None  # changed after the manifest recorded it: rebuild, keep the record
    try:
        read_bank_file(path)  # the checksum of its metadata and tensors, in its header
    except BackswapFileError:
        return None
    return info


def _build_shards(builder: _Builder, out: Path, shard_size: int, batch_size: int, classes: Sequence[str] | None,
                  settings: dict, metadata: dict, progress: bool) -> BankManifest:
    from tqdm.auto import tqdm

    source = builder.source
    n_shards = math.ceil(source.n / shard_size)
    bounds = [(k * shard_size, min((k + 1) * shard_size, source.n)) for k in range(n_shards)]
    classes = None if classes is None else [str(c) for c in classes]
    shard_meta = {"builder": settings, **({"user": metadata} if metadata else {})}
    dist = Dist(builder.device)
    try:
        if dist.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            for stale in [*out.glob(".shard-*.tmp"), *out.glob(f".{MANIFEST}.*.tmp")]:  # left by a killed run
                stale.unlink(missing_ok=True)
            recorded: dict[str, ShardInfo] = {}
            if (out / MANIFEST).is_file():
                done = BankManifest.read(out)
                if (done.builder, done.metadata, done.classes) != (settings, metadata, classes):
                    raise ValueError(f"{out} holds a finished bank built with other settings ({done.builder!r}); "
                                     "use another output directory or delete it")
                recorded = {info.file: info for info in done.shards}
            found = {k: _existing_shard(out / shard_name(k), k, e - s, shard_meta, recorded.get(shard_name(k)))
                     for k, (s, e) in enumerate(bounds)}
            plan = {"todo": [k for k, info in found.items() if info is None],
                    "found": {k: info for k, info in found.items() if info is not None}}
        else:
            plan = None
        plan = dist.broadcast(plan)
        mine = plan["todo"][dist.rank :: dist.world]
        rounds = math.ceil(len(plan["todo"]) / dist.world)
        todo_images = sum(bounds[k][1] - bounds[k][0] for k in plan["todo"])
        written: dict[int, ShardInfo] = {}
        start = time.perf_counter()
        with tqdm(total=todo_images, unit="img", desc=f"building {out.name} ({dist.world} proc)",
                  disable=not progress or dist.rank != 0) as bar:
            for r in range(rounds):
                n_done = 0
                if r < len(mine):
                    k = mine[r]
                    bgs, labs = [], []
                    for s, x, lab in source.batches(_batch_ranges(*bounds[k], batch_size)):
                        if lab is None:
                            raise ValueError("build_bank needs labels: pass labels= or a dataset yielding (image, label)")
                        if classes is not None and int(lab.max()) >= len(classes):
                            raise ValueError(f"classes has {len(classes)} names but labels go up to {int(lab.max())}")
                        bgs.append(builder.backgrounds(s, x).cpu())
                        labs.append(lab)
                        if dist.world == 1:
                            bar.update(x.shape[0])
                    written[k] = write_shard(out, k, torch.cat(bgs), torch.cat(labs), classes, shard_meta)
                    n_done = written[k].count
                n_done = dist.sum(n_done)
                if dist.world > 1:
                    bar.update(n_done)
                bar.set_postfix(images_per_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.0f}")
        seconds = time.perf_counter() - start
        everything = dict(plan["found"])
        for part in dist.gather(written):
            everything.update(part)
        manifest = BankManifest(out, tuple(source.size), classes, shard_size,
                                [everything[k] for k in range(n_shards)], settings, metadata)
        if dist.rank == 0:
            manifest.write()
        dist.barrier()
    finally:
        dist.close()
    manifest.build_stats = {"images": todo_images, "seconds": seconds, "images_per_s": todo_images / max(seconds, 1e-9)}
    return manifest
