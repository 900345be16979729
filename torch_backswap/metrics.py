"""Metrics: cell balanced accuracy of patch predictions, mask IoU, and (worst-)group accuracy.

All functions take tensors on any device and return plain Python numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cell_balanced_accuracy", "group_accuracies", "mask_iou", "worst_group_accuracy"]


def _as_bool_prediction(x: Tensor, threshold: float | None, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x
    if x.is_floating_point():
        return x > (0.0 if threshold is None else threshold)
    return x != 0


def cell_balanced_accuracy(logits_or_pred: Tensor, target: Tensor, threshold: float | None = None) -> float:
    """Balanced accuracy over grid cells: the mean of the true-positive and true-negative rates.

    Args:
        logits_or_pred: ``(B, S, S)``. Bool/integer tensors are predictions; float tensors are **logits**
            (object where ``> 0``), unless ``threshold`` is given, e.g. ``threshold=0.5`` for probabilities.
        target: ``(B, S, S)`` bool (or 0/1) ground truth.

    Returns:
        ``(TPR + TNR) / 2`` pooled over all cells of the batch; if the target has no positive (or no
        negative) cell, the rate that exists. ``nan`` for empty input.
    """
    pred = _as_bool_prediction(logits_or_pred, threshold, "logits_or_pred")
    truth = target != 0 if target.dtype != torch.bool else target
    if pred.shape != truth.shape:
        raise ValueError(f"logits_or_pred shape {tuple(pred.shape)} != target shape {tuple(truth.shape)}")
    truth = truth.to(pred.device)
    positives = truth.sum().item()
    negatives = truth.numel() - positives
    rates = []
    if positives:
        rates.append((pred & truth).sum().item() / positives)
    if negatives:
        rates.append((~pred & ~truth).sum().item() / negatives)
    return float(sum(rates) / len(rates)) if rates else float("nan")


def mask_iou(pred: Tensor, target: Tensor, reduction: str = "mean") -> float:
    """Intersection over union of binary masks.

    Args:
        pred, target: ``(B, 1, H, W)`` or ``(B, H, W)``; bool, or float/integer where ``> 0.5`` is object.
        reduction: ``"mean"`` – IoU per image, averaged (an image where both masks are empty scores 1);
            ``"dataset"`` – total intersection over total union.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.ndim not in (3, 4):
        raise ValueError(f"pred must be (B,H,W) or (B,1,H,W), got shape {tuple(pred.shape)}")
    a = pred if pred.dtype == torch.bool else pred > 0.5
    b = (target if target.dtype == torch.bool else target > 0.5).to(a.device)
    a, b = a.flatten(1), b.flatten(1)
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    if reduction == "dataset":
        total = union.sum().item()
        return float(inter.sum().item() / total) if total else 1.0
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'dataset', got {reduction!r}")
    if a.shape[0] == 0:
        return float("nan")
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return float(iou.mean().item())


def group_accuracies(preds: Tensor, labels: Tensor, groups: Tensor) -> dict[int, float]:
    """Accuracy per group.

    Args:
        preds: ``(N,)`` predicted class ids, or ``(N, C)`` logits/scores (arg-maxed).
        labels: ``(N,)`` true class ids.
        groups: ``(N,)`` group ids (e.g. ``2 * label + place``).

    Returns:
        ``{group_id: accuracy}`` for every group present, sorted by group id.
    """
    if preds.ndim == 2:
        preds = preds.argmax(1)
    if not (preds.ndim == labels.ndim == groups.ndim == 1) or not (len(preds) == len(labels) == len(groups)):
        raise ValueError(
            f"preds, labels, groups must be (N,) of equal length, got shapes {tuple(preds.shape)}, "
            f"{tuple(labels.shape)}, {tuple(groups.shape)}")
    correct = preds.cpu().long() == labels.cpu().long()
    groups = groups.cpu().long()
    return {int(g): float(correct[groups == g].float().mean().item()) for g in torch.unique(groups).tolist()}


def worst_group_accuracy(preds: Tensor, labels: Tensor, groups: Tensor) -> float:
    """The lowest of :func:`group_accuracies` (``nan`` for empty input)."""
    accs = group_accuracies(preds, labels, groups)
    return min(accs.values()) if accs else float("nan")
