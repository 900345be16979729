"""The images ``build_bank`` reads: a tensor, a sequence of images or a map-style dataset, resized to the bank's
size and served as uint8 batches (through a ``DataLoader`` with workers for a dataset), with their labels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ._image import resize_uint8, to_uint8_rgb

__all__ = ["ImageSource", "int_labels"]


def int_labels(values: Any, name: str) -> Tensor:
    """``values`` as int64 ``(N,)``; non-integer values raise ``ValueError`` naming ``name`` and them."""
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be integer class indices, got {values!r}") from err
    t = t.flatten() if t.ndim == 0 else t
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer class indices, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be integer class indices, got dtype {t.dtype}")
    if t.dtype.is_floating_point:
        bad = ~torch.isfinite(t) | (t != t.round())
        if bool(bad.any()):
            raise ValueError(f"{name} must be integer class indices, got non-integer values {t[bad][:5].tolist()}")
    t = t.to(torch.long)
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {t[t < 0][:5].tolist()}")
    return t


def item_to_tensor(item: Any) -> Tensor:
    """One image (PIL, tensor ``(C, H, W)`` or ``(H, W)``, tv_tensors.Image) → uint8 ``(3, H, W)``."""
    from PIL import Image as PILImage

    if isinstance(item, PILImage.Image):
        from torchvision.transforms.v2 import functional as TF

        item = TF.pil_to_tensor(item.convert("RGB"))
    if not isinstance(item, Tensor):
        raise TypeError(f"images must be tensors or PIL images, got {type(item).__name__}")
    t = item.as_subclass(Tensor)
    if t.ndim == 2:
        t = t[None]
    return to_uint8_rgb(t[None])[0]


def split_sample(sample: Any) -> tuple[Any, Any]:
    if isinstance(sample, dict):
        return sample.get("image", next(iter(sample.values()))), sample.get("label", sample.get("labels"))
    if isinstance(sample, (tuple, list)):
        return sample[0], (sample[1] if len(sample) > 1 else None)
    return sample, None


class ResizeCollate:
    """Collate ``image`` / ``(image, label, ...)`` / ``{"image", "label"}`` samples → uint8 ``(B, 3, H, W)``
    at ``size`` and int64 labels (``None`` when the samples carry none). Picklable for worker processes."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, batch: list) -> tuple[Tensor, Tensor | None]:
        images, labels = [], []
        for sample in batch:
            img, lab = split_sample(sample)
            images.append(resize_uint8(item_to_tensor(img)[None], self.size)[0])
            labels.append(lab)
        if any(lab is None for lab in labels):
            return torch.stack(images), None
        return torch.stack(images), int_labels([torch.as_tensor(x).item() for x in labels], "labels yielded by the dataset")


class ImageSource:
    """The images to build from: a tensor, a sequence of images or a map-style dataset."""

    def __init__(self, images: Any, labels: Any, size: tuple[int, int] | None, num_workers: int) -> None:
        self.num_workers = num_workers
        self.labels = None if labels is None else int_labels(labels, "labels")
        if isinstance(images, Tensor):
            x = images[None] if images.ndim == 3 else images
            if x.ndim != 4:
                raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
            self.tensor, self.dataset, self.n = x, None, int(x.shape[0])
            if self.labels is None:
                raise ValueError("build_bank needs labels for a tensor of images: pass labels=, got labels=None")
            self.size = size or (int(x.shape[-2]), int(x.shape[-1]))
        else:
            if not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
                raise TypeError(
                    f"images must be a tensor, a sequence or a map-style dataset, got {type(images).__name__}"
                )
            self.tensor, self.dataset, self.n = None, images, len(images)
            if size is None and self.n:
                size = tuple(item_to_tensor(split_sample(images[0])[0]).shape[-2:])
            self.size = size
        if self.n == 0:
            raise ValueError("build_bank got no images")
        if self.labels is not None and self.labels.shape[0] != self.n:
            raise ValueError(f"labels has {self.labels.shape[0]} entries for {self.n} images")

    def batches(self, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """``(start, uint8 images (b, 3, H, W) at size, labels or None)`` for each ``(start, stop)`` range."""
        if self.tensor is not None:
            for s, e in ranges:
                x = resize_uint8(to_uint8_rgb(self.tensor[s:e]), self.size)
                yield s, x, None if self.labels is None else self.labels[s:e]
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[list(range(s, e)) for s, e in ranges], num_workers=self.num_workers,
            collate_fn=ResizeCollate(self.size),
        )
        for (s, e), (x, lab) in zip(ranges, loader):
            yield s, x, lab if self.labels is None else self.labels[s:e]
