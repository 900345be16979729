"""Paste RGBA cut-outs ("stamps") on random crops of photos — the compositing core of StampBirds.

Generic on purpose: :class:`~torch_backswap.datasets.StampBirds` uses it with bird stamps, and the
segmenter-pretraining script uses it with other (non-bird) stamps on the train-split photos.

A composite is made in two steps so that the random choices do not depend on the output size:

1. :func:`sample_layout` draws, per sample, which stamp and photo to use and the jitter as unit-free
   fractions (photo crop scale and position, stamp scale, stamp position, horizontal flip);
2. :func:`render_layout` renders a layout at a given ``image_size``.

The composite is ``round(alpha * foreground + (1 - alpha) * background)`` computed in float32, where
``alpha = stamp_alpha / 255`` after resizing the stamp (Pillow resizes RGBA with premultiplied alpha).
:func:`composite_stamps` does both steps in one call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "load_stamp_rgba",
    "CompositeLayout",
    "Composites",
    "sample_layout",
    "render_layout",
    "composite_stamps",
    "blend_uint8",
]


def load_stamp_rgba(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read a stamp image as RGBA, trimmed to the bounding box of its non-zero alpha.

    Args:
        path: image file (PNG with alpha usually; images without alpha get alpha 255 everywhere).
        max_side: if given, downscale (never upscale) so the longest side is at most this many pixels.
            Resizing uses premultiplied alpha (Pillow's RGBA resize), so edges do not get dark fringes.

    Returns:
        ``np.ndarray`` uint8 of shape ``(h, w, 4)``.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")
    bbox = rgba.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError(f"stamp {str(path)!r} is fully transparent")
    rgba = rgba.crop(bbox)
    if max_side is not None and max(rgba.size) > max_side:
        scale = max_side / max(rgba.size)
        size = (max(1, round(rgba.size[0] * scale)), max(1, round(rgba.size[1] * scale)))
        rgba = rgba.resize(size, Image.LANCZOS)
        # Downscaling can leave fully transparent rows/columns at the border: trim again.
        bbox = rgba.getchannel("A").getbbox()
        if bbox is not None:
            rgba = rgba.crop(bbox)
    return np.asarray(rgba, dtype=np.uint8).copy()


def _as_pil(image: Any, mode: str, what: str) -> Image.Image:
    """Convert a PIL image, HWC uint8 array or CHW uint8 tensor to a PIL image of ``mode``."""
    channels = len(mode)
    if isinstance(image, Image.Image):
        return image.convert(mode) if image.mode != mode else image
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != channels:
            raise ValueError(f"{what} tensors must be uint8 ({channels},H,W), got dtype {image.dtype} "
                             f"and shape {tuple(image.shape)}")
        image = image.permute(1, 2, 0).contiguous().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != channels:
            raise ValueError(f"{what} arrays must be uint8 (H,W,{channels}), got dtype {image.dtype} "
                             f"and shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image), mode)
    raise TypeError(f"{what} must be PIL images, uint8 numpy arrays or uint8 tensors, got {type(image).__name__}")


def _check_range(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    if not (low < a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} < min <= max <= {high}, got {value!r}")
    return a, b


@dataclass
class CompositeLayout:
    """Per-sample random choices of a batch of composites (all numpy arrays of length N).

    ``stamp_ids``/``photo_ids`` (int64) index the stamp and photo lists. ``crop_scale`` is the side of the
    square photo crop as a fraction of the photo's short side; ``crop_x``/``crop_y`` in [0, 1] place it
    (0 = left/top edge, 1 = right/bottom edge). ``stamp_scale`` is the stamp's longest side as a fraction
    of the output size; ``stamp_x``/``stamp_y`` in [0, 1] place the stamp fully inside the image.
    ``flip`` (bool) mirrors the stamp horizontally.
    """

    stamp_ids: np.ndarray
    photo_ids: np.ndarray
    crop_scale: np.ndarray
    crop_x: np.ndarray
    crop_y: np.ndarray
    stamp_scale: np.ndarray
    stamp_x: np.ndarray
    stamp_y: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return int(self.stamp_ids.shape[0])

    def subset(self, index: np.ndarray | slice) -> "CompositeLayout":
        return CompositeLayout(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class Composites:
    """Rendered composites. Shapes for N samples at size S:

    ``images`` uint8 (N,3,S,S); ``alpha`` float32 (N,1,S,S) in [0,1], the exact blending weight of the
    stamp; ``foregrounds`` uint8 (N,3,S,S), the stamp colour (0 where alpha is 0); ``backgrounds`` uint8
    (N,3,S,S), the photo crop before pasting; ``layout`` the :class:`CompositeLayout` rendered.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    foregrounds: torch.Tensor
    backgrounds: torch.Tensor
    layout: CompositeLayout


def sample_layout(
    stamp_ids: Sequence[int] | np.ndarray,
    photo_ids: Sequence[int] | np.ndarray,
    rng: np.random.Generator,
    *,
    stamp_scale: tuple[float, float] = (0.45, 0.8),
    crop_scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = True,
) -> CompositeLayout:
    """Draw the jitter for samples whose stamp and photo are already chosen.

    Args:
        stamp_ids, photo_ids: int sequences of equal length N.
        rng: ``numpy.random.Generator`` (the only source of randomness).
        stamp_scale: range of the stamp's longest side, as a fraction of the output size (≤ 1).
        crop_scale: range of the square crop's side, as a fraction of the photo's short side (≤ 1).
        flip: mirror stamps with probability 0.5.
    """
    stamp_ids = np.asarray(stamp_ids, dtype=np.int64)
    photo_ids = np.asarray(photo_ids, dtype=np.int64)
    if stamp_ids.ndim != 1 or stamp_ids.shape != photo_ids.shape:
        raise ValueError(f"stamp_ids and photo_ids must be 1-D of equal length, got shapes "
                         f"{stamp_ids.shape} and {photo_ids.shape}")
    s_lo, s_hi = _check_range("stamp_scale", stamp_scale, 0.0, 1.0)
    c_lo, c_hi = _check_range("crop_scale", crop_scale, 0.0, 1.0)
    n = stamp_ids.shape[0]
    # Fixed draw order keeps layouts reproducible across versions of this function's callers.
    u = rng.random((n, 7))
    return CompositeLayout(
        stamp_ids=stamp_ids,
        photo_ids=photo_ids,
        crop_scale=c_lo + (c_hi - c_lo) * u[:, 0],
        crop_x=u[:, 1],
        crop_y=u[:, 2],
        stamp_scale=s_lo + (s_hi - s_lo) * u[:, 3],
        stamp_x=u[:, 4],
        stamp_y=u[:, 5],
        flip=(u[:, 6] < 0.5) if flip else np.zeros(n, dtype=bool),
    )


def _prepare_photo(photo: Image.Image, image_size: int) -> Image.Image:
    """Downscale once so the short side is about twice the output (crops are then cheap to resize)."""
    target = max(2 * image_size, 128)
    w, h = photo.size
    if min(w, h) <= target:
        return photo
    scale = target / min(w, h)
    return photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)


def render_layout(
    stamps: Sequence[Any],
    photos: Sequence[Any],
    layout: CompositeLayout,
    image_size: int,
    *,
    progress: bool = False,
) -> Composites:
    """Render ``layout`` at ``image_size`` × ``image_size``.

    Args:
        stamps: RGBA stamps — PIL images, uint8 arrays (h,w,4) or uint8 tensors (4,h,w).
        photos: RGB photos — PIL images, uint8 arrays (H,W,3) or uint8 tensors (3,H,W).
        layout: from :func:`sample_layout`.
        image_size: output side in pixels (≥ 8).
        progress: show a tqdm bar.

    Returns:
        :class:`Composites` (uint8 images, float32 alpha, uint8 foregrounds and backgrounds).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if len(layout) and (layout.stamp_ids.min() < 0 or layout.stamp_ids.max() >= len(stamps)):
        raise ValueError(f"layout.stamp_ids must index {len(stamps)} stamps, got range "
                         f"[{layout.stamp_ids.min()}, {layout.stamp_ids.max()}]")
    if len(layout) and (layout.photo_ids.min() < 0 or layout.photo_ids.max() >= len(photos)):
        raise ValueError(f"layout.photo_ids must index {len(photos)} photos, got range "
                         f"[{layout.photo_ids.min()}, {layout.photo_ids.max()}]")
    size = image_size
    n = len(layout)
    used_photos = set(layout.photo_ids.tolist())
    used_stamps = set(layout.stamp_ids.tolist())
    photo_cache = {i: _prepare_photo(_as_pil(photos[i], "RGB", "photos"), size) for i in used_photos}
    stamp_cache = {}
    for i in used_stamps:
        st = _as_pil(stamps[i], "RGBA", "stamps")
        if max(st.size) > size:  # no stamp is drawn larger than the image: shrink once, up front
            scale = size / max(st.size)
            st = st.resize((max(1, round(st.size[0] * scale)), max(1, round(st.size[1] * scale))), Image.BILINEAR)
        stamp_cache[i] = st

    # Channels-first buffers filled per sample; the blend is done only inside each stamp's box
    # (elsewhere alpha is 0 and the image is the background).
    backgrounds = np.empty((n, 3, size, size), dtype=np.uint8)
    foregrounds = np.zeros((n, 3, size, size), dtype=np.uint8)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    alpha8 = np.zeros((n, 1, size, size), dtype=np.uint8)
    one = np.float32(1.0)

    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"compositing {size}px", unit="img")
    for k in iterator:
        photo = photo_cache[int(layout.photo_ids[k])]
        w, h = photo.size
        side = float(layout.crop_scale[k]) * min(w, h)
        x0 = float(layout.crop_x[k]) * (w - side)
        y0 = float(layout.crop_y[k]) * (h - side)
        bg = np.asarray(photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)))
        bg = bg.transpose(2, 0, 1)
        backgrounds[k] = bg
        images[k] = bg

        stamp = stamp_cache[int(layout.stamp_ids[k])]
        sw, sh = stamp.size
        longest = max(1, round(float(layout.stamp_scale[k]) * size))
        ratio = longest / max(sw, sh)
        tw, th = min(size, max(1, round(sw * ratio))), min(size, max(1, round(sh * ratio)))
        st = stamp.resize((tw, th), Image.BILINEAR) if (tw, th) != (sw, sh) else stamp
        arr = np.asarray(st).transpose(2, 0, 1)
        if layout.flip[k]:
            arr = arr[:, :, ::-1]
        x = int(round(float(layout.stamp_x[k]) * (size - tw)))
        y = int(round(float(layout.stamp_y[k]) * (size - th)))
        a8 = arr[3:4]
        fg = np.where(a8 > 0, arr[:3], 0).astype(np.uint8)
        alpha8[k, :, y:y + th, x:x + tw] = a8
        foregrounds[k, :, y:y + th, x:x + tw] = fg
        a = a8.astype(np.float32) / np.float32(255.0)
        region = bg[:, y:y + th, x:x + tw].astype(np.float32)
        mixed = a * fg.astype(np.float32) + (one - a) * region
        images[k, :, y:y + th, x:x + tw] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    alpha = torch.from_numpy(alpha8).to(torch.float32).div_(255.0)
    images = torch.from_numpy(images)
    fg_t = torch.from_numpy(foregrounds)
    bg_t = torch.from_numpy(backgrounds)
    return Composites(images=images, alpha=alpha, foregrounds=fg_t, backgrounds=bg_t, layout=layout)


def blend_uint8(foreground: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``round(alpha * foreground + (1 - alpha) * background)`` in float32, returned as uint8.

    ``foreground``/``background`` uint8 (B,3,H,W); ``alpha`` float (B,1,H,W) in [0,1].
    """
    fg = foreground.to(torch.float32)
    bg = background.to(torch.float32)
    a = alpha.to(torch.float32)
    out = a * fg + (1.0 - a) * bg
    return out.round_().clamp_(0, 255).to(torch.uint8)


def composite_stamps(
    stamps: Sequence[Any],
    photos: Sequence[Any],
    n: int,
    image_size: int = 64,
    seed: int = 0,
    *,
    stamp_scale: tuple[float, float] = (0.45, 0.8),
    crop_scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = True,
    return_details: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | Composites:
    """Paste ``n`` random stamps on random square crops of random photos (all uniform, seeded).

    Args:
        stamps: RGBA stamps — PIL images, uint8 arrays (h,w,4) (e.g. from :func:`load_stamp_rgba`) or
            uint8 tensors (4,h,w).
        photos: RGB photos — PIL images, uint8 arrays (H,W,3) or uint8 tensors (3,H,W).
        n: number of composites.
        image_size: output side S in pixels.
        seed: seeds a ``numpy.random.default_rng``; same arguments → same output.
        stamp_scale, crop_scale, flip: jitter, see :func:`sample_layout`.
        return_details: return the full :class:`Composites` instead of ``(images, alpha)``.
        progress: show a tqdm bar.

    Returns:
        ``(images uint8 (N,3,S,S), alpha float32 (N,1,S,S))``, or :class:`Composites`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if len(stamps) == 0:
        raise ValueError("stamps must not be empty, got 0 stamps")
    if len(photos) == 0:
        raise ValueError("photos must not be empty, got 0 photos")
    rng = np.random.default_rng(seed)
    stamp_ids = rng.integers(0, len(stamps), size=n)
    photo_ids = rng.integers(0, len(photos), size=n)
    layout = sample_layout(stamp_ids, photo_ids, rng, stamp_scale=stamp_scale, crop_scale=crop_scale, flip=flip)
    result = render_layout(stamps, photos, layout, image_size, progress=progress)
    if return_details:
        return result
    return result.images, result.alpha
