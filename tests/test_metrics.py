import math

import pytest
import torch

from torch_backswap.metrics import cell_balanced_accuracy, group_accuracies, mask_iou, worst_group_accuracy


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
