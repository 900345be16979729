"""Image and alpha conversions, one helper each: PIL ⇄ tensor, gray/RGBA ⇄ RGB, mask → alpha.

Conventions: images are ``(B, C, H, W)`` uint8 (``0..255``) or float (``[0, 1]``), ``C`` in 1 / 3 / 4; an
*alpha* is ``(B, 1, H, W)`` in one of three compact forms that the compositing kernels read directly:
``bool``, ``uint8`` read as ``value / 255``, or float in ``[0, 1]``.
"""

from __future__ import annotations

import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ._checks import check_images

__all__ = [
    "to_uint8_rgb",
    "resize_uint8",
    "float_alpha",
    "from_rgb",
    "mask_to_alpha",
    "pil_to_tensor",
    "resize_alpha",
    "tensor_to_pil",
    "to_rgb",
]

_DIRECT_PIL_MODES = ("RGB", "L", "RGBA")


def pil_to_tensor(image: PIL.Image.Image) -> Tensor:
    """A PIL image → uint8 ``(C, H, W)`` with C = 3 (RGB), 1 (``"L"``) or 4 (RGBA); other modes are converted
    to RGB (or RGBA when they carry transparency)."""
    if image.mode not in _DIRECT_PIL_MODES:
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return TF.pil_to_tensor(image)


def tensor_to_pil(image: Tensor, mode: str) -> PIL.Image.Image:
    """uint8 ``(C, H, W)`` → a PIL image in ``mode`` (the mode the input had)."""
    pil = TF.to_pil_image(image)
    return pil if pil.mode == mode else pil.convert(mode)


def to_rgb(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` with C in 1/3/4 → ``(B, 3, H, W)``: gray repeated, the alpha channel of RGBA dropped."""
    c = images.shape[1]
    if c == 1:
        return images.expand(-1, 3, -1, -1)
    if c == 4:
        return images[:, :3]
    return images


def to_unit_rgb(images: Tensor, device: torch.device | str, value_range: tuple[float, float] | None) -> Tensor:
    """Checked ``(B, C, H, W)`` images → contiguous RGB on ``device``; floats mapped from ``value_range`` to
    ``[0, 1]`` (uint8 and ``value_range=None`` stay as they are)."""
    rgb = to_rgb(images).to(device)
    if value_range is not None and rgb.dtype.is_floating_point:
        lo, hi = value_range
        rgb = (rgb - lo) / (hi - lo)
    return rgb.contiguous()


def from_unit(images: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    """The inverse of :func:`to_unit_rgb`'s value mapping: float ``[0, 1]`` images back to ``value_range``."""
    if value_range is None or not images.dtype.is_floating_point:
        return images
    lo, hi = value_range
    return images * (hi - lo) + lo


def from_rgb(rgb: Tensor, like: Tensor, changed: Tensor) -> Tensor:
    """Back to ``like``'s channels after a swap; samples not ``changed`` are returned exactly as ``like``.

    Args:
        rgb: ``(B, 3, H, W)`` swapped images, ``like``'s dtype.
        like: the ``(B, C, H, W)`` input (C in 1/3/4).
        changed: ``(B,)`` bool, which samples were swapped.

    Gray images come back as luma (``rgb_to_grayscale``); RGBA images get an opaque alpha channel where
    swapped (the new background is opaque) and keep their own alpha where not.
    """
    c = like.shape[1]
    if c == 1:
        out = TF.rgb_to_grayscale(rgb, num_output_channels=1)
    elif c == 4:
        opaque = torch.full_like(like[:, 3:], 255 if like.dtype == torch.uint8 else 1.0)
        out = torch.cat([rgb, opaque], dim=1)
    else:
        out = rgb
    if bool(changed.all()):
        return out
    # the rows not changed are the input's bytes: copied row by row (a full-batch where costs ~20 copies)
    if out is rgb and rgb.untyped_storage().data_ptr() == like.untyped_storage().data_ptr():
        out = out.clone()  # never write into the caller's input
    keep = (~changed.to(out.device)).nonzero().flatten()
    return out.index_copy_(0, keep, like.index_select(0, keep))


def mask_to_alpha(mask: Tensor) -> Tensor:
    """A foreground mask (bool, uint8 ``0/1`` or ``0..255``, integer, float in ``[0, 1]``) → a compact alpha.

    bool stays bool, uint8 ``0..255`` stays uint8 (read as ``value / 255``), uint8 ``0/1`` and other integer
    masks become bool (``> 0``), floats are clamped to ``[0, 1]`` (NaN / inf raise ``ValueError``).
    """
    m = mask.as_subclass(Tensor)
    if m.dtype == torch.bool:
        return m
    if m.dtype == torch.uint8:
        return m if m.numel() > 0 and int(m.amax()) > 1 else m > 0
    if m.dtype.is_floating_point:
        if not bool(torch.isfinite(m).all()):
            raise ValueError("the object alpha must be finite, got NaN or inf values")
        return m.clamp(0.0, 1.0)
    return m > 0


def float_alpha(alpha: Tensor) -> Tensor:
    """A compact alpha (see :func:`mask_to_alpha`) → float32 in ``[0, 1]``."""
    if alpha.dtype == torch.uint8:
        return alpha.float() / 255.0
    return alpha.float()


def resize_alpha(alpha: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, 1, h, w)`` compact alpha → float ``(B, 1, H, W)`` (bilinear); returned as is when the size matches."""
    if tuple(alpha.shape[-2:]) == tuple(size):
        return alpha
    return F.interpolate(float_alpha(alpha), size=tuple(size), mode="bilinear", align_corners=False)


def to_uint8_rgb(images: Tensor, name: str = "images", *, check_values: bool = True) -> Tensor:
    """``(B, C, H, W)`` uint8 or float in ``[0, 1]`` with C in {1, 3, 4} → uint8 ``(B, 3, H, W)``.

    Grayscale is repeated to 3 channels, the alpha channel of RGBA is dropped, floats are rounded (and clamped).
    ``check_values`` checks float values (finite, in ``[0, 1]``, see :func:`~torch_backswap._checks.check_images`);
    without it only NaN / inf raise (for internal results that may overshoot by rounding).
    """
    x = to_rgb(check_images(images, name, check_values=check_values))
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not check_values and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return (x.float() * 255.0).clamp_(0, 255).add_(0.5).to(torch.uint8)


def resize_uint8(images: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``(B, C, h, w)`` → ``(B, C, H, W)``, antialiased bilinear (returned as is when the size matches)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return TF.resize(images, list(size), antialias=True)
