"""Pure batched compositing kernels: paste a cut-out foreground onto backgrounds through affine matrices.

Everything here is a function of tensors (no state, no I/O) and works batch-first on any device.

Conventions
-----------
* ``images``: ``(B, C, H, W)``, ``uint8`` in ``[0, 255]`` or floating point in ``[0, 1]``.
* ``alpha``: ``(B, 1, H, W)`` foreground opacity, float in ``[0, 1]`` (``bool`` and ``uint8`` 0/255 are
  accepted too). Soft values give soft (feathered) edges.
* ``backgrounds``: ``(B, C, H, W)`` of the same spatial size, ``uint8`` or float (converted to the
  images' dtype convention).
* Affine matrices (from :func:`~torch_backswap.jitter.jitter_affine`, or a :class:`~torch_backswap.jitter.JitterParams`
  turned into them here) are ``(B, 2, 3)`` and map **source pixel coordinates to destination pixel
  coordinates** (pixel centres at integers, origin top-left), the convention of
  :func:`kornia.geometry.transform.warp_affine` with ``align_corners=True``.
* The foreground is composited with **premultiplied alpha**: colour and alpha are warped as
  ``(rgb * alpha, alpha)`` so the source image's own background never bleeds into the pasted edges.
  ``out = background * (1 - a) + warp(rgb * alpha)``.
* dtype in = dtype out: ``uint8`` images give ``uint8`` (rounded), float images give the same float dtype.
* A sample whose alpha is all zero (nothing detected) is returned **unchanged** — pasting nothing onto a
  new background would produce an image without the object that still carries the object's label.

Two implementations share these semantics:

* :func:`composite_reference` — simple and slow: full-frame float ``kornia.geometry.transform.warp_affine``.
* :func:`composite` — the fast path: only the foreground's bounding box is read (as ``uint8``, converted to float
  in a box-sized buffer) and only the destination bounding box is resampled (image and alpha in one 4-channel
  warp) and blended; everything else is the background, copied once as bytes. A whole-pixel shift is blended
  without resampling. Two kernels: torch (``backend="torch"``, every dtype and device) and, for uint8 images on
  the CPU when OpenCV is installed (``pip install "torch-backswap[fast]"``), OpenCV's SIMD ``warpAffine``
  (``backend="cv2"``; ``"auto"`` picks it there): the same boxes, resampled and blended in uint8. The default is
  ``"torch"``: the bytes a seed gives must not depend on whether OpenCV happens to be installed.

Tolerance of the torch kernel (``backend="torch"``) against :func:`composite_reference` (tested in
``tests/test_composite.py``):

* uint8 images, bilinear: at most 1 grey level, mean absolute difference <= 0.005 over random scenes (float rounding
  of the box-local sampling grid flips a few half-way roundings); the output is the background's bytes wherever the
  moved alpha is 0, and the moved foreground (rounded half up) wherever it is 1;
* float images: equal up to float32 rounding (1e-5);
* nearest neighbour: a source position exactly half-way between pixels may round to the other pixel, so at most
  1e-3 of the values differ by more than one level;
* a ``uint8`` alpha (``value / 255``, what the swap segmenting ``uint8`` images produces, see
  :func:`~torch_backswap.segmenter.logits_to_alpha`) against the float alpha it rounds: at most 1 grey level,
  mean <= 0.02.

Tolerance of the OpenCV kernel (``backend="cv2"``) against :func:`composite_reference`: it samples at source
positions rounded to 1/32 pixel with 15-bit fixed-point weights, keeps the moved alpha in uint8 (a float alpha is
rounded to ``value / 255`` first) and rounds the premultiplied colour and the blend once each, so

* uint8 images, bilinear: at most 2 grey levels, mean absolute difference <= 0.06 on noise images (the worst case
  for resampling; measured 0.049, about 5 % of the values one level off, over 200 random scenes with float, uint8
  and bool alphas, and the same for a uint8 alpha against the float alpha it rounds), 0.013 on StampBirds photos
  at 224²; the background's bytes wherever the moved alpha is 0, the moved foreground within 1 level wherever it
  is 1; samples with an empty alpha unchanged;
* nearest neighbour: as the torch kernel, only ties differ (at most 1e-3 of the values by more than one level).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._opencv import opencv as _opencv
from .jitter import (
    JitterParams,
    _affine_inverse,
    _check_alpha,
    _transform_corners,
    jitter_affine,
    mask_bboxes,
)

__all__ = ["blend", "composite", "composite_reference", "soft_alpha", "warp", "warp_alpha"]


# --------------------------------------------------------------------------------------------------
# alpha, warp, blend
# --------------------------------------------------------------------------------------------------


def _alpha_float(alpha: Tensor, dtype: torch.dtype) -> Tensor:
    if alpha.dtype == torch.bool:
        return alpha.to(dtype)
    if alpha.dtype == torch.uint8:
        return alpha.to(dtype) / 255.0
    return alpha.to(dtype).clamp(0.0, 1.0)


def soft_alpha(mask: Tensor, feather_px: float = 0.0) -> Tensor:
    """Float alpha in ``[0, 1]`` from a mask, optionally feathered inwards at its edges.

    Args:
        mask: ``(B, 1, H, W)`` bool, ``uint8`` (0..255) or float in ``[0, 1]``.
        feather_px: Gaussian sigma in pixels (``kornia.filters.gaussian_blur2d``). The result is
            ``min(mask, blur(mask))``: edges become soft **inside** the mask only, so no pixel outside the
            mask (source background) is ever pasted. ``0`` returns the mask as float.

    Returns:
        float32 (or the mask's float dtype) ``(B, 1, H, W)``.
    """
    _check_alpha(mask)
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    alpha = _alpha_float(mask, dtype)
    if feather_px < 0:
        raise ValueError(f"feather_px must be >= 0, got {feather_px!r}")
    if feather_px == 0:
        return alpha
    from kornia.filters import gaussian_blur2d

    k = 2 * int(math.ceil(3.0 * feather_px)) + 1
    blurred = gaussian_blur2d(alpha, (k, k), (float(feather_px), float(feather_px)), border_type="replicate")
    return torch.minimum(alpha, blurred)


def _compute_dtype(images: Tensor) -> torch.dtype:
    return torch.float64 if images.dtype == torch.float64 else torch.float32


def _to_compute(x: Tensor, dtype: torch.dtype, *, as_uint8_scale: bool) -> Tensor:
    """Convert colour values to the compute dtype in the *output's* value scale (0..255 or 0..1)."""
    if x.dtype == torch.uint8:
        y = x.to(dtype)
        return y if as_uint8_scale else y / 255.0
    y = x.to(dtype)
    return y * 255.0 if as_uint8_scale else y


def _from_compute(x: Tensor, out_dtype: torch.dtype) -> Tensor:
    """Back to the output dtype; uint8 rounds half up (``floor(x + 0.5)``) after clamping. Works in place on ``x``."""
    if out_dtype == torch.uint8:
        return x.clamp_(0.0, 255.0).add_(0.5).to(torch.uint8)
    return x.to(out_dtype)


def warp(
    images: Tensor,
    alpha: Tensor,
    matrices: Tensor,
    *,
    mode: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """Full-frame warp of the premultiplied foreground and its alpha with one matrix per sample.

    Args:
        images: ``(B, C, H, W)`` uint8 or float.
        alpha: ``(B, 1, H, W)`` alpha / mask.
        matrices: ``(B, 2, 3)`` source→destination pixel matrices.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(premultiplied, alpha)`` float tensors ``(B, C, H, W)`` and ``(B, 1, H, W)``; colour stays in
        the images' value scale (0..255 for uint8, 0..1 for float).
    """
    from kornia.geometry.transform import warp_affine

    _check_alpha(alpha, images)
    dtype = _compute_dtype(images)
    a = _alpha_float(alpha, dtype)
    x = images.to(dtype) * a
    stacked = torch.cat([x, a], dim=1)
    out = warp_affine(stacked, matrices.to(dtype), tuple(images.shape[-2:]), mode=mode, padding_mode="zeros", align_corners=True)
    return out[:, :-1], out[:, -1:]


def warp_alpha(alpha: Tensor, matrices: Tensor, *, mode: str = "bilinear",
               boxes: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Move alphas with source→destination matrices: float32 ``(B, 1, H, W)`` in ``[0, 1]``, zero where nothing lands.

    The values of ``kornia.geometry.transform.warp_affine(float_alpha, matrices, (H, W), align_corners=True)`` (zero
    padding) up to float rounding of the sampling grid; on the CPU only each alpha's destination box is resampled
    (from its source box) into a zero frame — the object covers a fraction of the frame. Other devices: kornia.

    Args:
        alpha: ``(B, 1, H, W)`` bool, uint8 (``value / 255``) or float alpha.
        matrices: ``(B, 2, 3)`` source→destination pixel matrices.
        mode: ``"bilinear"`` or ``"nearest"``.
        boxes: ``mask_bboxes(alpha)`` when the caller has it.
    """
    _check_alpha(alpha)
    b, _, h, w = alpha.shape
    if alpha.device.type != "cpu" or b == 0:
        from kornia.geometry.transform import warp_affine

        return warp_affine(_alpha_float(alpha, torch.float32), matrices.to(alpha.device, torch.float32), (h, w),
                           mode=mode, padding_mode="zeros", align_corners=True)
    out = torch.zeros(b, 1, h, w)
    boxes, valid = mask_bboxes(alpha) if boxes is None else boxes
    rows = _loop_windows(boxes, valid, matrices.to(torch.float32), h, w)
    for i, src, shift, (dx0, dy0, dx1, dy1), grid in _window_grids(rows, torch.float32):
        if shift is not None:
            tx, ty = shift
            src, grid = (dx0 - tx, dy0 - ty, dx1 - tx, dy1 - ty), None
        buf = _source_alpha(alpha, i, src)
        if grid is None:
            out[i, :, dy0 : dy1 + 1, dx0 : dx1 + 1] = buf
        else:
            out[i, :, dy0 : dy1 + 1, dx0 : dx1 + 1] = F.grid_sample(
                buf[None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return out


def _source_alpha(alpha: Tensor, i: int, box: tuple[int, int, int, int]) -> Tensor:
    """Float alpha ``(1, h, w)`` of sample ``i`` in the inclusive box ``(x0, y0, x1, y1)``, zero outside the frame."""
    h, w = alpha.shape[-2:]
    x0, y0, x1, y1 = box
    buf = torch.zeros(1, y1 - y0 + 1, x1 - x0 + 1)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if cx0 <= cx1 and cy0 <= cy1:
        view = buf[:, cy0 - y0 : cy1 - y0 + 1, cx0 - x0 : cx1 - x0 + 1]
        view.copy_(alpha[i, :, cy0 : cy1 + 1, cx0 : cx1 + 1])
        if alpha.dtype == torch.uint8:
            view.div_(255.0)
        elif alpha.dtype != torch.bool:
            view.clamp_(0.0, 1.0)
    return buf


def _harmonize(premult: Tensor, a: Tensor, bg: Tensor, strength: float) -> Tensor:
    """Move the pasted foreground's per-channel mean/std towards the background under it."""
    dims = (-2, -1)
    wsum = a.sum(dims, keepdim=True).clamp_min(1e-6)
    fg = premult / a.clamp_min(1e-6)
    mu_f = premult.sum(dims, keepdim=True) / wsum
    var_f = (a * (fg - mu_f) ** 2).sum(dims, keepdim=True) / wsum
    mu_b = (a * bg).sum(dims, keepdim=True) / wsum
    var_b = (a * (bg - mu_b) ** 2).sum(dims, keepdim=True) / wsum
    ratio = (var_b.clamp_min(1e-12) / var_f.clamp_min(1e-12)).sqrt()
    k = 1.0 + strength * (ratio - 1.0)
    new_mu = mu_f + strength * (mu_b - mu_f)
    return premult * k + a * (new_mu - k * mu_f)


def blend(foreground: Tensor, alpha: Tensor, background: Tensor, *, premultiplied: bool = False) -> Tensor:
    """Alpha-blend ``foreground`` over ``background``: ``bg * (1 - a) + fg * a``.

    Args:
        foreground: ``(B, C, H, W)`` uint8 or float (premultiplied float when ``premultiplied``).
        alpha: ``(B, 1, H, W)`` alpha in ``[0, 1]`` (bool / uint8 accepted).
        background: ``(B, C, H, W)`` uint8 or float.
        premultiplied: ``foreground`` is already ``rgb * alpha``.

    Returns:
        Tensor of ``background``'s dtype (uint8 rounded), unless ``background`` is uint8 and the
        foreground float while not premultiplied — then the foreground's value scale decides nothing:
        the result always has the background's dtype and scale.
    """
    out_dtype = background.dtype
    dtype = torch.float64 if torch.float64 in (foreground.dtype, background.dtype) else torch.float32
    to255 = out_dtype == torch.uint8
    bg = _to_compute(background, dtype, as_uint8_scale=to255)
    a = _alpha_float(alpha, dtype)
    if premultiplied:
        p = foreground.to(dtype)
    else:
        p = _to_compute(foreground, dtype, as_uint8_scale=to255) * a
    return _from_compute(bg - a * bg + p, out_dtype)


def _prepare(images: Tensor, alpha: Tensor, backgrounds: Tensor, params) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    _check_alpha(alpha, images)
    if not isinstance(backgrounds, Tensor) or backgrounds.shape != images.shape:
        raise ValueError(
            f"backgrounds must have the images' shape {tuple(images.shape)}, got "
            f"{tuple(backgrounds.shape) if isinstance(backgrounds, Tensor) else type(backgrounds).__name__}"
        )
    if images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
    if isinstance(params, JitterParams):
        return jitter_affine(params, tuple(images.shape[-2:]), alpha)
    if isinstance(params, Tensor) and params.shape == (images.shape[0], 2, 3):
        return params.to(device=images.device, dtype=torch.float32)
    raise ValueError(f"params must be JitterParams or a (B, 2, 3) tensor, got {getattr(params, 'shape', type(params))}")


def composite_reference(
    images: Tensor,
    alpha: Tensor,
    backgrounds: Tensor,
    params: JitterParams | Tensor,
    *,
    harmonize: float = 0.0,
    mode: str = "bilinear",
) -> Tensor:
    """Unoptimised reference of :func:`composite` (full-frame float warp with kornia). Same arguments."""
    matrices = _prepare(images, alpha, backgrounds, params)
    out_dtype = images.dtype
    dtype = _compute_dtype(images)
    to255 = out_dtype == torch.uint8
    premult, a = warp(_to_compute(images, dtype, as_uint8_scale=to255), alpha, matrices, mode=mode)
    bg = _to_compute(backgrounds, dtype, as_uint8_scale=to255)
    if harmonize:
        premult = _harmonize(premult, a, bg, float(harmonize))
    out = _from_compute(bg - a * bg + premult, out_dtype)
    _, valid = mask_bboxes(alpha)
    return torch.where(valid[:, None, None, None], out, images)


def _window_index(ox: Tensor, oy: Tensor, hw: tuple[int, int], width: int) -> Tensor:
    """Flat ``(B, 1, h*w)`` indices of an ``h x w`` window at per-sample origin ``(ox, oy)``."""
    h, w = hw
    ys = torch.arange(h, device=ox.device)
    xs = torch.arange(w, device=ox.device)
    idx = (oy[:, None, None] + ys[None, :, None]) * width + (ox[:, None, None] + xs[None, None, :])
    return idx.reshape(ox.shape[0], 1, h * w)


def composite(
    images: Tensor,
    alpha: Tensor,
    backgrounds: Tensor,
    params: JitterParams | Tensor,
    *,
    harmonize: float = 0.0,
    mode: str = "bilinear",
    inplace: bool = False,
    path: str = "auto",
    boxes: tuple[Tensor, Tensor] | None = None,
    backend: str = "torch",
) -> Tensor:
    """Paste each image's foreground, jittered, onto its background (fast path).

    Args:
        images: ``(B, C, H, W)`` uint8 or float — the foreground sources.
        alpha: ``(B, 1, H, W)`` foreground alpha (float in [0, 1], bool, or uint8 0..255), e.g. a
            feathered tight mask. All-zero alpha → that sample is returned unchanged.
        backgrounds: ``(B, C, H, W)`` uint8 or float backgrounds of the same size.
        params: :class:`JitterParams` (turned into matrices with :func:`jitter_affine`, keeping the
            object inside the frame) or ``(B, 2, 3)`` source→destination pixel matrices.
        harmonize: strength in ``[0, 1]`` of moving the pasted foreground's per-channel mean/std to the
            background under it (0 = off, the default).
        mode: ``"bilinear"`` (default) or ``"nearest"`` resampling.
        inplace: allow writing the result into ``backgrounds`` (saves one full-frame copy; only when
            it has the images' dtype and is contiguous).
        path: the torch kernel's strategy: ``"auto"`` (per-sample exact windows on CPU, one batched pass over the
            batch's largest window elsewhere), ``"loop"`` or ``"batched"``. All give the same result.
        boxes: ``mask_bboxes(alpha)`` when the caller has it already (saves one pass over the alphas).
        backend: ``"torch"`` (default), ``"cv2"`` or ``"auto"`` (OpenCV's uint8 kernel where it applies and
            ``cv2`` imports, else torch). The OpenCV kernel (``pip install "torch-backswap[fast]"``) takes uint8 images with at most
            3 channels on the CPU, ``harmonize=0``; its tolerance is in the module notes. ``"cv2"`` raises where it
            does not apply.

    Returns:
        ``(B, C, H, W)`` tensor of the images' dtype and device.

    Only the foreground's bounding box is converted to float and only the destination bounding box is
    resampled and blended; the rest of each output is the background, copied once as bytes. Matches
    :func:`composite_reference` up to float rounding (at most 1 grey level for uint8; see the module notes).
    """
    matrices = _prepare(images, alpha, backgrounds, params)
    b, c, h, w = images.shape
    out_dtype = images.dtype
    dtype = _compute_dtype(images)
    to255 = out_dtype == torch.uint8
    cv2 = _pick_backend(backend, images, harmonize, mode)
    if b == 0:
        return images.clone()

    # output frame = background in the images' dtype
    if backgrounds.dtype == out_dtype and inplace and backgrounds.is_contiguous():
        out = backgrounds
    elif backgrounds.dtype == out_dtype:
        out = backgrounds.contiguous().clone() if backgrounds.is_contiguous() else backgrounds.contiguous()
    else:
        out = _from_compute(_to_compute(backgrounds, dtype, as_uint8_scale=to255), out_dtype).contiguous()

    if boxes is None:
        boxes = mask_bboxes(alpha)
    boxes, valid = boxes
    if not bool(valid.any()):
        return images.clone()

    strategy = path
    if cv2 is not None:
        if strategy not in ("auto", "loop", "batched"):
            raise ValueError(f"path must be 'auto', 'loop' or 'batched', got {path!r}")
        _paste_cv2(cv2, images, alpha, out, _loop_windows(boxes, valid, matrices, h, w), mode)
        strategy = None
    if strategy == "auto":
        strategy = "loop" if images.device.type == "cpu" else "batched"
    if strategy == "loop":
        # windows in plain Python: a handful of scalar ops per sample instead of ~60 small tensor ops per call
        _paste_loop(images, alpha, out, _loop_windows(boxes, valid, matrices, h, w), dtype, to255, harmonize, mode)
    elif strategy == "batched":
        sel, windows = _batched_windows(boxes, valid, matrices, h, w)
        if bool(sel.any()):
            _paste_batched(images, alpha, out, matrices, sel, windows, dtype, to255, harmonize, mode)
    elif strategy is not None:
        raise ValueError(f"path must be 'auto', 'loop' or 'batched', got {path!r}")
    if not bool(valid.all()):  # empty masks: those rows are the images, copied row by row (no full-batch where)
        empty = (~valid).nonzero().flatten()
        out.index_copy_(0, empty, images.index_select(0, empty))
    return out


def _batched_windows(boxes: Tensor, valid: Tensor, matrices: Tensor, h: int, w: int) -> tuple[Tensor, tuple]:
    """Source and destination windows of every sample as ``(B,)`` int64 tensors, and which samples paste.

    Source window: the object's box grown by 1 px (bilinear support), clipped to the frame. Destination
    window: the transformed grown box, rounded outwards and clipped; a sample pastes when its mask is
    non-empty and the destination box touches the frame.
    """
    grown = boxes.to(torch.float32) + torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device)
    mins, maxs = _transform_corners(matrices, grown)
    dx0 = mins[:, 0].floor().clamp(0, w - 1).long()
    dy0 = mins[:, 1].floor().clamp(0, h - 1).long()
    dx1 = maxs[:, 0].ceil().clamp(0, w - 1).long()
    dy1 = maxs[:, 1].ceil().clamp(0, h - 1).long()
    on_frame = valid & (maxs[:, 0] >= 0) & (maxs[:, 1] >= 0) & (mins[:, 0] <= w - 1) & (mins[:, 1] <= h - 1)
    sx0 = (boxes[:, 0] - 1).clamp(min=0)
    sy0 = (boxes[:, 1] - 1).clamp(min=0)
    sx1 = (boxes[:, 2] + 1).clamp(max=w - 1)
    sy1 = (boxes[:, 3] + 1).clamp(max=h - 1)
    return on_frame, (sx0, sy0, sx1, sy1, dx0, dy0, dx1, dy1)


#: Batches up to this size get their windows sample by sample (the vectorised route's per-call cost outweighs it).
_SCALAR_WINDOWS = 24


def _loop_windows(boxes: Tensor, valid: Tensor, matrices: Tensor, h: int, w: int) -> list[tuple]:
    """The windows of :func:`_batched_windows` for the samples that paste, as plain Python (CPU loop paths).

    Returns ``[(i, (sx0, sy0, sx1, sy1, dx0, dy0, dx1, dy1), ((ia, ib, ic), (id, ie, if)))]``: the sample
    index, its windows and its inverse (destination → source) matrix in float64: those of :func:`_batched_windows`
    and :func:`_affine_inverse`. A batch takes that vectorised route; a few samples (where its per-call cost
    outweighs the vector speed) replay the same float32 / float64 arithmetic sample by sample (both tested equal).
    """
    route = _windows_scalar if boxes.shape[0] <= _SCALAR_WINDOWS else _windows_batched
    return route(boxes, valid, matrices, h, w)


def _windows_batched(boxes: Tensor, valid: Tensor, matrices: Tensor, h: int, w: int) -> list[tuple]:
    """:func:`_loop_windows` for a batch: the vectorised :func:`_batched_windows` and :func:`_affine_inverse` of the
    samples that paste, as Python rows."""
    m = matrices.float()
    sel, windows = _batched_windows(boxes, valid, m, h, w)
    idx = sel.nonzero().flatten()
    inverse = _affine_inverse(m.double().index_select(0, idx)).flatten(1).tolist()
    rows = torch.stack(windows, 1).index_select(0, idx).tolist()
    return [(i, tuple(win), (tuple(inv[:3]), tuple(inv[3:]))) for i, win, inv in zip(idx.tolist(), rows, inverse)]


def _windows_scalar(boxes: Tensor, valid: Tensor, matrices: Tensor, h: int, w: int) -> list[tuple]:
    """:func:`_loop_windows` sample by sample on ``numpy.float32`` scalars (the cheaper route for a few samples)."""
    import numpy as np

    f32 = np.float32
    rows = []
    for i, ((x0, y0, x1, y1), ok, m) in enumerate(zip(boxes.tolist(), valid.tolist(), matrices.tolist())):
        if not ok:
            continue
        (a, b, c), (d, e, f) = m
        m32 = [f32(v) for v in (a, b, c, d, e, f)]
        gx0, gy0, gx1, gy1 = f32(x0) + f32(-1.0), f32(y0) + f32(-1.0), f32(x1) + f32(1.0), f32(y1) + f32(1.0)
        corners = ((gx0, gy0), (gx1, gy0), (gx0, gy1), (gx1, gy1))
        tx = [m32[0] * cx + m32[1] * cy + m32[2] for cx, cy in corners]
        ty = [m32[3] * cx + m32[4] * cy + m32[5] for cx, cy in corners]
        minx, maxx, miny, maxy = min(tx), max(tx), min(ty), max(ty)
        if maxx < 0 or maxy < 0 or minx > w - 1 or miny > h - 1:
            continue  # the object lands outside the frame: nothing to paste
        clip = lambda v, hi: int(min(max(v, 0), hi))  # noqa: E731
        windows = (max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w - 1), min(y1 + 1, h - 1),
                   clip(math.floor(minx), w - 1), clip(math.floor(miny), h - 1),
                   clip(math.ceil(maxx), w - 1), clip(math.ceil(maxy), h - 1))
        det = a * e - b * d
        if abs(det) < 1e-12:
            raise ValueError("affine matrices must be invertible (a sample has scale 0)")
        ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
        rows.append((i, windows, ((ia, ib, -(ia * c + ib * f)), (id_, ie, -(id_ * c + ie * f)))))
    return rows


def _paste_batched(images, alpha, out, matrices, sel, windows, dtype, to255, harmonize, mode) -> None:
    """One batched gather / grid_sample / scatter over the largest window of the batch (GPU-friendly)."""
    sx0, sy0, sx1, sy1, dx0, dy0, dx1, dy1 = windows
    b, c, h, w = images.shape
    device = images.device
    out_dtype = out.dtype
    # window sizes: the largest box in the batch (>= 2 so align_corners normalisation is defined)
    min_side = lambda n: min(2, n)  # noqa: E731
    ws = max(int((sx1 - sx0 + 1)[sel].max()), min_side(w))
    hs = max(int((sy1 - sy0 + 1)[sel].max()), min_side(h))
    wd = max(int((dx1 - dx0 + 1)[sel].max()), min_side(w))
    hd = max(int((dy1 - dy0 + 1)[sel].max()), min_side(h))
    osx = sx0.clamp(max=w - ws)
    osy = sy0.clamp(max=h - hs)
    odx = dx0.clamp(max=w - wd)
    ody = dy0.clamp(max=h - hd)

    # gather the source window (uint8 stays uint8 until here) and premultiply
    src_idx = _window_index(osx, osy, (hs, ws), w)
    src = images.reshape(b, c, h * w).gather(2, src_idx.expand(b, c, hs * ws))
    a_src = alpha.reshape(b, 1, h * w).gather(2, src_idx)
    a_src = _alpha_float(a_src, dtype)
    a_src = torch.where(sel[:, None, None], a_src, torch.zeros((), dtype=dtype, device=device))
    src = _to_compute(src, dtype, as_uint8_scale=to255) * a_src
    stacked = torch.cat([src, a_src], dim=1).view(b, c + 1, hs, ws)

    # sampling grid: destination window pixel (j, i) -> source pixel -> normalised source-window coords
    inv = _affine_inverse(matrices.to(dtype))
    # source pixel = inv @ (odx + j, ody + i, 1) - (osx, osy)
    sxn = 2.0 / (ws - 1)
    syn = 2.0 / (hs - 1)
    ox_f = odx.to(dtype)
    oy_f = ody.to(dtype)
    cx = inv[:, 0, 0] * ox_f + inv[:, 0, 1] * oy_f + inv[:, 0, 2] - osx.to(dtype)
    cy = inv[:, 1, 0] * ox_f + inv[:, 1, 1] * oy_f + inv[:, 1, 2] - osy.to(dtype)
    jj = torch.arange(wd, device=device, dtype=dtype).view(1, 1, wd)
    ii = torch.arange(hd, device=device, dtype=dtype).view(1, hd, 1)
    col = lambda v: v.view(b, 1, 1)  # noqa: E731
    gx = (col(inv[:, 0, 0] * sxn) * jj + col(inv[:, 0, 1] * sxn) * ii) + col(cx * sxn - 1.0)
    gy = (col(inv[:, 1, 0] * syn) * jj + col(inv[:, 1, 1] * syn) * ii) + col(cy * syn - 1.0)
    grid = torch.stack([gx, gy], dim=-1)
    warped = F.grid_sample(stacked, grid, mode=mode, padding_mode="zeros", align_corners=True)
    premult, a = warped[:, :c].reshape(b, c, hd * wd), warped[:, c:].reshape(b, 1, hd * wd)

    # fused blend inside the destination window only
    dst_idx = _window_index(odx, ody, (hd, wd), w).expand(b, c, hd * wd)
    flat = out.view(b, c, h * w)
    bg = _to_compute(flat.gather(2, dst_idx), dtype, as_uint8_scale=to255)
    if harmonize:
        premult = _harmonize(premult.view(b, c, hd, wd), a.view(b, 1, hd, wd), bg.view(b, c, hd, wd), float(harmonize))
        premult = premult.reshape(b, c, hd * wd)
    blended = _from_compute(bg - a * bg + premult, out_dtype)
    flat.scatter_(2, dst_idx, blended)


def _window_grids(rows, dtype):
    """Per sample of :func:`_loop_windows`' rows: ``(i, source window, (tx, ty) or None, destination window, grid)``.

    ``grid`` is the ``(1, hd, wd, 2)`` ``grid_sample`` grid of the destination window (source coordinates normalised
    to the source window), or ``None`` for a whole-pixel shift ``(tx, ty)`` (no rotation, scale 1: nothing to
    resample). The grids of all samples come from two small batched tables, one ``addmm`` per sample.
    """
    prepared = []
    for i, (sx0, sy0, sx1, sy1, dx0, dy0, dx1, dy1), m in rows:
        (ia, ib, ic), (id_, ie, if_) = m
        shift = _integer_shift(ia, ib, ic, id_, ie, if_)
        if shift is not None:
            prepared.append((i, None, shift, (dx0, dy0, dx1, dy1), None))
            continue
        # keep windows >= 2 px so align_corners normalisation is defined
        if sx1 == sx0:
            sx0, sx1 = (sx0 - 1, sx1) if sx0 > 0 else (sx0, sx1 + 1)
        if sy1 == sy0:
            sy0, sy1 = (sy0 - 1, sy1) if sy0 > 0 else (sy0, sy1 + 1)
        sxn, syn = 2.0 / (sx1 - sx0), 2.0 / (sy1 - sy0)
        cx = ia * dx0 + ib * dy0 + ic - sx0
        cy = id_ * dx0 + ie * dy0 + if_ - sy0
        coef = (ia * sxn, id_ * syn, ib * sxn, ie * syn, cx * sxn - 1.0, cy * syn - 1.0)
        prepared.append((i, (sx0, sy0, sx1, sy1), None, (dx0, dy0, dx1, dy1), coef))
    coefs = [p[4] for p in prepared if p[4] is not None]
    if coefs:
        # grid[k, y, x] = rows[k, y] + cols[k, x]: source coordinates normalised to the source window
        table = torch.tensor(coefs, dtype=dtype)
        wmax = max(p[3][2] - p[3][0] + 1 for p in prepared if p[4] is not None)
        hmax = max(p[3][3] - p[3][1] + 1 for p in prepared if p[4] is not None)
        cols = torch.arange(wmax, dtype=dtype).view(1, wmax, 1) * table[:, None, 0:2]
        rows_t = torch.addcmul(table[:, None, 4:6], torch.arange(hmax, dtype=dtype).view(1, hmax, 1), table[:, None, 2:4])
        # spread[k', 2x + k] = (k == k'): rows @ spread repeats each row's (x, y) along the row, so one addmm writes
        # the interleaved grid (products by 1 and 0 and sums with 0 are exact: the same values as rows + cols)
        spread = torch.eye(2, dtype=dtype).repeat(1, wmax)
        cols = cols.reshape(cols.shape[0], 1, 2 * wmax)
    k = 0
    for i, src, shift, dst, coef in prepared:
        grid = None
        if shift is None:
            hd, wd = dst[3] - dst[1] + 1, dst[2] - dst[0] + 1
            grid = torch.addmm(cols[k, :, : 2 * wd], rows_t[k, :hd], spread[:, : 2 * wd]).view(1, hd, wd, 2)
            k += 1
        yield i, src, shift, dst, grid


def _paste_loop(images, alpha, out, rows, dtype, to255, harmonize, mode) -> None:
    """Per-sample exact windows with views only (no index tensors, no padding to the batch maximum).

    On CPU this moves the fewest bytes: each sample reads its own source box (uint8 stays uint8 until it is
    copied into the small float buffer) and resamples / blends exactly its own destination box, writing into
    ``out`` through a view. The image and its alpha are warped together (one 4-channel ``grid_sample``) on the
    grids of :func:`_window_grids`. A pure integer shift (no rotation, scale 1) is not resampled at all: the
    shifted box is blended directly.
    """
    c = images.shape[1]
    for i, src, shift, (dx0, dy0, dx1, dy1), grid in _window_grids(rows, dtype):
        region = out[i, :, dy0 : dy1 + 1, dx0 : dx1 + 1]
        if shift is not None:  # integer shift: the destination box is the source box moved, no resampling
            tx, ty = shift
            moved = _source_premultiplied(images, alpha, i, (dx0 - tx, dy0 - ty, dx1 - tx, dy1 - ty), dtype, to255)
            premult, a = moved[:c], moved[c:]
        else:
            buf = _source_premultiplied(images, alpha, i, src, dtype, to255)[None]
            warped = F.grid_sample(buf, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
            premult, a = warped[:c], warped[c:]
        bg = region.to(dtype)
        if harmonize:
            premult = _harmonize(premult, a, bg, float(harmonize))
        res = torch.addcmul(premult, bg, 1.0 - a)
        if out.dtype == torch.uint8:  # round half up straight into the frame (copy_ truncates like .to(uint8))
            # without harmonisation res is a convex mix of 0..255 values: it can leave [0, 255] by float rounding
            # only (|error| << 0.5), which the truncation absorbs, so the clamp pass is needed with harmonize only
            # (through int16: float -> int16 truncates like float -> uint8 on 0..255.5, and is vectorised, ~3x faster)
            region.copy_((res.clamp_(0.0, 255.0) if harmonize else res).add_(0.5).to(torch.int16))
        else:
            region.copy_(_from_compute(res, out.dtype))


def _integer_shift(ia, ib, ic, id_, ie, if_) -> tuple[int, int] | None:
    """``(tx, ty)`` when the inverse matrix is a whole-pixel shift (no rotation, scale 1), else ``None``."""
    if ia == 1.0 and ie == 1.0 and ib == 0.0 and id_ == 0.0 and float(ic).is_integer() and float(if_).is_integer():
        return -int(ic), -int(if_)
    return None


def _source_premultiplied(images, alpha, i, box, dtype, to255) -> Tensor:
    """``(C + 1, h, w)``: ``rgb * a`` and ``a`` of sample ``i`` in the inclusive box ``(x0, y0, x1, y1)``, zero
    outside the frame."""
    c, h, w = images.shape[1:]
    x0, y0, x1, y1 = box
    buf = torch.zeros(c + 1, y1 - y0 + 1, x1 - x0 + 1, dtype=dtype) if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h else \
        torch.empty(c + 1, y1 - y0 + 1, x1 - x0 + 1, dtype=dtype)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if cx0 <= cx1 and cy0 <= cy1:
        view = buf[:, cy0 - y0 : cy1 - y0 + 1, cx0 - x0 : cx1 - x0 + 1]
        a_src = view[c:]
        a_src.copy_(alpha[i, :, cy0 : cy1 + 1, cx0 : cx1 + 1])
        if alpha.dtype == torch.uint8:
            a_src.div_(255.0)
        elif alpha.dtype != torch.bool:
            a_src.clamp_(0.0, 1.0)
        fg = view[:c]
        fg.copy_(images[i, :, cy0 : cy1 + 1, cx0 : cx1 + 1])
        if not to255 and images.dtype == torch.uint8:
            fg.div_(255.0)
        fg.mul_(a_src)
    return buf


# --------------------------------------------------------------------------------------------------
# the OpenCV uint8 kernel (optional: ``pip install "torch-backswap[fast]"``)
# --------------------------------------------------------------------------------------------------

_BACKENDS = ("auto", "torch", "cv2")


def _pick_backend(backend: str, images: Tensor, harmonize: float, mode: str):
    """``cv2`` when :func:`composite` runs the OpenCV kernel for these inputs, ``None`` for the torch kernels."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _BACKENDS))}, got {backend!r}")
    if backend == "torch":
        return None
    fits = (images.dtype == torch.uint8 and images.device.type == "cpu" and images.shape[1] <= 3 and not harmonize
            and mode in ("bilinear", "nearest"))
    if backend == "auto":
        return _opencv() if fits else None
    if not fits:
        raise ValueError("backend='cv2' needs uint8 images with at most 3 channels on the CPU and harmonize=0, got "
                         f"{images.dtype} images with {images.shape[1]} channel(s) on {images.device}, "
                         f"harmonize={harmonize!r}, mode={mode!r}")
    cv2 = _opencv()
    if cv2 is None:
        raise ImportError("backend='cv2' needs OpenCV: pip install \"torch-backswap[fast]\" (opencv-python-headless)")
    return cv2


def _paste_cv2(cv2, images, alpha, out, rows, mode) -> None:
    """The uint8 kernel on OpenCV, per sample: premultiply the source box (``rgb * a / 255``, rounded), one 4-channel
    ``cv2.warpAffine`` of ``(premultiplied rgb, a)`` onto the destination box (zero outside the source box), then
    ``out = round(bg * (255 - a) / 255) + premultiplied`` (saturated) written through views of ``out``.

    OpenCV resamples in fixed point (source positions to 1/32 pixel, 15-bit weights) and keeps the moved alpha in
    uint8; that is where it departs from :func:`composite_reference` (module notes). Runs on as many OpenCV threads
    as torch has intra-op threads.
    """
    import numpy as np

    c = images.shape[1]
    x, o = images.numpy(), out.numpy()
    a_np = alpha.view(torch.uint8).numpy() if alpha.dtype == torch.bool else alpha.numpy() \
        if alpha.dtype == torch.uint8 else None
    flags = (cv2.INTER_NEAREST if mode == "nearest" else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    scale = 1.0 / 255.0
    threads, previous = torch.get_num_threads(), cv2.getNumThreads()
    if threads != previous:
        cv2.setNumThreads(threads)
    try:
        for i, (sx0, sy0, sx1, sy1, dx0, dy0, dx1, dy1), ((ia, ib, ic), (id_, ie, if_)) in rows:
            if a_np is None:  # float alpha: rounded to uint8 in the box only
                a = alpha[i, 0, sy0 : sy1 + 1, sx0 : sx1 + 1].clamp(0.0, 1.0).mul(255.0).add_(0.5).to(torch.uint8).numpy()
            elif alpha.dtype == torch.bool:
                a = a_np[i, 0, sy0 : sy1 + 1, sx0 : sx1 + 1] * np.uint8(255)
            else:
                a = a_np[i, 0, sy0 : sy1 + 1, sx0 : sx1 + 1].copy()
            planes = [cv2.multiply(x[i, k, sy0 : sy1 + 1, sx0 : sx1 + 1], a, scale=scale) for k in range(c)]
            # destination box pixel -> source box pixel: the inverse matrix, moved to both boxes' origins
            m = np.array([[ia, ib, ia * dx0 + ib * dy0 + ic - sx0], [id_, ie, id_ * dx0 + ie * dy0 + if_ - sy0]])
            wd, hd = dx1 - dx0 + 1, dy1 - dy0 + 1
            warped = cv2.warpAffine(cv2.merge(planes + [a]), m, (wd, hd), flags=flags,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            moved = [np.empty((hd, wd), np.uint8) for _ in range(c + 1)]
            cv2.split(warped, moved)
            keep = cv2.bitwise_not(moved[c])  # 255 - a
            for k in range(c):
                region = o[i, k, dy0 : dy1 + 1, dx0 : dx1 + 1]
                cv2.add(cv2.multiply(region, keep, scale=scale), moved[k], dst=region)
    finally:
        if threads != previous:
            cv2.setNumThreads(previous)
