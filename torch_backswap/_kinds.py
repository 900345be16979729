"""Per-kind kernels of :class:`~torch_backswap.transform.BackgroundSwap`: each input kind of a sample (image,
object alpha, other masks, boxes) to and from the batched swap. Small pure functions, no state."""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ._checks import check_images, describe
from .alpha import ObjectAlpha
from ._image import from_rgb, mask_to_alpha, pil_to_tensor, resize_alpha, tensor_to_pil
from .functional import SwapRecord, move_boxes, move_masks

__all__ = ["alpha_to_batch", "batch_to_image", "boxes_like", "image_to_batch", "is_image", "mask_like", "object_rows",
           "swap_inputs"]


def image_to_batch(image: Any, value_range: tuple[float, float] | None, check_values: bool = True
                   ) -> tuple[Tensor, bool]:
    """A PIL image, ``(H, W)`` / ``(C, H, W)`` / ``(B, C, H, W)`` tensor → checked ``(B, C, H, W)`` and whether
    it was a single image (``check_values=False``: the values were checked already, only the structure is)."""
    if isinstance(image, PIL.Image.Image):
        return pil_to_tensor(image)[None], True
    t = image.as_subclass(Tensor)
    if t.ndim == 2:
        t = t[None]
    single = t.ndim == 3
    x = check_images(t[None] if single else t, "image", value_range=value_range, min_size=2, check_values=check_values)
    return x, single


def alpha_to_batch(alpha: Any, b: int, size: tuple[int, int], single: bool, name: str = "ObjectAlpha",
                   resize: bool = False) -> Tensor:
    """An object alpha of a single image (``(1, H, W)`` / ``(H, W)``) or a batch (``(B, 1, H, W)`` /
    ``(B, H, W)``) → a compact ``(B, 1, H, W)`` alpha at ``size``, the image's.

    Its ``(H, W)`` must be ``size`` (``ValueError`` otherwise: an ``ObjectAlpha`` of another size is a bug upstream,
    and it comes back moved at its own shape); with ``resize`` (``swap_batch``'s ``alphas``, never returned) it may
    be another resolution of the same aspect ratio (within a pixel) and is resized."""
    if not isinstance(alpha, Tensor):
        raise TypeError(f"{name} must be a tensor, got {describe(alpha)}")
    a = alpha.as_subclass(Tensor)
    if single:
        a = a.reshape(1, 1, *a.shape[-2:]) if a.ndim in (2, 3) and (a.ndim == 2 or a.shape[0] == 1) else a
    elif a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] != b or a.shape[1] != 1:
        form = "(1, H, W) or (H, W)" if single else f"({b}, 1, H, W) or ({b}, H, W)"
        raise ValueError(f"{name} must be {form} for this input, got shape {tuple(alpha.shape)}")
    (h, w), (ah, aw) = size, a.shape[-2:]
    if resize and (ah, aw) != (h, w) and abs(ah * w - aw * h) <= max(h, w):
        return resize_alpha(mask_to_alpha(a), size)
    if (ah, aw) != (h, w):
        form = f"(1, {h}, {w}) or ({h}, {w})" if single else f"({b}, 1, {h}, {w}) or ({b}, {h}, {w})"
        what, never = ("aspect ratio", "stretched") if resize else ("size", "resized")
        raise ValueError(f"{name} must have the image's {what} ({h}, {w}): shape {form}, got shape "
                         f"{tuple(alpha.shape)} (it is never {never} to fit)")
    return mask_to_alpha(a)


def restore_channels(out_rgb: Tensor, x: Tensor, record: SwapRecord) -> Tensor:
    """Swapped RGB → the input's channels and device; samples not swapped are the input's bytes."""
    return from_rgb(out_rgb.to(x.device), x, record.swapped.to(x.device))


def batch_to_image(image: Any, out_rgb: Tensor, record: SwapRecord) -> Any:
    """The swapped batch back in the image's own kind (PIL mode, tensor shape, tv_tensor type); the input
    itself when nothing was swapped."""
    if not bool(record.swapped.any()):
        return image
    if isinstance(image, PIL.Image.Image):
        x = pil_to_tensor(image)[None]
        return tensor_to_pil(restore_channels(out_rgb, x, record)[0], image.mode)
    t = image.as_subclass(Tensor)
    x = t[None, None] if t.ndim == 2 else (t[None] if t.ndim == 3 else t)
    out = restore_channels(out_rgb, x, record).reshape(t.shape)
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


def mask_like(mask: tv_tensors.Mask, moved_alpha: Tensor | None, record: SwapRecord, single: bool) -> Any:
    """Another ``tv_tensors.Mask`` of the sample, moved with the object (:func:`~torch_backswap.functional.move_masks`);
    ``moved_alpha`` is the object's alpha after the swap (the ``ObjectAlpha``'s, or the segmenter's cut-out's)."""
    if not bool(record.swapped.any()):
        return mask
    if moved_alpha is None:  # make_params moves the ObjectAlpha or the segmenter's cut-out whenever a mask swaps
        raise RuntimeError("BackgroundSwap: a tv_tensors.Mask of a swapped sample has no moved object alpha")
    m = mask.as_subclass(Tensor)
    batched = m.reshape(1, *m.shape) if single else m
    if batched.shape[-2:] != moved_alpha.shape[-2:]:
        raise ValueError(
            f"tv_tensors.Mask of shape {tuple(mask.shape)} does not match the image size {tuple(moved_alpha.shape[-2:])}"
        )
    return tv_tensors.wrap(move_masks(batched, moved_alpha, record).reshape(m.shape), like=mask)


def boxes_like(boxes: tv_tensors.BoundingBoxes, record: SwapRecord) -> Any:
    """The single image's ``BoundingBoxes`` moved with the object and clamped, in their own format and dtype."""
    if not bool(record.swapped[0]):
        return boxes
    xyxy = TF.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
    moved = move_boxes(xyxy.as_subclass(Tensor), record.matrices[0].cpu(), tuple(boxes.canvas_size))
    moved = tv_tensors.wrap(moved.to(boxes.dtype if boxes.dtype.is_floating_point else torch.float32), like=xyxy)
    out = TF.convert_bounding_box_format(moved, new_format=boxes.format)
    if not boxes.dtype.is_floating_point:
        out = tv_tensors.wrap(out.as_subclass(Tensor).round().to(boxes.dtype), like=boxes)
    return out


def is_image(item: Any) -> bool:
    """Whether a sample item is an image the swap takes (PIL, ``tv_tensors.Image`` or a plain tensor)."""
    return isinstance(item, (PIL.Image.Image, tv_tensors.Image)) or (
        isinstance(item, Tensor) and not isinstance(item, tv_tensors.TVTensor)
    )


def swap_inputs(flat_inputs: list[Any], value_range: tuple[float, float] | None
                ) -> tuple[Any, Tensor, bool, Tensor | None]:
    """The items of a flattened sample the swap works on: ``(image, x, single, given)`` — the first image-like
    item, it as a checked ``(B, C, H, W)`` batch, whether it was a single image, and the sample's
    :class:`~torch_backswap.alpha.ObjectAlpha` as a compact ``(B, 1, H, W)`` alpha (``None`` when it has none).
    Raises ``TypeError`` without an image (naming a lone ``Video``), ``ValueError`` for two ``ObjectAlpha`` items
    or boxes beside a batch of images."""
    images = [x for x in flat_inputs if is_image(x)]
    if not images and any(isinstance(x, tv_tensors.Video) for x in flat_inputs):
        raise TypeError(
            "BackgroundSwap swaps images, and this sample's only image-like item is a tv_tensors.Video; swap its "
            "frames as a batch of images, e.g. swap(tv_tensors.Image(video.flatten(0, -4)))"
        )
    if not images:
        raise TypeError(
            "BackgroundSwap found no image in its input; pass a PIL image, a (C, H, W) / (B, C, H, W) tensor or "
            f"a tv_tensors.Image (got {[type(x).__name__ for x in flat_inputs]})"
        )
    image = images[0]  # the first image-like item; further images and videos pass through unchanged
    alphas = [x for x in flat_inputs if isinstance(x, ObjectAlpha)]
    if len(alphas) > 1:
        raise ValueError(f"a sample may carry one ObjectAlpha, got {len(alphas)}")
    x, single = image_to_batch(image, value_range)
    if any(isinstance(i, tv_tensors.BoundingBoxes) for i in flat_inputs) and not single:
        raise ValueError("BoundingBoxes can be moved with the object only for single images, got a batch of images")
    given = alpha_to_batch(alphas[0], x.shape[0], tuple(x.shape[-2:]), single) if alphas else None
    return image, x, single, given


def object_rows(given: Tensor | None, cut_out: Tensor | None, apply: Tensor) -> Tensor:
    """The object's alpha the other masks move with, one row per sample: the ``ObjectAlpha``'s (``given``), else
    the cut-out's (one row per applied sample, spread out to ``B`` rows; rows not swapped are never read)."""
    if given is not None:
        return given
    if cut_out.shape[0] != apply.shape[0]:
        rows = apply.nonzero().flatten().to(cut_out.device)
        cut_out = cut_out.new_zeros(apply.shape[0], *cut_out.shape[1:]).index_copy_(0, rows, cut_out)
    return cut_out
