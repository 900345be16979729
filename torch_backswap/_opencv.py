"""OpenCV when it is installed (the optional ``fast`` extra), and the integer-only passes over compact alphas that
it runs faster than torch on one CPU core.

Every function here returns exactly the integers of the torch code it stands in for (tested in
``tests/test_opencv_passes.py``), so whether OpenCV is installed never changes a byte of a swap; it only changes how
long the box and area passes take: each reads only the object's box after one SIMD ``cv2.boundingRect`` scan.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["opencv", "uint8_planes", "plane_boxes", "solid_counts"]


@functools.cache
def opencv():
    """The ``cv2`` module when OpenCV imports, else ``None`` (a failed import is not retried on every call)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def uint8_planes(alpha: Tensor):
    """``(B, H, W)`` numpy uint8 view of a ``(B, 1, H, W)`` or ``(B, H, W)`` bool / uint8 CPU alpha when OpenCV can
    read it, else ``None`` (other dtypes and devices take the torch route)."""
    if alpha.device.type != "cpu" or alpha.dtype not in (torch.uint8, torch.bool) or opencv() is None:
        return None
    a = alpha[:, 0] if alpha.ndim == 4 else alpha
    return (a.view(torch.uint8) if a.dtype == torch.bool else a).contiguous().numpy()


def plane_boxes(planes) -> tuple[Tensor, Tensor]:
    """:func:`~torch_backswap.jitter.mask_bboxes` of ``(B, H, W)`` uint8 numpy planes (:func:`uint8_planes`): one
    ``cv2.boundingRect`` (the box of the non-zero pixels) per sample."""
    cv2 = opencv()
    boxes, valid = [], []
    for plane in planes:
        x, y, bw, bh = cv2.boundingRect(plane)
        valid.append(bw > 0)
        boxes.append((x, y, x + bw - 1, y + bh - 1) if bw > 0 else (0, 0, 0, 0))
    return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4), torch.tensor(valid, dtype=torch.bool)


def solid_counts(planes, threshold: int, boxes: Tensor, valid: Tensor) -> Tensor:
    """int64 ``(B,)``: how many pixels of each ``(H, W)`` uint8 plane are ``> threshold``, read inside the plane's
    non-zero box only (``boxes``, ``valid``: :func:`~torch_backswap.jitter.mask_bboxes` of the planes), with
    ``cv2.threshold`` and ``cv2.countNonZero``."""
    cv2 = opencv()
    counts = []
    for plane, (x0, y0, x1, y1), ok in zip(planes, boxes.tolist(), valid.tolist()):
        if not ok:
            counts.append(0)
            continue
        box = plane[y0 : y1 + 1, x0 : x1 + 1]
        # cv2.threshold, not cv2.compare: compare reads a scalar as a 4-vector on a 1x1 box
        solid = box if threshold == 0 else cv2.threshold(box, threshold, 255, cv2.THRESH_BINARY)[1]
        counts.append(cv2.countNonZero(solid))
    return torch.tensor(counts, dtype=torch.int64)
