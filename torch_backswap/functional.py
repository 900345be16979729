"""The swap as pure batched functions: sample the random choices, then apply them to every part of a sample.

Three steps, each a plain function of tensors (no state, no I/O), on any device:

1. :func:`sample_params` — the random choices of one call as plain data (:class:`SwapParams`): which samples
   swap, which bank background each gets, the object's jitter. Pass the same params again to **replay** a
   swap exactly.
2. :func:`swap_backgrounds` — composite each object, jittered, onto its background; returns the images and a
   :class:`SwapRecord` (per-sample provenance: swapped or not, bank index, background class, jitter, the
   affine matrix used).
3. :func:`move_alpha`, :func:`move_masks`, :func:`move_boxes` — move the object's alpha, other masks and
   boxes with the same matrices, so every part of a sample stays consistent.

Example:
    >>> import torch
    >>> from torch_backswap import BackgroundBank
    >>> from torch_backswap.functional import gather_backgrounds, sample_params, swap_backgrounds
    >>> bank = BackgroundBank(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    >>> images = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    >>> alphas = torch.zeros(2, 1, 32, 32); alphas[:, :, 8:20, 8:20] = 1
    >>> params = sample_params(2, bank, generator=torch.Generator().manual_seed(0))
    >>> out, record = swap_backgrounds(images, alphas, gather_backgrounds(bank, params, (32, 32)), params)
    >>> record.swapped.tolist(), out.dtype, int(out[0, 0, 0, 0])   # the corner now shows the bank's black
    ([True, True], torch.uint8, 0)
    >>> again, _ = swap_backgrounds(images, alphas, gather_backgrounds(bank, params, (32, 32)), params)
    >>> bool((again == out).all())   # replay: same params, same result
    True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from ._checks import check_choice, check_fraction, check_non_negative
from ._opencv import solid_counts, uint8_planes
from ._image import float_alpha
from .composite import composite, soft_alpha, warp_alpha
from .jitter import REFERENCE_SIZE, JitterParams, jitter_affine, mask_bboxes, sample_jitter

__all__ = [
    "Compositing",
    "JitterParams",
    "SwapParams",
    "SwapRecord",
    "composite",
    "jitter_affine",
    "drop_specks",
    "gather_backgrounds",
    "move_alpha",
    "move_boxes",
    "move_masks",
    "paste_objects",
    "plan_swap",
    "sample_jitter",
    "sample_params",
    "swap_backgrounds",
]


@dataclass
class SwapParams:
    """The random choices of one swap call, one row per sample (plain data: log it, save it, replay it).

    Attributes:
        apply: ``(B,)`` bool — sampled to be swapped (probability ``p``).
        bank_indices: ``(B,)`` int64 — the bank background for each applied sample, ``-1`` elsewhere.
        jitter: :class:`~torch_backswap.jitter.JitterParams` with ``B`` rows (identity where not applied).
    """

    apply: Tensor
    bank_indices: Tensor
    jitter: JitterParams

    def __len__(self) -> int:
        return int(self.apply.shape[0])

    def to(self, device: torch.device | str) -> "SwapParams":
        return SwapParams(self.apply.to(device), self.bank_indices.to(device), self.jitter.to(device))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain lists (no pickle): log them, and :meth:`from_dict` replays the call bit for bit
        (float32 values survive the round trip through Python floats and JSON exactly)."""
        return {
            "apply": self.apply.cpu().tolist(),
            "bank_indices": self.bank_indices.cpu().tolist(),
            "jitter": {f.name: getattr(self.jitter, f.name).cpu().tolist() for f in fields(self.jitter)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SwapParams":
        """The :class:`SwapParams` of :meth:`to_dict`'s output (CPU tensors)."""
        jitter = JitterParams(**{k: torch.tensor(v, dtype=torch.float32) for k, v in data["jitter"].items()})
        jitter.translate = jitter.translate.reshape(-1, 2)  # keeps (0, 2) for an empty call
        apply = torch.tensor(data["apply"], dtype=torch.bool)
        bank_indices = torch.tensor(data["bank_indices"], dtype=torch.long)
        if not (len(apply) == len(bank_indices) == jitter.scale.shape[0]):
            raise ValueError("SwapParams.from_dict: apply, bank_indices and jitter must have one row per sample")
        return cls(apply, bank_indices, jitter)


@dataclass(frozen=True)
class Compositing:
    """How objects are pasted (the keyword arguments of :func:`swap_backgrounds` / :func:`plan_swap` /
    :func:`paste_objects`, checked once).

    Attributes:
        min_foreground: samples whose object covers less of the image are left unchanged (a missed object's
            speck would carry the label alone; default 0.01, 0 disables).
        feather_px: extra inward Gaussian feathering of the alpha in pixels (for hard given masks).
        harmonize: colour harmonisation strength in ``[0, 1]`` (0 = off).
        interpolation: ``"bilinear"`` or ``"nearest"`` resampling of the object.
        backend: the compositing kernel, :func:`~torch_backswap.composite.composite`'s ``backend``: ``"torch"``
            (default), ``"cv2"`` (OpenCV for uint8 images on the CPU, ``pip install "torch-backswap[fast]"``) or
            ``"auto"`` (OpenCV where it applies and ``cv2`` imports, else torch).
    """

    min_foreground: float = 0.01
    feather_px: float = 0.0
    harmonize: float = 0.0
    interpolation: str = "bilinear"
    backend: str = "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_foreground",
                           check_fraction("min_foreground", self.min_foreground, upper_open=True))
        object.__setattr__(self, "feather_px", check_non_negative("feather_px", self.feather_px))
        object.__setattr__(self, "harmonize", check_fraction("harmonize", self.harmonize))
        object.__setattr__(self, "interpolation",
                           check_choice("interpolation", self.interpolation, ("bilinear", "nearest")))
        object.__setattr__(self, "backend", check_choice("backend", self.backend, ("auto", "torch", "cv2")))


@dataclass
class SwapRecord:
    """What one swap call did to each sample (provenance).

    Attributes:
        swapped: ``(B,)`` bool — the sample got a new background (applied, and its object was big enough).
        bank_indices: ``(B,)`` int64 — index of the background in the bank, ``-1`` where not swapped.
        background_labels: ``(B,)`` int64 — class of that background's source image, ``-1`` where not swapped.
        scale, angle: ``(B,)`` float32 — the object's jitter (1 and 0 where not swapped).
        translate: ``(B, 2)`` float32 — requested shift as a fraction of ``(W, H)`` (clipped in ``matrices``).
        matrices: ``(B, 2, 3)`` float32 source→destination pixel matrices actually used (identity where not
            swapped).
        object_boxes: ``(B, 4)`` int64 inclusive ``(x0, y0, x1, y1)`` box of the object pasted (of the alpha
            :func:`plan_swap` returns, ``mask_bboxes``), in the source image; zeros where not swapped.
        params: the :class:`SwapParams` that produced this record (pass them back to replay).
    """

    swapped: Tensor
    bank_indices: Tensor
    background_labels: Tensor
    scale: Tensor
    angle: Tensor
    translate: Tensor
    matrices: Tensor
    object_boxes: Tensor
    params: SwapParams

    def __len__(self) -> int:
        return int(self.swapped.shape[0])

    def to_list(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per sample: ``swapped``, ``bank_index``, ``background_label``, ``scale``,
        ``angle``, ``translate``, ``matrix``, ``object_box``."""
        cols = {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self) if f.name != "params"}
        return [
            {
                "swapped": cols["swapped"][i],
                "bank_index": cols["bank_indices"][i],
                "background_label": cols["background_labels"][i],
                "scale": cols["scale"][i],
                "angle": cols["angle"][i],
                "translate": cols["translate"][i],
                "matrix": cols["matrices"][i],
                "object_box": cols["object_boxes"][i],
            }
            for i in range(len(self))
        ]


def sample_params(
    batch_size: int,
    bank: Any,
    labels: Tensor | None = None,
    *,
    p: float = 1.0,
    strategy: str = "class_balanced",
    scale: float | tuple[float, float] = (0.5, 1.5),
    degrees: float | tuple[float, float] = 30.0,
    translate_px: float = 32.0,
    reference_size: int = REFERENCE_SIZE,
    generator: torch.Generator | None = None,
) -> SwapParams:
    """Sample which samples swap, their bank backgrounds and their jitter — once per call.

    Draws, in this order, from ``generator`` (CPU; default: the global RNG): the per-sample coin
    (only when ``p < 1``), the bank indices (:meth:`BackgroundBank.sample_indices`), the jitter
    (:func:`~torch_backswap.jitter.sample_jitter`).

    Args:
        batch_size: ``B``.
        bank: a :class:`~torch_backswap.bank.BackgroundBank` (anything with ``sample_indices``).
        labels: ``(B,)`` int64 class indices of the objects (needed by ``strategy="other_class"``).
        p: probability per sample of swapping.
        strategy: ``"class_balanced"`` (paper), ``"uniform"`` or ``"other_class"``.
        scale, degrees, translate_px, reference_size: the jitter ranges (see ``sample_jitter``).
        generator: CPU ``torch.Generator``.

    Returns:
        :class:`SwapParams` with ``batch_size`` rows, on the CPU.
    """
    if p >= 1.0:
        apply = torch.ones(batch_size, dtype=torch.bool)
    else:
        apply = torch.rand(batch_size, generator=generator) < p
    chosen = apply.nonzero().flatten()
    n = int(chosen.numel())
    sub_labels = None if labels is None else (labels if n == batch_size else labels[chosen])
    idx = bank.sample_indices(n, sub_labels, strategy, generator).cpu()
    jit = sample_jitter(
        n, scale=scale, degrees=degrees, translate_px=translate_px, reference_size=reference_size, generator=generator
    )
    if n == batch_size:
        return SwapParams(apply, idx.long(), jit)
    bank_indices = torch.full((batch_size,), -1, dtype=torch.long)
    bank_indices[chosen] = idx.long()
    full = JitterParams(
        scale=torch.ones(batch_size), angle=torch.zeros(batch_size), translate=torch.zeros(batch_size, 2)
    )
    full.scale[chosen], full.angle[chosen], full.translate[chosen] = jit.scale, jit.angle, jit.translate
    return SwapParams(apply, bank_indices, full)


def gather_backgrounds(bank: Any, params: SwapParams, size: tuple[int, int]) -> Tensor:
    """The bank backgrounds the params chose: uint8 ``(k, 3, H, W)``, one row per applied sample, at ``size``."""
    idx = params.bank_indices[params.apply]
    return bank.gather(idx.to(bank.device), size=size)


def drop_specks(alpha: Tensor, min_fraction: float, *, boxes: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Zero the alpha of samples whose object (alpha > 0.5) covers less than ``min_fraction`` of the image.

    A missed object's speck pasted on a new background would be an image without its object that still
    carries the object's label. Works on every compact alpha dtype; returns a new tensor only when a
    sample is dropped. ``boxes``: ``mask_bboxes(alpha)`` when the caller has it (saves a pass with OpenCV).
    """
    if min_fraction <= 0 or alpha.shape[0] == 0:
        return alpha
    planes = uint8_planes(alpha)
    if planes is not None:  # OpenCV installed: counted inside each object's box, the same integers
        count = solid_counts(planes, 0 if alpha.dtype == torch.bool else 127, *(boxes or mask_bboxes(alpha)))
    else:
        solid = alpha if alpha.dtype == torch.bool else alpha > (127 if alpha.dtype == torch.uint8 else 0.5)
        # count the solid pixels as bytes (no float copy of the frame)
        count = solid.view(torch.uint8).flatten(1).sum(1, dtype=torch.int32)
    small = count.double() / alpha[0].numel() < min_fraction
    if not bool(small.any()):
        return alpha
    alpha = alpha.clone()
    alpha[small] = 0
    return alpha


def _check_rows(name: str, t: Tensor, rows: tuple[int, ...], size: tuple[int, int], channels: int | None) -> None:
    if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[0] not in rows or tuple(t.shape[-2:]) != tuple(size):
        want = " or ".join(str(r) for r in dict.fromkeys(rows))
        raise ValueError(
            f"{name} must be ({want}, {channels or 'C'}, {size[0]}, {size[1]}), "
            f"got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
        )
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got shape {tuple(t.shape)}")


def swap_backgrounds(
    images: Tensor,
    alphas: Tensor,
    backgrounds: Tensor,
    params: SwapParams,
    *,
    min_foreground: float = 0.01,
    feather_px: float = 0.0,
    harmonize: float = 0.0,
    interpolation: str = "bilinear",
    background_labels: Tensor | None = None,
    inplace: bool = False,
    backend: str = "torch",
) -> tuple[Tensor, SwapRecord]:
    """Paste each applied sample's object, jittered, onto its background.

    A pure function: no input is written to (unless ``inplace``); the images returned are new tensors wherever a
    sample was swapped.

    Args:
        images: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        alphas: ``(B, 1, H, W)`` object alpha: bool, uint8 (``value / 255``) or float in ``[0, 1]``; or
            ``(k, 1, H, W)`` with one row per applied sample.
        backgrounds: ``(k, 3, H, W)`` (uint8 or float) with one row per applied sample (see
            :func:`gather_backgrounds`), or ``(B, 3, H, W)`` (rows of samples not applied are ignored).
        params: :class:`SwapParams` with ``B`` rows (:func:`sample_params`).
        min_foreground: samples whose object covers less of the image are left unchanged (0 disables).
        feather_px: inward Gaussian feathering of the alpha in pixels (for hard given masks).
        harmonize: colour harmonisation strength in ``[0, 1]``.
        interpolation: ``"bilinear"`` or ``"nearest"`` resampling of the object.
        background_labels: class of each background's source image, one per row of ``backgrounds`` (e.g.
            ``bank.labels[indices]``), for the record; ``-1`` in the record when not given.
        inplace: allow writing the composites into ``backgrounds`` (saves a full-frame copy when they are a
            fresh tensor of your own, e.g. from :func:`gather_backgrounds`; default ``False``).
        backend: the compositing kernel, ``"torch"`` (default), ``"cv2"`` or ``"auto"`` (see :class:`Compositing`).

    Returns:
        ``(images, record)``: images of the input's dtype and device (samples not swapped are the input
        bytes, unchanged), and the :class:`SwapRecord`.
    """
    b, _, h, w = images.shape
    if len(params) != b:
        raise ValueError(f"params has {len(params)} rows for a batch of {b} images")
    n = int(params.apply.sum())
    _check_rows("alphas", alphas, (b, n), (h, w), 1)
    _check_rows("backgrounds", backgrounds, (n, b), (h, w), 3)
    alpha, record = plan_swap(alphas, params, min_foreground=min_foreground, feather_px=feather_px,
                              background_labels=background_labels, device=images.device)
    out = paste_objects(images, alpha, backgrounds, record, harmonize=harmonize, interpolation=interpolation,
                        inplace=inplace, backend=backend)
    return out, record


def plan_swap(
    alphas: Tensor,
    params: SwapParams,
    *,
    min_foreground: float = 0.01,
    feather_px: float = 0.0,
    background_labels: Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, SwapRecord]:
    """The geometry of a swap, no pixels: the object alpha to paste and the :class:`SwapRecord` (which samples swap,
    the matrices), from the alphas and the params alone — the first half of :func:`swap_backgrounds`.

    Args:
        alphas: ``(B, 1, H, W)`` or ``(k, 1, H, W)`` (one row per applied sample) object alphas.
        params, min_foreground, feather_px, background_labels: as in :func:`swap_backgrounds`.
        device: where the record and alpha go (default: the alphas').

    Returns:
        ``(alpha, record)``: the ``(k, 1, H, W)`` alpha of the applied samples, feathered and with specks dropped,
        ready for :func:`paste_objects`; and the record (what :func:`swap_backgrounds` returns).
    """
    b = len(params)
    _, _, h, w = alphas.shape
    device = alphas.device if device is None else torch.device(device)
    apply = params.apply.to(device)
    chosen = apply.nonzero().flatten()
    n = int(chosen.numel())
    all_rows = n == b
    alpha = alphas if alphas.shape[0] == n else alphas.index_select(0, chosen.to(alphas.device))
    alpha = alpha.to(device)
    jitter = params.jitter if all_rows else params.jitter[chosen.cpu()]
    eye = torch.eye(2, 3, device=device).expand(b, 2, 3).contiguous()
    swapped = torch.zeros(b, dtype=torch.bool, device=device)
    matrices = eye
    boxes_all = torch.zeros(b, 4, dtype=torch.int64, device=device)
    if n:
        if feather_px > 0:
            alpha = soft_alpha(alpha, feather_px)
        boxes, has_object = mask_bboxes(alpha)  # the jitter's centre and which samples have an object
        kept = drop_specks(alpha, min_foreground, boxes=(boxes, has_object))
        if kept is not alpha:  # a speck was dropped: its sample has no object any more
            alpha = kept
            boxes, has_object = mask_bboxes(alpha)
        object_boxes = torch.where(has_object[:, None], boxes.to(device), 0)
        m_sub = jitter_affine(jitter, (h, w), bboxes=boxes)
        m_sub = torch.where(has_object[:, None, None], m_sub, eye[:n])
        if all_rows:
            matrices, swapped, boxes_all = m_sub, has_object, object_boxes
        else:
            matrices = eye.clone().index_copy_(0, chosen, m_sub)
            swapped = swapped.index_copy(0, chosen, has_object)
            boxes_all = boxes_all.index_copy(0, chosen, object_boxes)
    idx = params.bank_indices.to(device)
    never = torch.full_like(idx, -1)
    bank_indices = torch.where(swapped, idx, never)
    classes = never.clone()
    if background_labels is not None:
        lab = background_labels.to(device=device, dtype=torch.long)
        classes = lab if lab.shape[0] == b else classes.index_copy(0, chosen, lab)
    record = SwapRecord(
        swapped=swapped,
        bank_indices=bank_indices,
        background_labels=torch.where(swapped, classes, never),
        scale=torch.where(swapped, params.jitter.scale.to(device), torch.ones_like(params.jitter.scale, device=device)),
        angle=torch.where(swapped, params.jitter.angle.to(device), torch.zeros_like(params.jitter.angle, device=device)),
        translate=torch.where(swapped[:, None], params.jitter.translate.to(device), 0.0),
        matrices=torch.where(swapped[:, None, None], matrices, eye),
        object_boxes=boxes_all,
        params=params,
    )
    return alpha, record


def paste_objects(
    images: Tensor,
    alpha: Tensor,
    backgrounds: Tensor,
    record: SwapRecord,
    *,
    harmonize: float = 0.0,
    interpolation: str = "bilinear",
    inplace: bool = False,
    backend: str = "torch",
) -> Tensor:
    """The pixels of a swap planned by :func:`plan_swap`: composite each applied sample's object (``alpha``, one row
    per applied sample, as :func:`plan_swap` returns it) with ``record.matrices`` onto its background — the second
    half of :func:`swap_backgrounds` (same arguments). Rows not applied are the input's; applied rows whose object
    was dropped are overwritten later by whoever restores the input (``record.swapped`` is False there). The object
    boxes are ``record.object_boxes``: pass the alpha :func:`plan_swap` returned, not another one."""
    b = images.shape[0]
    device = images.device
    chosen = record.params.apply.to(device).nonzero().flatten()
    n = int(chosen.numel())
    if not n:
        return images
    all_rows = n == b
    sub = images if all_rows else images.index_select(0, chosen)
    bgs = backgrounds if backgrounds.shape[0] == n else backgrounds.index_select(0, chosen.to(backgrounds.device))
    bgs = bgs.to(device)
    own_bgs = inplace or bgs is not backgrounds  # a row selection or device copy is ours to write into
    m_sub = record.matrices if all_rows else record.matrices.index_select(0, chosen)
    # the object boxes plan_swap found (no second pass over the alphas)
    boxes = (record.object_boxes, record.swapped) if all_rows else \
        (record.object_boxes.index_select(0, chosen), record.swapped.index_select(0, chosen))
    out_sub = composite(sub, alpha.to(device), bgs, m_sub, harmonize=harmonize, mode=interpolation, inplace=own_bgs,
                        backend=backend, boxes=boxes)
    if all_rows:
        return out_sub
    out = images.clone()
    out.index_copy_(0, chosen, out_sub)
    return out


def move_alpha(alpha: Tensor, record: SwapRecord, *, interpolation: str = "bilinear") -> Tensor:
    """Where the object is after the swap: ``(B, 1, H, W)`` alpha warped with ``record.matrices``.

    Samples not swapped come back as the input, bit for bit; swapped ones keep the input's dtype (bool / integer
    alphas are thresholded at 0.5, uint8 ``0..255`` alphas rounded).
    """
    if not bool(record.swapped.any()):
        return alpha
    a = alpha.as_subclass(Tensor)
    # only each object's box is resampled (kornia's full-frame warp_affine values, up to float rounding)
    warped = warp_alpha(a, record.matrices.to(a.device), mode=interpolation)
    warped = _cast_like(warped, a)
    return torch.where(record.swapped.to(a.device)[:, None, None, None], warped, a)


def _cast_like(values: Tensor, like: Tensor) -> Tensor:
    if like.dtype == torch.bool:
        return values > 0.5
    if like.dtype == torch.uint8:
        if like.numel() and int(like.amax()) > 1:
            return (values * 255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
        return (values > 0.5).to(torch.uint8)
    if like.dtype.is_floating_point:
        return values.to(like.dtype)
    return (values > 0.5).to(like.dtype)


def move_masks(masks: Tensor, moved_alpha: Tensor, record: SwapRecord, *, background_value: int | float = 0) -> Tensor:
    """Move the other masks of a sample with the object (nearest neighbour), like a geometric transform would.

    The swapped image shows only the object from the input: inside the moved object (``moved_alpha > 0.5``)
    each mask keeps its own values (class ids, instance masks, ...), moved with the object; everywhere else
    it becomes ``background_value`` (the new background is unlabelled).

    Args:
        masks: ``(B, ..., H, W)`` any dtype (e.g. ``(B, H, W)`` class ids, ``(B, N, H, W)`` instance masks).
        moved_alpha: ``(B, 1, H, W)`` the object's alpha after the swap (:func:`move_alpha`).
        record: the call's :class:`SwapRecord`.
        background_value: value for pixels of the new background.

    Returns:
        ``masks``' shape and dtype; samples not swapped unchanged.
    """
    from kornia.geometry.transform import warp_affine

    if not bool(record.swapped.any()):
        return masks
    m = masks.as_subclass(Tensor)
    b, h, w = m.shape[0], m.shape[-2], m.shape[-1]
    flat = m.reshape(b, -1, h, w)
    work = flat.to(torch.float64 if flat.dtype in (torch.int32, torch.int64) else torch.float32)
    warped = warp_affine(work, record.matrices.to(work), (h, w), mode="nearest", align_corners=True)
    inside = (float_alpha(moved_alpha.as_subclass(Tensor)) > 0.5).to(m.device)
    warped = torch.where(inside, warped, torch.full_like(warped, float(background_value)))
    warped = (warped > 0.5) if m.dtype == torch.bool else warped.round().to(m.dtype) if not m.dtype.is_floating_point else warped.to(m.dtype)
    out = torch.where(record.swapped.to(m.device)[:, None, None, None], warped, flat)
    return out.reshape(m.shape)


def move_boxes(boxes: Tensor, matrix: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Move ``(N, 4)`` XYXY boxes of one image with its ``(2, 3)`` matrix and clamp them to the canvas.

    The new box is the bounding box of the four moved corners (the convention of torchvision's
    ``affine`` on boxes). Returns float ``(N, 4)`` XYXY.
    """
    x0, y0, x1, y1 = boxes.to(torch.float32).unbind(-1)
    xs = torch.stack([x0, x1, x0, x1], -1)
    ys = torch.stack([y0, y0, y1, y1], -1)
    m = matrix.to(torch.float32)
    tx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ty = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    h, w = canvas_size
    out = torch.stack([tx.amin(-1), ty.amin(-1), tx.amax(-1), ty.amax(-1)], -1)
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out
