import math

import pytest
import torch

from torch_backswap.metrics import (
    boundary_f_score,
    cell_balanced_accuracy,
    ghost_fraction,
    group_accuracies,
    hole_area,
    mask_boundary,
    mask_iou,
    worst_group_accuracy,
)


def test_cell_balanced_accuracy():
    target = torch.tensor([[[True, True], [False, False]]])
    pred = torch.tensor([[[True, False], [False, False]]])
    assert cell_balanced_accuracy(pred, target) == pytest.approx(0.75)  # TPR 0.5, TNR 1
    logits = torch.tensor([[[2.0, -1.0], [-3.0, 0.5]]])
    assert cell_balanced_accuracy(logits, target) == pytest.approx(0.5 * (0.5 + 0.5))
    probs = torch.sigmoid(logits)
    assert cell_balanced_accuracy(probs, target, threshold=0.5) == cell_balanced_accuracy(logits, target)
    assert cell_balanced_accuracy(target, target) == 1.0
    assert cell_balanced_accuracy(~target, target) == 0.0
    # only negatives in the target: the TNR alone
    assert cell_balanced_accuracy(pred, torch.zeros_like(target)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="shape"):
        cell_balanced_accuracy(pred, target[:, :1])


def test_mask_iou():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.zeros(2, 1, 4, 4)
    a[0, 0, :2] = 1
    b[0, 0, :1] = 1  # IoU 0.5; second image both empty -> 1
    assert mask_iou(a, b) == pytest.approx(0.75)
    assert mask_iou(a, b, reduction="dataset") == pytest.approx(0.5)
    assert mask_iou(a[:, 0] > 0.5, b[:, 0] > 0.5) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="reduction"):
        mask_iou(a, b, reduction="sum")


def test_group_accuracies():
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    groups = torch.tensor([0, 0, 3, 3, 2, 1])
    preds = torch.tensor([0, 1, 1, 1, 0, 0])
    accs = group_accuracies(preds, labels, groups)
    assert accs == {0: 0.5, 1: 1.0, 2: 0.0, 3: 1.0}
    assert worst_group_accuracy(preds, labels, groups) == 0.0
    logits = torch.nn.functional.one_hot(preds, 2).float()
    assert group_accuracies(logits, labels, groups) == accs
    assert math.isnan(worst_group_accuracy(preds[:0], labels[:0], groups[:0]))


# -- boundary F, ghost fraction, hole area ------------------------------------------------------------------

def _square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, top : top + side, left : left + side] = True
    return m


def test_mask_boundary_is_the_ring_of_object_pixels_and_ignores_the_frame():
    ring = mask_boundary(_square(6, 1, 1, 4))[0]
    assert ring.sum() == 12 and not ring[2:4, 2:4].any()  # 4x4 square: 16 pixels, 4 inside
    full = torch.ones(1, 5, 5, dtype=torch.bool)
    assert not mask_boundary(full).any()  # the frame is not background


def test_boundary_f_score_hand_computed():
    truth = _square(10, 2, 2, 4)  # boundary: 12 pixels
    assert boundary_f_score(truth, truth, tolerance=0) == 1.0
    # shifted one pixel right: with no tolerance, 6 of 12 predicted boundary pixels lie on the true one
    # (top and bottom rows share 3 pixels each) and 6 of 12 true ones are hit: P = R = 0.5
    shifted = torch.roll(truth, 1, dims=2)
    assert boundary_f_score(shifted, truth, tolerance=0) == pytest.approx(0.5)
    assert boundary_f_score(shifted, truth, tolerance=1) == 1.0
    # a far-away object shares no boundary at all; an empty prediction scores 0; two empty masks score 1
    assert boundary_f_score(_square(20, 14, 14, 4), _square(20, 1, 1, 4), tolerance=2) == 0.0
    assert boundary_f_score(torch.zeros_like(truth), truth) == 0.0
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert boundary_f_score(empty, empty) == 1.0
    # float (B,1,H,W) inputs threshold at 0.5, and per-image mean vs pooled
    both = torch.cat([truth, truth])[:, None].float()
    pred = torch.cat([truth, shifted])[:, None].float()
    assert boundary_f_score(pred, both, tolerance=0) == pytest.approx(0.75)
    assert boundary_f_score(pred, both, tolerance=0, reduction="dataset") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f_score(truth, truth, tolerance=-1)
    with pytest.raises(ValueError, match="target shape"):
        boundary_f_score(truth, _square(8, 0, 0, 2))


def test_ghost_fraction_and_hole_area_hand_computed():
    alpha = torch.zeros(2, 1, 4, 4)
    alpha[0, 0, :2, :2] = 1.0  # 4 object pixels
    alpha[1, 0, :, :2] = 0.9  # 8 object pixels
    alpha[1, 0, 3, 3] = 0.4  # not object (alpha <= 0.5)
    hole = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    hole[0, 0, :2, :1] = True  # covers 2 of 4 -> ghost 0.5
    hole[1, 0, :, :] = True  # covers all 8 -> ghost 0
    assert ghost_fraction(hole, alpha) == pytest.approx(0.25)  # mean of 0.5 and 0
    assert ghost_fraction(hole, alpha, reduction="dataset") == pytest.approx(2 / 12)
    assert hole_area(hole) == pytest.approx((2 / 16 + 1.0) / 2)
    # an image without object pixels does not count in the mean
    no_object = torch.cat([alpha, torch.zeros(1, 1, 4, 4)])
    assert ghost_fraction(torch.cat([hole, hole[:1]]), no_object) == pytest.approx(0.25)
    assert ghost_fraction(hole, torch.zeros_like(alpha)) == 0.0
    with pytest.raises(ValueError, match="hole must be"):
        ghost_fraction(hole[:, 0, 0], alpha)
