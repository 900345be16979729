"""Metrics: cell balanced accuracy of patch predictions, mask IoU, boundary F-score, ghost fraction of a
hole, and (worst-)group accuracy.

All functions take tensors on any device and return plain Python numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "boundary_f_score",
    "cell_balanced_accuracy",
    "ghost_fraction",
    "group_accuracies",
    "hole_area",
    "mask_boundary",
    "mask_iou",
    "worst_group_accuracy",
]


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


def _binary_masks(pred: Tensor, target: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Both masks as bool ``(B, H, W)`` on ``pred``'s device (``> 0.5`` for non-bool inputs)."""
    for name, x in zip(names, (pred, target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] != 1):
            raise ValueError(f"{name} must be (B,H,W) or (B,1,H,W), got shape {tuple(x.shape)}")
    a = pred if pred.dtype == torch.bool else pred > 0.5
    b = target if target.dtype == torch.bool else target > 0.5
    a = a[:, 0] if a.ndim == 4 else a
    b = b[:, 0] if b.ndim == 4 else b
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} shape {tuple(pred.shape)} and {names[1]} shape {tuple(target.shape)} "
                         "do not describe the same (B, H, W) masks")
    return a, b.to(a.device)


def mask_boundary(mask: Tensor) -> Tensor:
    """The inner boundary of binary masks: object pixels with a background pixel among their 8 neighbours.

    The image border does not count as background (the frame is replicated), so an object cut by the frame
    has no boundary along it.

    Args:
        mask: bool ``(B, H, W)``.

    Returns:
        bool ``(B, H, W)``.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 1:4, 1:4] = True
        >>> mask_boundary(m)[0].int()
        tensor([[0, 0, 0, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 1, 0, 1, 0],
                [0, 1, 1, 1, 0],
                [0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    x = mask[:, None].float()
    eroded = -F.max_pool2d(-F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return mask & ~(eroded[:, 0] > 0.5)


def boundary_f_score(pred: Tensor, target: Tensor, tolerance: int = 1, reduction: str = "mean") -> float:
    """Boundary F-score: how well the outline of ``pred`` follows the outline of ``target``.

    Boundaries are :func:`mask_boundary` (inner, 8-neighbourhood). A predicted boundary pixel is correct when
    a true boundary pixel lies within ``tolerance`` pixels (chessboard distance, i.e. inside the
    ``(2·tolerance+1)²`` square around it); precision is the share of predicted boundary pixels that are
    correct, recall the share of true boundary pixels matched the same way, F = 2PR / (P + R).

    Args:
        pred, target: ``(B, 1, H, W)`` or ``(B, H, W)``; bool, or float/integer where ``> 0.5`` is object.
        tolerance: pixels of slack (``0`` = exact). At 64 px one pixel is 1.6 % of the side.
        reduction: ``"mean"`` – F per image, averaged (an image where both outlines are empty scores 1, one
            empty outline scores 0); ``"dataset"`` – precision and recall pooled over all pixels of the batch.

    Returns:
        F in ``[0, 1]`` (``nan`` for an empty batch).

    Example:
        >>> t = torch.zeros(1, 8, 8, dtype=torch.bool); t[0, 2:6, 2:6] = True
        >>> boundary_f_score(t, t)
        1.0
        >>> shifted = torch.roll(t, 1, dims=2)  # one pixel to the right
        >>> boundary_f_score(shifted, t, tolerance=0), boundary_f_score(shifted, t, tolerance=1)
        (0.5, 1.0)
    """
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0, got {tolerance!r}")
    if reduction not in ("mean", "dataset"):
        raise ValueError(f"reduction must be 'mean' or 'dataset', got {reduction!r}")
    a, b = _binary_masks(pred, target, ("pred", "target"))
    if a.shape[0] == 0:
        return float("nan")
    edge_a, edge_b = mask_boundary(a), mask_boundary(b)
    k = 2 * tolerance + 1
    near_a = F.max_pool2d(edge_a[:, None].float(), k, stride=1, padding=tolerance)[:, 0] > 0.5
    near_b = F.max_pool2d(edge_b[:, None].float(), k, stride=1, padding=tolerance)[:, 0] > 0.5
    n_a, n_b = edge_a.flatten(1).sum(1).double(), edge_b.flatten(1).sum(1).double()
    hit_a = (edge_a & near_b).flatten(1).sum(1).double()  # predicted boundary near a true one
    hit_b = (edge_b & near_a).flatten(1).sum(1).double()  # true boundary near a predicted one
    if reduction == "dataset":
        if n_a.sum() == 0 and n_b.sum() == 0:
            return 1.0
        precision = float(hit_a.sum() / n_a.sum()) if n_a.sum() else 0.0
        recall = float(hit_b.sum() / n_b.sum()) if n_b.sum() else 0.0
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    precision = hit_a / n_a.clamp_min(1)
    recall = hit_b / n_b.clamp_min(1)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                    torch.zeros_like(precision))
    f = torch.where((n_a == 0) & (n_b == 0), torch.ones_like(f), f)
    return float(f.mean().item())


def ghost_fraction(hole: Tensor, alpha: Tensor, reduction: str = "mean") -> float:
    """Share of the object left **outside** the inpainting hole: those pixels stay in the background bank.

    Object pixels are ``alpha > 0.5``; a pixel is in the hole where ``hole`` is true (or ``> 0.5``).

    Args:
        hole: ``(B, 1, H, W)`` or ``(B, H, W)`` loose mask (the region that gets inpainted).
        alpha: same shape, the true object alpha (float in ``[0, 1]``, or bool).
        reduction: ``"mean"`` – the fraction per image, averaged over the images that contain an object;
            ``"dataset"`` – ghost pixels over object pixels, pooled over the batch.

    Returns:
        Fraction in ``[0, 1]``; ``0.0`` when no image has an object pixel.

    Example:
        >>> alpha = torch.zeros(1, 1, 4, 4); alpha[..., 0:2, 0:2] = 1.0  # a 4-pixel object
        >>> hole = torch.zeros(1, 1, 4, 4, dtype=torch.bool); hole[..., 0:2, 0:1] = True  # covers 2 of them
        >>> ghost_fraction(hole, alpha)
        0.5
    """
    if reduction not in ("mean", "dataset"):
        raise ValueError(f"reduction must be 'mean' or 'dataset', got {reduction!r}")
    inside, obj = _binary_masks(hole, alpha, ("hole", "alpha"))
    n_obj = obj.flatten(1).sum(1).double()
    ghost = (obj & ~inside).flatten(1).sum(1).double()
    if reduction == "dataset":
        return float(ghost.sum() / n_obj.sum()) if n_obj.sum() else 0.0
    has = n_obj > 0
    return float((ghost[has] / n_obj[has]).mean()) if bool(has.any()) else 0.0


def hole_area(hole: Tensor) -> float:
    """Mean share of the image covered by the hole.

    Args:
        hole: ``(B, 1, H, W)`` or ``(B, H, W)``; bool, or float/integer where ``> 0.5`` is inside.

    Example:
        >>> hole_area(torch.tensor([[[True, False], [False, False]]]))
        0.25
    """
    inside, _ = _binary_masks(hole, hole, ("hole", "hole"))
    if inside.shape[0] == 0:
        return float("nan")
    return float(inside.flatten(1).double().mean(1).mean())


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
