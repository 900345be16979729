import pytest
import torch

from torch_backswap.jitter import (
    JitterParams,
    jitter_affine,
    mask_bboxes,
    sample_jitter,
)


def test_sample_jitter_ranges_and_reproducible():
    p = sample_jitter(500, generator=torch.Generator().manual_seed(1))
    assert p.scale.min() >= 0.5 and p.scale.max() <= 1.5
    assert p.angle.abs().max() <= 30.0
    assert p.translate.abs().max() <= 32 / 224 + 1e-6
    q = sample_jitter(500, generator=torch.Generator().manual_seed(1))
    assert torch.equal(p.scale, q.scale) and torch.equal(p.translate, q.translate)
    fixed = sample_jitter(4, scale=1.0, degrees=0.0, translate_px=0.0)
    assert torch.all(fixed.scale == 1) and torch.all(fixed.angle == 0) and torch.all(fixed.translate == 0)
    with pytest.raises(ValueError, match="scale"):
        sample_jitter(2, scale=(1.5, 0.5))
    with pytest.raises(ValueError, match="translate_px"):
        sample_jitter(2, translate_px=-1)


def test_translation_scales_with_image_size():
    p = JitterParams(torch.ones(2), torch.zeros(2), torch.tensor([[32 / 224, 0.0], [32 / 224, 0.0]]))
    boxes = torch.tensor([[40, 40, 60, 60], [10, 10, 20, 20]])
    m224 = jitter_affine(p[:1], (224, 224), bboxes=boxes[:1])
    m64 = jitter_affine(p[1:], (64, 64), bboxes=boxes[1:])
    assert m224[0, 0, 2].item() == pytest.approx(32.0)
    assert m64[0, 0, 2].item() == pytest.approx(32 / 224 * 64)


def test_jitter_keeps_object_inside_frame():
    h, w = 64, 80
    alpha = torch.zeros(300, 1, h, w)
    g = torch.Generator().manual_seed(0)
    for i in range(300):
        y0, x0 = int(torch.randint(0, h - 10, (1,), generator=g)), int(torch.randint(0, w - 10, (1,), generator=g))
        alpha[i, :, y0 : y0 + 10, x0 : x0 + 10] = 1
    p = sample_jitter(300, translate_px=200, generator=g)
    m = jitter_affine(p, (h, w), alpha)
    boxes, valid = mask_bboxes(alpha)
    assert valid.all()
    x0, y0, x1, y1 = boxes.float().unbind(1)
    cx = torch.stack([x0, x1, x0, x1], 1)
    cy = torch.stack([y0, y0, y1, y1], 1)
    tx = m[:, 0, 0:1] * cx + m[:, 0, 1:2] * cy + m[:, 0, 2:3]
    ty = m[:, 1, 0:1] * cx + m[:, 1, 1:2] * cy + m[:, 1, 2:3]
    assert tx.min() >= -1e-3 and tx.max() <= w - 1 + 1e-3
    assert ty.min() >= -1e-3 and ty.max() <= h - 1 + 1e-3


def test_mask_bboxes():
    a = torch.zeros(2, 1, 10, 12)
    a[0, 0, 2:5, 3:9] = 0.5
    boxes, valid = mask_bboxes(a)
    assert boxes[0].tolist() == [3, 2, 8, 4]
    assert valid.tolist() == [True, False]
