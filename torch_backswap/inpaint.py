"""Inpainters: fill the hole an object leaves so the rest of the image becomes a complete background.

One protocol for all of them::

    fill(images: (B, 3, H, W) float in [0, 1], holes: (B, 1, H, W) bool or float (> 0.5 = hole))
        -> (B, 3, H, W) float in [0, 1]

Inpainters are plain callables (``__call__ = fill``), picklable and device-agnostic: they run on the
device of ``images``. Pixels outside the hole are always returned **exactly** as given, an image without
a hole comes back unchanged, and an image that is all hole is filled with mid-grey (0.5) — there is
nothing visible to take colours from (:class:`NoiseFill` still gives noise). ``uint8`` images are
accepted for convenience and come back as ``uint8``.

* :class:`PyramidInpainter` (default, ``"pyramid"``): batched push-pull (pyramid diffusion) — fast on CPU
  and GPU — plus, optionally, high-frequency texture copied in patches from the visible background so
  holes are not flat blurs.
* The paper's ablation fills: :class:`GrayFill` (``"gray"``), :class:`MeanFill` (``"mean"``),
  :class:`NoiseFill` (``"noise"``), :class:`ScramblePixels` (``"scramble_pixels"``),
  :class:`ScramblePatches` (``"scramble_patches"``).
* :class:`ModuleInpainter`: wraps any ``nn.Module`` / TorchScript inpainter (LaMa, AOT-GAN ports).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Inpainter",
    "PyramidInpainter",
    "GrayFill",
    "MeanFill",
    "NoiseFill",
    "ScramblePixels",
    "ScramblePatches",
    "ModuleInpainter",
    "get_inpainter",
    "INPAINTERS",
]


def _check_inputs(images: Tensor, holes: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    if not isinstance(holes, Tensor) or holes.ndim != 4 or holes.shape[1] != 1:
        raise ValueError(f"holes must be a (B, 1, H, W) tensor, got {getattr(holes, 'shape', type(holes))}")
    if holes.shape[0] != images.shape[0] or holes.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"holes shape {tuple(holes.shape)} does not match images shape {tuple(images.shape)} (need B, H, W equal)"
        )


def _hole_mask(holes: Tensor) -> Tensor:
    """Bool ``(B, 1, H, W)``: True where a pixel must be filled."""
    if holes.dtype == torch.bool:
        return holes
    if holes.dtype == torch.uint8:
        return holes > 127 if bool((holes > 1).any()) else holes > 0
    return holes > 0.5


def _make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


class Inpainter:
    """Base class: validation, dtype handling and the "known pixels stay exact" guarantee.

    Subclasses implement ``_fill(images float, hole bool, generator) -> float`` where only hole pixels
    of the result matter.
    """

    name = "base"

    def fill(self, images: Tensor, holes: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Fill ``holes`` in ``images``.

        Args:
            images: ``(B, 3, H, W)`` float in ``[0, 1]`` (or uint8).
            holes: ``(B, 1, H, W)`` bool, or float/uint8 where ``> 0.5`` (``> 127`` for 0..255) is hole.
            generator: optional CPU generator for the random fills (defaults to the inpainter's ``seed``).

        Returns:
            ``(B, 3, H, W)`` of the images' dtype; pixels outside holes are unchanged.
        """
        _check_inputs(images, holes)
        hole = _hole_mask(holes).to(images.device)
        if images.shape[0] == 0 or not bool(hole.any()):
            return images.clone()
        is_uint8 = images.dtype == torch.uint8
        x = images.float() / 255.0 if is_uint8 else images
        filled = self._fill(x, hole, _make_generator(generator, getattr(self, "seed", None)))
        if is_uint8:
            # round the fill only and take the known pixels as the original bytes: the same result as
            # rounding where(hole, fill, images / 255) (v / 255 * 255 + 0.5 truncates back to v), one
            # full-frame float pass less
            filled = (filled.to(x.dtype) * 255.0).clamp_(0, 255).add_(0.5).to(torch.uint8)
            return torch.where(hole, filled, images)
        return torch.where(hole, filled.to(x.dtype), x)

    __call__ = fill

    def _fill(self, images: Tensor, hole: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------------------------------
# simple fills (paper ablations)
# --------------------------------------------------------------------------------------------------


class GrayFill(Inpainter):
    """Constant grey (paper: 128 of 255). ``value`` is in ``[0, 1]``."""

    name = "gray"

    def __init__(self, value: float = 128.0 / 255.0) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"value must be in [0, 1], got {value!r}")
        self.value = float(value)

    def _fill(self, images, hole, generator):
        return torch.full_like(images, self.value)


def _visible_mean(images: Tensor, hole: Tensor, default: float = 0.5) -> Tensor:
    """Per-image, per-channel mean of the visible pixels ``(B, C, 1, 1)``; ``default`` if none visible."""
    known = (~hole).to(images.dtype)
    count = known.sum((-2, -1), keepdim=True)
    mean = (images * known).sum((-2, -1), keepdim=True) / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, default))


class MeanFill(Inpainter):
    """Average colour of the visible background of each image."""

    name = "mean"

    def _fill(self, images, hole, generator):
        return _visible_mean(images, hole).expand_as(images)


class NoiseFill(Inpainter):
    """Uniform random colour per image plus Gaussian pixel noise (paper: sigma = 0.25), clipped to [0, 1]."""

    name = "noise"

    def __init__(self, sigma: float = 0.25, seed: int | None = 0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = seed

    def _fill(self, images, hole, generator):
        b, c, h, w = images.shape
        colour = torch.rand(b, c, 1, 1, generator=generator)
        noise = torch.randn(b, c, h, w, generator=generator) * self.sigma
        return (colour + noise).clamp_(0.0, 1.0).to(images.device, images.dtype)


def _scramble_cells(
    images: Tensor, hole: Tensor, patch: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Replace every cell of a ``patch x patch`` grid with a random fully visible cell of the same image.

    Returns ``(result, ok)`` where ``ok`` ``(B,)`` is False for images without any fully visible cell.
    """
    b, c, h, w = images.shape
    ph, pw = -h % patch, -w % patch
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    known = (~hole).to(images.dtype)
    k = F.pad(known, (0, pw, 0, ph)) if ph or pw else known
    hh, ww = x.shape[-2:]
    nh, nw = hh // patch, ww // patch
    if patch == 1:
        cells = x.reshape(b, c, hh * ww)
        cell_ok = k.reshape(b, hh * ww) > 0.5
    else:
        cells = None
        cell_ok = F.avg_pool2d(k, patch, stride=patch).reshape(b, -1) > 0.999
    n_cells = cell_ok.shape[1]
    counts = cell_ok.sum(1)
    cum = cell_ok.long().cumsum(1)  # (B, L)
    u = torch.rand(b, n_cells, generator=generator).to(images.device)
    target = (u * counts[:, None].to(u.dtype)).floor().long().clamp_max((counts - 1).clamp_min(0)[:, None])
    src = torch.searchsorted(cum, target + 1)  # index of the (target+1)-th visible cell
    src = src.clamp_max(n_cells - 1)
    if patch == 1:
        picked = cells.gather(2, src[:, None, :].expand(-1, cells.shape[1], -1))
        out = picked.reshape(b, c, hh, ww)
    else:
        # cells as rows of a (B * L, C * p * p) matrix, one index_select of whole rows, then back to the
        # image layout: two plain copies instead of unfold + gather + fold (same values, ~3x faster)
        rows = x.reshape(b, c, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b * n_cells, -1)
        offset = torch.arange(b, device=src.device)[:, None] * n_cells
        picked = rows.index_select(0, (src + offset).reshape(-1))
        out = picked.view(b, nh, nw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)
    return out[..., :h, :w], counts > 0


class ScramblePixels(Inpainter):
    """Each hole pixel takes a random visible pixel of the same image."""

    name = "scramble_pixels"

    def __init__(self, seed: int | None = 0) -> None:
        self.seed = seed

    def _fill(self, images, hole, generator):
        out, ok = _scramble_cells(images, hole, 1, generator)
        return torch.where(ok[:, None, None, None], out, _visible_mean(images, hole).expand_as(images))


def _default_patch(h: int, w: int) -> int:
    """Paper-like cell size: a 16 x 16 grid over the image (14 px at 224 px)."""
    return max(1, round(min(h, w) / 16))


class ScramblePatches(Inpainter):
    """Hole cells take random fully visible cells (``patch_size`` px squares) of the same image.

    ``patch_size=None`` uses a 16 x 16 grid over the image (14 px at 224², the paper's cell size).
    Images without a fully visible cell fall back to their mean visible colour.
    """

    name = "scramble_patches"

    def __init__(self, patch_size: int | None = None, seed: int | None = 0) -> None:
        if patch_size is not None and (not isinstance(patch_size, int) or patch_size < 1):
            raise ValueError(f"patch_size must be a positive int or None, got {patch_size!r}")
        self.patch_size = patch_size
        self.seed = seed

    def _fill(self, images, hole, generator):
        patch = self.patch_size or _default_patch(*images.shape[-2:])
        out, ok = _scramble_cells(images, hole, patch, generator)
        # a hole cell is replaced as a whole; cells that are partly visible keep their visible pixels
        return torch.where(ok[:, None, None, None], out, _visible_mean(images, hole).expand_as(images))


# --------------------------------------------------------------------------------------------------
# pyramid (push-pull) inpainter — the default
# --------------------------------------------------------------------------------------------------


def push_pull(
    images: Tensor, known: Tensor, *, levels: int | None = None, start_level: int = 0, merge_finest: bool = True
) -> list[Tensor]:
    """Batched push-pull interpolation of scattered known pixels.

    Push: average-pool colour·weight and weight by 2 repeatedly (holes get colour from the nearest
    known pixels at coarser scales). Pull: from the coarsest level, bilinearly upsample and keep each
    level's own colour where it is known (weight) — a smooth membrane over the hole.

    Args:
        images: ``(B, C, H, W)`` float.
        known: ``(B, 1, H, W)`` float weights in ``[0, 1]`` (1 = known).
        levels: number of pyramid levels (default: until the image is 1 px).
        start_level: return the pulled result from this level up (``0`` = full resolution).
        merge_finest: at ``start_level`` merge the level's own known colours; False returns the plain
            upsampled coarser level there (cheaper when the caller keeps known pixels itself).

    Returns:
        List of pulled images, index ``k`` = level ``k`` (``k >= start_level``; lower entries are None).
        Fully unknown images come out as mid-grey 0.5.
    """
    xs = [images * known]
    ws = [known]
    max_levels = levels if levels is not None else int(math.ceil(math.log2(max(images.shape[-2:])))) + 1
    while len(xs) < max_levels and min(xs[-1].shape[-2:]) > 1:
        xs.append(F.avg_pool2d(xs[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    top_w = ws[-1]
    colour = xs[-1] / top_w.clamp_min(1e-8)
    colour = torch.where(top_w > 1e-8, colour, torch.full_like(colour, 0.5))
    # anything still unknown at the top is filled with the image mean (or grey when nothing is known)
    tot = top_w.sum((-2, -1), keepdim=True)
    mean = xs[-1].sum((-2, -1), keepdim=True) / tot.clamp_min(1e-8)
    mean = torch.where(tot > 1e-8, mean, torch.full_like(mean, 0.5))
    colour = torch.where(top_w > 1e-8, colour, mean)
    out: list[Tensor | None] = [None] * len(xs)
    out[-1] = colour
    for k in range(len(xs) - 2, start_level - 1, -1):
        up = F.interpolate(colour, size=xs[k].shape[-2:], mode="bilinear", align_corners=False)
        if k == start_level and not merge_finest:
            out[k] = up
            break
        w = ws[k]
        own = xs[k] / w.clamp_min(1e-8)
        conf = w.clamp(0.0, 1.0)
        colour = torch.lerp(up, own, conf)
        out[k] = colour
    return out


class PyramidInpainter(Inpainter):
    """Fast batched push-pull (pyramid diffusion) fill, with optional texture (the default inpainter).

    The smooth fill is a push-pull membrane over the hole (see :func:`push_pull`). With ``texture > 0``
    the high-frequency residual of the visible background (image minus its own push-pull low-pass at
    ``1 / 2**texture_level`` resolution) is copied into the hole in ``patch_size`` cells taken from fully
    visible places, scaled by ``texture`` — so large holes keep grain (grass, water ripples) instead of
    becoming flat blurs. ``texture=0`` gives the pure smooth fill (higher PSNR, flatter look).

    Args:
        texture: strength of the copied texture (0 = off).
        texture_level: pyramid level of the low-pass separating texture from structure (1: the finest
            octave, reuses the smooth fill, nearly free; 2: two octaves, ~1.5x slower).
        patch_size: texture cell size in px (None: a 16 x 16 grid over the image).
        seed: seed of the texture cell choice (None: global RNG), so banks are reproducible.
    """

    name = "pyramid"

    def __init__(self, texture: float = 1.0, texture_level: int = 1, patch_size: int | None = None, seed: int | None = 0):
        if texture < 0:
            raise ValueError(f"texture must be >= 0, got {texture!r}")
        if texture_level < 1:
            raise ValueError(f"texture_level must be >= 1, got {texture_level!r}")
        self.texture = float(texture)
        self.texture_level = int(texture_level)
        self.patch_size = patch_size
        self.seed = seed

    def _fill(self, images, hole, generator):
        known = (~hole).to(images.dtype)
        # level 0 = the upsampled level-1 membrane; known pixels are restored by fill()
        pulled = push_pull(images, known, merge_finest=False)
        smooth = pulled[0]
        if self.texture <= 0:
            return smooth
        lvl = min(self.texture_level, len(pulled) - 1)
        if lvl == 1:
            low = smooth  # already the level-1 low-pass at full size
        else:
            low = F.interpolate(pulled[lvl], size=images.shape[-2:], mode="bilinear", align_corners=False)
        residual = (images - low).mul_(known)
        patch = self.patch_size or _default_patch(*images.shape[-2:])
        detail, ok = _scramble_cells(residual, hole, patch, generator)
        detail = detail.mul_(ok[:, None, None, None].to(detail.dtype) * self.texture)
        return detail.add_(smooth).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# learned inpainters
# --------------------------------------------------------------------------------------------------


class ModuleInpainter(Inpainter):
    """Adapter for any learned inpainter (``nn.Module``, TorchScript, or plain callable).

    The wrapped model is called as ``module(image, mask)`` (or ``module(mask, image)`` with
    ``mask_first=True``) where

    * ``image``: ``(B, 3, h, w)`` float in ``input_range`` (``(0, 1)``: LaMa ports; ``(-1, 1)``: AOT-GAN),
      with the hole set to ``hole_value`` when ``mask_image`` (AOT-GAN expects the masked image);
    * ``mask``: ``(B, 1, h, w)`` float, 1 = hole;
    * ``(h, w) = size`` when given (e.g. 512 for the paper's AOT-GAN; resized with antialiasing and back),
      else the image size;
    * it returns ``(B, 3, h, w)`` in ``input_range`` (a tuple/list/dict → its first tensor / ``"inpainted"``).

    The model runs under ``torch.no_grad()`` on the device of its parameters (inputs are moved there and
    the result back). Only hole pixels are taken from its output.
    """

    name = "module"

    def __init__(
        self,
        module: nn.Module | Callable[..., Any],
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        size: int | tuple[int, int] | None = None,
        mask_image: bool = True,
        hole_value: float = 0.0,
        mask_first: bool = False,
    ) -> None:
        if not callable(module):
            raise TypeError(f"module must be callable (nn.Module / TorchScript / function), got {type(module).__name__}")
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range!r}")
        self.module = module
        self.input_range = (lo, hi)
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.mask_image = bool(mask_image)
        self.hole_value = float(hole_value)
        self.mask_first = bool(mask_first)

    def _device(self, fallback: torch.device) -> torch.device:
        if isinstance(self.module, nn.Module):
            for p in self.module.parameters():
                return p.device
            for b in self.module.buffers():
                return b.device
        return fallback

    @torch.no_grad()
    def _fill(self, images, hole, generator):
        h, w = images.shape[-2:]
        device = self._device(images.device)
        x = images.to(device)
        m = hole.to(device, x.dtype)
        if self.mask_image:
            x = x * (1.0 - m) + self.hole_value * m
        if self.size is not None and tuple(self.size) != (h, w):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            m = (F.interpolate(m, size=self.size, mode="bilinear", align_corners=False) > 0).to(x.dtype)
        lo, hi = self.input_range
        x = x * (hi - lo) + lo
        y = self.module(m, x) if self.mask_first else self.module(x, m)
        if isinstance(y, dict):
            y = y.get("inpainted", next(iter(y.values())))
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, Tensor) or y.ndim != 4 or y.shape[1] != 3:
            raise ValueError(f"the wrapped inpainter must return a (B, 3, h, w) tensor, got {getattr(y, 'shape', type(y))}")
        y = (y.float() - lo) / (hi - lo)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return y.clamp(0.0, 1.0).to(images.device, images.dtype)

    def __repr__(self) -> str:
        return f"ModuleInpainter({type(self.module).__name__}, input_range={self.input_range}, size={self.size})"


INPAINTERS: dict[str, type[Inpainter]] = {
    "pyramid": PyramidInpainter,
    "gray": GrayFill,
    "mean": MeanFill,
    "noise": NoiseFill,
    "scramble_pixels": ScramblePixels,
    "scramble_patches": ScramblePatches,
}


def get_inpainter(name_or_obj: str | Inpainter | nn.Module | Callable | None = "pyramid", **kwargs: Any):
    """Resolve an inpainter.

    Args:
        name_or_obj: a registry name (``"pyramid"``, ``"gray"``, ``"mean"``, ``"noise"``,
            ``"scramble_pixels"``, ``"scramble_patches"``; ``None`` → ``"pyramid"``), an ``nn.Module``
            (wrapped in :class:`ModuleInpainter` with ``kwargs``), or any ``fill(images, holes)`` callable
            (returned as is).
        **kwargs: constructor arguments of the named inpainter.
    """
    if name_or_obj is None:
        name_or_obj = "pyramid"
    if isinstance(name_or_obj, str):
        key = name_or_obj.strip().lower().replace("-", "_")
        if key not in INPAINTERS:
            raise ValueError(f"unknown inpainter {name_or_obj!r}; choose one of {sorted(INPAINTERS)} or pass an object")
        return INPAINTERS[key](**kwargs)
    if isinstance(name_or_obj, Inpainter):
        return name_or_obj
    if isinstance(name_or_obj, nn.Module):
        return ModuleInpainter(name_or_obj, **kwargs)
    if callable(name_or_obj):
        return name_or_obj
    raise TypeError(f"inpainter must be a name, an nn.Module or a callable, got {type(name_or_obj).__name__}")
