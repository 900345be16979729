"""Finding a sample's labels for :class:`~torch_backswap.transform.BackgroundSwap`, the way ``v2.CutMix`` does,
and turning what was found into class indices. Pure functions, no state."""

from __future__ import annotations

from typing import Any

import PIL.Image
from torch import Tensor
from torchvision import tv_tensors

from ._checks import check_labels

__all__ = ["LABEL_KEYS", "class_indices", "default_labels_getter"]

LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def default_labels_getter(sample: Any) -> Any:
    """Find the labels of a sample the way ``v2.CutMix`` does: the value of the first key named ``label``,
    ``labels``, ``target``, ``targets`` or ``y`` (any case) of a dict sample, or, in an ``(image, ..., label, ...)``
    tuple, the first item after the image that is not a tv_tensor (``ObjectAlpha``, other masks, boxes, images) or
    a PIL image — the second item of ``(image, label)``, the third of ``(image, ObjectAlpha, label)``, the layout of
    :class:`~torch_backswap.alpha.ObjectAlphaDataset`. Returns ``None`` when there is none (or that item is a dict,
    e.g. a detection target)."""
    if isinstance(sample, dict):
        by_lower = {str(k).lower(): k for k in sample}
        for key in LABEL_KEYS:
            if key in by_lower:
                return sample[by_lower[key]]
        return None
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        for candidate in sample[1:]:
            if isinstance(candidate, (tv_tensors.TVTensor, PIL.Image.Image)):
                continue
            return None if isinstance(candidate, dict) else candidate
    return None


def class_indices(labels: Any, b: int, single: bool, strict: bool) -> Tensor | None:
    """Labels found for ``b`` images → int64 ``(b,)`` class indices (:func:`~torch_backswap._checks.check_labels`).

    A single image's ``(K,)`` vector is one soft / one-hot label. When not ``strict`` (the default getter found
    the value and nothing needs labels), a value that is no label (e.g. an ``(H, W)`` mask target) gives ``None``.
    """
    if labels is None:
        return None
    if single and isinstance(labels, Tensor) and labels.ndim == 1 and labels.numel() > 1:
        labels = labels[None]
    try:
        return check_labels(labels, b)
    except ValueError:
        if strict:
            raise
        return None
