"""Finding a sample's labels for :class:`~torch_backswap.transform.BackgroundSwap`, the way ``v2.CutMix`` does,
and turning what was found into class indices. Pure functions, no state."""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors

from ._checks import check_choice, check_labels
from .bank import STRATEGIES

__all__ = ["LABEL_KEYS", "bank_classes_of", "check_bank_classes", "check_swap_strategy", "class_indices", "default_labels_getter", "find_labels"]

LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def default_labels_getter(sample: Any) -> Any:
    """Find the labels of a sample the way ``v2.CutMix`` does: the value of the first key named ``label``,
    ``labels``, ``target``, ``targets`` or ``y`` (any case) of a dict sample, or, in an ``(image, ..., label, ...)``
    tuple, the first item after the image that is not a tv_tensor (``ObjectAlpha``, other masks, boxes, images),
    a PIL image or an image-sized tensor (more than 2 dims: no label is) — the second item of ``(image, label)``,
    the third of ``(image, ObjectAlpha, label)`` (the layout of :class:`~torch_backswap.alpha.ObjectAlphaDataset`)
    and of a collated ``(images, alphas, labels)`` batch. Returns ``None`` when there is none (or that item is a
    dict, e.g. a detection target).

    The one label lookup of the package: :class:`~torch_backswap.transform.BackgroundSwap` (and so its collate
    route) and :class:`~torch_backswap.loader.DeviceSwapLoader` all find labels here."""
    if isinstance(sample, dict):
        by_lower = {str(k).lower(): k for k in sample}
        for key in LABEL_KEYS:
            if key in by_lower:
                return sample[by_lower[key]]
        return None
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        for candidate in sample[1:]:
            if isinstance(candidate, (tv_tensors.TVTensor, PIL.Image.Image)) or (
                isinstance(candidate, Tensor) and candidate.ndim > 2
            ):
                continue
            return None if isinstance(candidate, dict) else candidate
    return None


def find_labels(sample: Any, labels_getter: Any = "default") -> tuple[Any, bool]:
    """``(labels, explicit)``: what ``labels_getter`` (``"default"``: :func:`default_labels_getter`, a callable or
    ``None``) found in ``sample``, and whether a caller-given getter found it (its labels are then checked strictly)."""
    if labels_getter is None:
        return None, False
    if labels_getter == "default":
        return default_labels_getter(sample), False
    return labels_getter(sample), True


def class_indices(labels: Any, b: int, single: bool, strict: bool) -> Tensor | None:
    """Labels found for ``b`` images → int64 ``(b,)`` class indices (:func:`~torch_backswap._checks.check_labels`).

    A single image's ``(K,)`` vector is one soft / one-hot label. When not ``strict`` (the default getter found
    the value and nothing needs labels), a value that is no label (e.g. an ``(H, W)`` mask target) gives ``None``;
    but a batch's labels of another count than the batch (an int or a 1-D sequence of ``n != b`` values) raise
    ``ValueError`` all the same, as in ``v2.CutMix``: images and labels do not belong together.
    """
    if labels is None:
        return None
    if single and isinstance(labels, Tensor) and labels.ndim == 1 and labels.numel() > 1:
        labels = labels[None]
    try:
        return check_labels(labels, b)
    except ValueError:
        if strict or (not single and _count_differs(labels, b)):
            raise
        return None


def _count_differs(labels: Any, b: int) -> bool:
    """Whether ``labels`` is a number or a 1-D sequence of numbers whose count is not ``b``."""
    if isinstance(labels, (str, bytes, dict)):
        return False
    try:
        t = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return False
    return t.ndim <= 1 and t.dtype != torch.bool and not t.dtype.is_complex and t.numel() != b


def check_bank_classes(labels: Tensor, bank: Any, found_by_default: bool = False) -> Tensor:
    """``labels`` (int64 ``(B,)``) if each is a class of ``bank``: an index of its class names, or, for a bank
    without names, a class it holds. ``ValueError`` naming the labels, the bank's classes and the bad values."""
    names = getattr(bank, "classes", None)
    if names is not None:
        bad = labels[labels >= len(names)]
        classes = f"{len(names)} classes 0..{len(names) - 1} {list(names)[:10]}"
    else:
        present = torch.as_tensor(bank.present_classes, dtype=torch.long)
        bad = labels[~torch.isin(labels, present)]
        classes = f"classes {present.tolist()[:20]} (it has no class names)"
    if bad.numel():
        hint = " (labels_getter=None if the samples carry no labels)" if found_by_default else ""
        raise ValueError(f"labels must be classes of the bank, which has {classes}; got {sorted(set(bad.tolist()))[:8]} "
                         f"in labels {labels.tolist()[:8]}{hint}")
    return labels


def check_swap_strategy(strategy: str, labels_getter: Any, bank_classes: list[int]) -> str:
    """``strategy`` checked against the bank's classes and the ``labels_getter`` it needs (a swap's constructor)."""
    strategy = check_choice("strategy", strategy, STRATEGIES)
    if strategy == "other_class" and len(bank_classes) < 2:
        raise ValueError(
            f"strategy='other_class' needs a bank with at least 2 classes, but the bank only has class {bank_classes}"
        )
    if labels_getter is not None and labels_getter != "default" and not callable(labels_getter):
        raise ValueError(f"labels_getter must be 'default', a callable or None, got {labels_getter!r}")
    if labels_getter is None and strategy == "other_class":
        raise ValueError("strategy='other_class' needs the samples' labels, but labels_getter=None never looks for "
                         "them; pass labels_getter='default' (the default) or a callable sample -> labels")
    return strategy


def bank_classes_of(labels: Any, b: int, *, single: bool, explicit: bool, strategy: str, bank: Any) -> Tensor | None:
    """The swap's view of a call's labels: int64 ``(b,)`` class indices checked against the bank's classes, or
    ``None`` when none were found (refused when ``strategy="other_class"`` needs them). ``explicit``: the caller
    gave them (batch call or a custom ``labels_getter``), so a value that is no label raises instead of being
    ignored."""
    lab = class_indices(labels, b, single, explicit or strategy == "other_class")
    if lab is None and strategy == "other_class":
        raise ValueError(
            "strategy='other_class' needs the samples' labels: pass (image, label) samples, a dict with a 'label' "
            "key, swap(images, labels) for batches, or a labels_getter"
        )
    if lab is not None:
        check_bank_classes(lab, bank, found_by_default=not explicit)
    return lab
