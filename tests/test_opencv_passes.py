"""Issue 25: with OpenCV installed, the box and area passes over compact alphas run through it; they must return
exactly the integers of the torch passes, so what is installed never changes a swap's bytes."""

import pytest
import torch

from torch_backswap import _opencv
from torch_backswap.functional import drop_specks
from torch_backswap.jitter import mask_bboxes

pytest.importorskip("cv2")


def _alphas(seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Sparse blobs, empty samples, objects touching each border, single pixels, and values at the 127/128 edge."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(1, 70, (2,), generator=g))
    a = torch.randint(0, 256, (9, 1, h, w), generator=g, dtype=torch.uint8)
    a[torch.rand(a.shape, generator=g) < 0.9] = 0
    a[0] = 0                                       # empty
    a[1] = 0
    a[1, 0, -1, -1] = 1                            # one pixel in the last corner
    a[2, 0, :, 0] = 127                            # a column at the threshold (not solid)
    a[3, 0, 0, :] = 128                            # a row just over it (solid)
    if dtype == torch.bool:
        return a > 0
    return a


def _torch_route(monkeypatch):
    monkeypatch.setattr(_opencv, "opencv", lambda: None)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_the_torch_boxes(monkeypatch, seed, dtype):
    alpha = _alphas(seed, dtype)
    fast = mask_bboxes(alpha)
    assert _opencv.uint8_planes(alpha) is not None  # the OpenCV route ran
    _torch_route(monkeypatch)
    assert _opencv.uint8_planes(alpha) is None
    slow = mask_bboxes(alpha)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert not bool(fast[1][0]) and fast[0][1].tolist() == [alpha.shape[-1] - 1, alpha.shape[-2] - 1] * 2


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
@pytest.mark.parametrize("seed", range(12))
def test_speck_counts_are_the_torch_counts(monkeypatch, seed, dtype):
    alpha = _alphas(seed, dtype)
    planes = _opencv.uint8_planes(alpha)
    counts = _opencv.solid_counts(planes, 0 if dtype == torch.bool else 127, *mask_bboxes(alpha))
    solid = alpha if dtype == torch.bool else alpha > 127
    assert counts.tolist() == solid.flatten(1).sum(1).tolist()
    # drop_specks picks the same samples on both routes
    for fraction in (0.001, 0.01, 0.05, 0.2):
        fast = drop_specks(alpha, fraction)
        with monkeypatch.context() as m:
            _torch_route(m)
            slow = drop_specks(alpha, fraction)
        assert torch.equal(fast, slow)


def test_non_contiguous_and_three_dim_alphas(monkeypatch):
    alpha = _alphas(3, torch.uint8)
    strided = torch.cat([alpha, alpha], 3)[..., ::2]  # a view with a column stride
    assert not strided.is_contiguous()
    planes = _opencv.uint8_planes(strided[:, 0])
    assert planes.shape == strided[:, 0].shape and planes.flags["C_CONTIGUOUS"]
    fast = mask_bboxes(strided), _opencv.solid_counts(planes, 127, *mask_bboxes(strided))
    _torch_route(monkeypatch)
    slow = mask_bboxes(strided.contiguous())
    assert torch.equal(fast[0][0], slow[0]) and torch.equal(fast[0][1], slow[1])
    assert fast[1].tolist() == (strided > 127).flatten(1).sum(1).tolist()


def test_float_and_integer_alphas_take_the_torch_route():
    assert _opencv.uint8_planes(torch.zeros(2, 1, 4, 4)) is None
    assert _opencv.uint8_planes(torch.zeros(2, 1, 4, 4, dtype=torch.int32)) is None
