"""Tests for torch_backswap.refine: edge-aware refinement, flip averaging, threshold calibration, loose hole."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torch_backswap.metrics import mask_iou
from torch_backswap.refine import (
    REFINE_METHODS,
    calibrate_threshold,
    flip_average_logits,
    loose_hole,
    refine_probability,
)
from torch_backswap.segmenter import logits_to_probability


def _disc_scene(batch: int = 3, size: int = 64, grid: int = 16, seed: int = 0):
    """Images with a sharp-edged disc (object) on a textured background, its true mask, and the coarse
    probability a patch segmenter would give: the cell coverage, upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks, images = [], []
    for _ in range(batch):
        cy, cx = (torch.rand(2, generator=g) * size * 0.4 + size * 0.3).tolist()
        r = float(torch.rand(1, generator=g) * size * 0.12 + size * 0.12)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()
        bg = torch.rand(3, 1, 1, generator=g) * 0.3 + 0.05 * torch.rand(3, size, size, generator=g)
        fg = torch.rand(3, 1, 1, generator=g) * 0.3 + 0.65
        images.append((fg * m + bg * (1 - m)).clamp(0, 1))
        masks.append(m)
    images = (torch.stack(images) * 255).round().to(torch.uint8)
    truth = torch.stack(masks)[:, None]
    cells = F.adaptive_avg_pool2d(truth, grid)[:, 0]
    logits = torch.logit(cells.clamp(0.02, 0.98))
    return images, truth, logits_to_probability(logits, (size, size))


@pytest.mark.parametrize("method", REFINE_METHODS)
def test_refine_keeps_shape_dtype_range_and_device(method):
    images, _, prob = _disc_scene()
    for prob_in in (prob, prob.double()):
        for guide in (images, images.float() / 255):
            out = refine_probability(prob_in, guide, method=method)
            assert out.shape == prob.shape and out.dtype == torch.float32 and out.device == prob.device
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("method", ["guided", "bilateral"])
def test_refinement_follows_a_sharp_edge_better_than_the_upsampled_cells(method):
    images, truth, prob = _disc_scene(batch=4, seed=1)
    refined = refine_probability(prob, images, method=method, radius=2)
    before, after = mask_iou(prob > 0.5, truth), mask_iou(refined > 0.5, truth)
    assert after > before + 0.01, (before, after)


@pytest.mark.parametrize("method", ["guided", "bilateral"])
def test_refinement_is_batched(method):
    images, _, prob = _disc_scene(batch=3, seed=2)
    together = refine_probability(prob, images, method=method)
    alone = torch.cat([refine_probability(prob[i : i + 1], images[i : i + 1], method=method) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_refine_resizes_the_guide_and_rejects_bad_input():
    images, _, prob = _disc_scene(batch=2, size=64)
    big = F.interpolate(images.float(), size=(96, 96), mode="bilinear").round().to(torch.uint8)
    assert refine_probability(prob, big).shape == prob.shape
    with pytest.raises(ValueError, match="method must be one of"):
        refine_probability(prob, images, method="median")
    with pytest.raises(ValueError, match=r"probability must be \(B, 1, H, W\)"):
        refine_probability(prob[:, 0], images)
    with pytest.raises(ValueError, match="radius"):
        refine_probability(prob, images, radius=0)
    with pytest.raises(ValueError, match="batch size"):
        refine_probability(prob, images[:1])
    with pytest.raises(TypeError, match="images must be uint8"):
        refine_probability(prob, images.long())


class _RampSegmenter(torch.nn.Module):
    """A 'segmenter' whose cell logits are the mean red brightness of each 4x4 cell plus a bias that grows
    from 0 (left) to 1 (right): not mirror-symmetric, so flip averaging changes its output."""

    def forward(self, images):
        x = images.float()[:, 0]
        cells = F.avg_pool2d(x[:, None], 4)[:, 0]
        return cells + torch.linspace(0, 1, cells.shape[-1])


def test_flip_average_logits_mirrors_back_and_restores_the_mode():
    seg = _RampSegmenter().train()
    images = torch.rand(2, 3, 16, 16)
    out = flip_average_logits(seg, images)
    expected = (seg(images) + seg(images.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 4, 4) and seg.training  # the mode is restored
    # the brightness part is mirror-equivariant and survives unchanged; the bias averages to its mean 0.5
    torch.testing.assert_close(out, F.avg_pool2d(images[:, :1], 4)[:, 0] + 0.5)


def test_calibrate_threshold_recovers_the_labelling_rule():
    _, truth, _ = _disc_scene(batch=4, seed=3)
    from torch_backswap.labels import dense_to_patch_grid

    grids = dense_to_patch_grid(truth, 16, 0.25)
    # a probability map whose true object sits at 0.6 and background at 0.3: every threshold between
    # gives the labels back exactly; thresholds outside do not
    prob = truth * 0.6 + (1 - truth) * 0.3
    best, scores = calibrate_threshold(prob, grids, thresholds=[0.1, 0.2, 0.4, 0.5, 0.7, 0.9])
    assert best == 0.4 and scores.shape == (6,) and scores.dtype == torch.float64
    assert scores[2] == 1.0 and scores[3] == 1.0 and scores[0] < 1.0 and scores[4] < 1.0
    for criterion in ("f1", "balanced_accuracy"):
        assert calibrate_threshold(prob, grids, thresholds=[0.1, 0.2, 0.4, 0.5, 0.7], criterion=criterion)[0] == 0.4
    with pytest.raises(ValueError, match="criterion"):
        calibrate_threshold(prob, grids, criterion="accuracy")
    with pytest.raises(ValueError, match="grids must be"):
        calibrate_threshold(prob, grids[:2])
    with pytest.raises(ValueError, match="thresholds"):
        calibrate_threshold(prob, grids, thresholds=[1.5])


def test_loose_hole_grows_by_the_dilation():
    prob = torch.zeros(2, 1, 9, 9)
    prob[0, 0, 4, 4] = 0.5
    prob[1, 0, 0, 0] = 0.05  # below the threshold
    hole = loose_hole(prob, 0.1, dilate=2)
    assert hole.dtype == torch.bool and hole.shape == prob.shape
    assert hole[0, 0].sum() == 25 and hole[0, 0, 2:7, 2:7].all() and not hole[1].any()
    assert loose_hole(prob, 0.1).sum() == 1
    with pytest.raises(ValueError, match="dilate"):
        loose_hole(prob, 0.1, dilate=-1)


@pytest.mark.parametrize("dilate", [1, 2, 7])
def test_loose_hole_equals_a_square_max_pool(dilate):
    """The two 1-D passes grow the hole exactly as one square max-pool does (edges and corners included)."""
    prob = torch.rand(3, 1, 37, 29, generator=torch.Generator().manual_seed(dilate))
    k = 2 * dilate + 1
    square = torch.nn.functional.max_pool2d((prob > 0.93).float(), k, stride=1, padding=dilate) > 0.5
    assert torch.equal(loose_hole(prob, 0.93, dilate=dilate), square)


# --------------------------------------------------------------------------------------------------
# issue 25: the cut-out at the grid's resolution (uint8 alpha, only the object's window upsampled)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (37, 53), (300, 200), (10, 12)])
@pytest.mark.parametrize("threshold, feather", [(0.67, 0.1), (0.5, 0.0), (0.4, 0.3)])
def test_logits_to_alpha_is_the_float_cut_out_rounded(size, threshold, feather):
    """uint8 alpha from the grid = round-half-up(255 * float cut-out): max 1 level (float rounding at half-way
    values), on at most 1e-4 of the pixels; a hard mask (feather 0) identical but for ties."""
    from torch_backswap.segmenter import logits_to_alpha, probability_to_mask

    logits = torch.randn(12, 16, 16, generator=torch.Generator().manual_seed(sum(size))) * 4 - 1
    logits[0] = -20.0  # nothing found: all zero
    logits[1, :3, :5] = 9.0  # a corner object
    ref = (probability_to_mask(logits_to_probability(logits, size), threshold, feather) * 255 + 0.5).to(torch.uint8)
    got = logits_to_alpha(logits, size, threshold, feather)
    assert got.dtype == torch.uint8 and got.shape == ref.shape
    d = (got.int() - ref.int()).abs()
    assert int(d.max()) <= 1 and float((d > 0).float().mean()) <= 1e-4
    assert not got[0].any()


def test_cut_out_alpha_uint8_matches_the_float_route():
    from torch_backswap.refine import cut_out_alpha
    from torch_backswap.segmenter import PatchSegmenter

    torch.manual_seed(0)
    seg = PatchSegmenter(grid_size=8, input_size=32, width=8).eval()
    images, _, _ = _disc_scene(batch=4, size=48)
    for kw in ({}, {"flip_average": True}, {"refiner": "guided"}):
        ref = cut_out_alpha(seg, images, tight_threshold=0.5, feather=0.2, **kw)
        got = cut_out_alpha(seg, images, tight_threshold=0.5, feather=0.2, dtype=torch.uint8, **kw)
        assert ref.dtype == torch.float32 and got.dtype == torch.uint8
        assert (got.float() - ref * 255).abs().max() <= 1.5  # rounding (0.5) and a rare half-way flip
    with pytest.raises(ValueError, match="dtype"):
        cut_out_alpha(seg, images, tight_threshold=0.5, dtype=torch.float16)
