"""The float paths against their stored reference, within tolerances any CPU stays inside, and by what they mean.

Each case is checked twice:

* **against the reference** (``tests/data/numeric_reference.*``, written by ``tests/_numeric_reference.py``):
  integer-only results (which samples swap, bank indices, background classes, bank labels) bit for bit;
  float results within :data:`_numeric_reference.TOLERANCES` (the comments there give the spread measured
  across SIMD levels and thread counts, and why each bound is safe);
* **by its meaning**, with no stored figure at all: the swapped image is the bank's background wherever the
  moved alpha is 0 and the moved object wherever it is 1, unswapped samples are untouched, the bank has the
  object removed and the rest of the photo kept, fine-tuning raises balanced accuracy. A pipeline that returns
  its input, fills nothing, or skips training fails these whatever the reference says.
"""

from __future__ import annotations

import json

import pytest
import torch
from _numeric_reference import (
    REFERENCE_JSON,
    REFERENCE_TENSORS,
    TOLERANCES,
    block_means,
    finetune_runs,
    flat_weights,
    segmenter_swaps,
    stampbirds_runs,
    swap_runs,
)
from kornia.geometry.transform import warp_affine
from safetensors.torch import load_file

from torch_backswap.composite import soft_alpha
from torch_backswap.functional import move_alpha
from torch_backswap.segmenter import PatchSegmenter

FIGURES = json.loads(REFERENCE_JSON.read_text())
TENSORS = load_file(str(REFERENCE_TENSORS))


def assert_uint8_close(got: torch.Tensor, expected: torch.Tensor, tolerance: tuple[int, float]) -> None:
    """At most ``fraction`` of the values differ, none by more than ``max_diff`` grey levels."""
    max_diff, fraction = tolerance
    assert got.dtype == expected.dtype == torch.uint8 and got.shape == expected.shape
    diff = (got.int() - expected.int()).abs()
    assert int(diff.max()) <= max_diff, f"max difference {int(diff.max())} > {max_diff}"
    share = float((diff > 0).double().mean())
    assert share <= fraction, f"{share:.5f} of the values differ (allowed {fraction})"


def assert_swap_means_swap(out, images, alpha, record, bank, *, fg_levels: float) -> None:
    """The composite's meaning: background where the moved alpha is 0, the moved object where it is 1, and the
    input untouched where nothing was swapped. ``fg_levels``: allowed resampling difference, in grey levels."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    swapped = record.swapped
    assert bool(swapped.any()), "nothing was swapped"
    assert torch.equal(out[~swapped], images[~swapped])
    moved = move_alpha(alpha.float(), record)
    backgrounds = bank.backgrounds[record.bank_indices.clamp(min=0)].to(out.dtype)
    if out.dtype != torch.uint8:
        backgrounds = backgrounds / 255.0
    warped = warp_affine(images.float() / scale, record.matrices, tuple(images.shape[-2:]), mode="bilinear",
                         align_corners=True) * scale
    for i in swapped.nonzero().flatten().tolist():
        bg_px = (moved[i, 0] == 0).expand_as(out[i])
        fg_px = (moved[i, 0] >= 1 - 1e-6).expand_as(out[i])
        assert bg_px.float().mean() > 0.3 and fg_px.any(), f"sample {i}: degenerate alpha"
        # background pixels: the bank's bytes (uint8 exactly; float to rounding)
        torch.testing.assert_close(out[i][bg_px].float() * (255 / scale), backgrounds[i][bg_px].float() * (255 / scale),
                                   atol=1e-4, rtol=0)
        # the object's pixels: the input, moved by the record's matrix
        fg_diff = (out[i][fg_px].float() - warped[i][fg_px]).abs() * (255 / scale)
        assert float(fg_diff.max()) <= fg_levels, f"sample {i}: object pixels off by {float(fg_diff.max()):.2f}"
        # and the new background really is another image than the old one
        assert not torch.equal(out[i], images[i])


def _on_one_thread(compute):
    """``compute()`` on one torch thread (module-scoped fixtures run outside the per-test state restore)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compute()
    finally:
        torch.set_num_threads(threads)


# -- the swap with given alphas ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swaps():
    return swap_runs()


@pytest.mark.parametrize("name", ["given_masks_uint8", "given_masks_p05_other_class", "given_masks_float_feather"])
def test_swap_with_given_alphas(swaps, name):
    swap, images, masks, labels, out = swaps[name]
    record = swap.last_record
    # integer-only: which samples swap, from which bank row and class (seeded integer draws): bit for bit
    expected = FIGURES["swap"][name]
    assert record.swapped.tolist() == expected["swapped"]
    assert record.bank_indices.tolist() == expected["bank_indices"]
    assert record.background_labels.tolist() == expected["background_labels"]
    # the pixels: within the tolerance of float warps
    reference = TENSORS[f"swap.{name}"]
    if out.dtype == torch.uint8:
        assert_uint8_close(out, reference, TOLERANCES["swap_uint8"])
    else:
        torch.testing.assert_close(out, reference, **TOLERANCES["swap_float"])
    # and what they mean
    alpha = soft_alpha(masks, swap.compositing.feather_px) if swap.compositing.feather_px else masks
    assert_swap_means_swap(out, images, alpha, record, swap.bank, fg_levels=1.0)
    if swap.strategy == "other_class":
        s = record.swapped
        assert bool((record.background_labels[s] != labels[s]).all())


@pytest.mark.parametrize("name", ["given_masks_uint8", "given_masks_p05_other_class"])
def test_swap_with_given_alphas_on_opencv(name):
    """The uint8 swaps composited by OpenCV: the same draws, the reference's pixels within OpenCV's tolerance, and
    the same meaning."""
    pytest.importorskip("cv2")
    swap, images, masks, labels, out = _on_one_thread(lambda: swap_runs("cv2"))[name]
    record = swap.last_record
    assert record.swapped.tolist() == FIGURES["swap"][name]["swapped"]
    assert record.bank_indices.tolist() == FIGURES["swap"][name]["bank_indices"]
    assert_uint8_close(out, TENSORS[f"swap.{name}"], TOLERANCES["swap_uint8_cv2"])
    assert_swap_means_swap(out, images, masks, record, swap.bank, fg_levels=1.0)


# -- the bundled segmenter on StampBirds: logits, banks, on-the-fly swaps -----------------------------------


@pytest.fixture(scope="module")
def stampbirds():
    return _on_one_thread(stampbirds_runs)


def test_segmenter_logits(stampbirds):
    torch.testing.assert_close(stampbirds["logits"], TENSORS["segmenter.logits"], **TOLERANCES["logits"])


@pytest.mark.parametrize("route", ["paper", "edge"])
def test_bank_removes_the_object_and_keeps_the_photo(stampbirds, route):
    data, bank = stampbirds["data"], stampbirds[f"{route}_bank"]
    assert bank.labels.tolist() == FIGURES[f"bank_{route}_labels"] == data.labels.tolist()
    torch.testing.assert_close(block_means(bank.backgrounds, 8), TENSORS[f"bank.{route}.block_means"],
                               **TOLERANCES["bank_block_means"])
    # meaning: under the bird the bank is much closer to the true background than the photo with the bird was
    images, truth, bg = data.images.float(), data.alpha > 0.5, data.true_backgrounds.float()
    on_bird = truth.expand_as(images)
    before = (images - bg).abs()[on_bird].mean()
    after = (bank.backgrounds.float() - bg).abs()[on_bird].mean()
    assert after < 0.6 * before, f"{route}: |bank - true background| {after:.1f} vs photo {before:.1f} on the bird"
    # ... and far from the bird the photo is kept byte for byte
    near = F_max_pool(truth.float(), 9) > 0
    far = (~near).expand_as(images)
    kept = (bank.backgrounds == data.images)[far].float().mean()
    assert kept > 0.9, f"{route}: only {kept:.3f} of the pixels far from the bird kept"


def F_max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)


@pytest.mark.parametrize("route", ["paper", "edge"])
def test_swap_segmenting_on_the_fly(stampbirds, route):
    swap, out = stampbirds[f"{route}_swap"]
    data = stampbirds["data"]
    assert_uint8_close(out, TENSORS[f"swap.{route}_segmenter"], TOLERANCES["segmenter_swap_uint8"])
    images = data.images[:12]
    alpha = swap.segment(images)
    assert_swap_means_swap(out, images, alpha, swap.last_record, swap.bank, fg_levels=1.0)


@pytest.mark.parametrize("route", ["paper", "edge"])
def test_swap_segmenting_on_the_fly_on_opencv(stampbirds, route):
    """On-the-fly swaps composited by OpenCV: threshold flips as allowed for the torch kernel (values more than 2
    levels off), OpenCV's tolerance for the rest, and the same meaning."""
    pytest.importorskip("cv2")
    data = stampbirds["data"]
    runs = _on_one_thread(lambda: segmenter_swaps(data, stampbirds["segmenter"], stampbirds["paper_bank"],
                                                  stampbirds["edge_bank"], "cv2"))
    swap, out = runs[f"{route}_swap"]
    reference = TENSORS[f"swap.{route}_segmenter"]
    assert_uint8_close(out, reference, (255, TOLERANCES["swap_uint8_cv2"][1]))
    flips = float(((out.int() - reference.int()).abs() > TOLERANCES["swap_uint8_cv2"][0]).double().mean())
    assert flips <= TOLERANCES["segmenter_swap_uint8"][1], f"{flips:.5f} of the values differ by more than 2 levels"
    images = data.images[:12]
    assert_swap_means_swap(out, images, swap.segment(images), swap.last_record, swap.bank, fg_levels=1.0)


def test_edge_route_alpha(stampbirds):
    alpha = stampbirds["edge_alpha"]
    torch.testing.assert_close(block_means(alpha, 4), TENSORS["edge.alpha_block_means"],
                               **TOLERANCES["alpha_block_means"])
    truth = stampbirds["data"].alpha[:8] > 0.5
    hit = ((alpha > 0.5) & truth).sum() / ((alpha > 0.5) | truth).sum()
    assert hit > 0.5, f"the edge route's cut-out overlaps the true bird at IoU {hit:.3f}"


# -- fine-tuning ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned():
    return _on_one_thread(finetune_runs)


@pytest.mark.parametrize("name", ["scratch_adamw_val", "given_sgd_no_val"])
def test_finetune_matches_reference(finetuned, name):
    model, history = finetuned[name][:2]
    torch.testing.assert_close(flat_weights(model), TENSORS[f"finetune.{name}.weights"],
                               **TOLERANCES["finetune_weights"])
    expected = FIGURES["finetune"][name]
    assert len(history) == len(expected)
    for got, want in zip(history, expected):
        assert {k: got[k] for k in ("epoch", "lr", "best")} == {k: want[k] for k in ("epoch", "lr", "best")}
        for key in ("train_loss", "val_loss"):
            if want[key] is None:
                assert got[key] is None
            else:
                torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]),
                                           **TOLERANCES["finetune_loss"])
        for key in ("val_balanced_accuracy", "val_cell_iou"):  # ratios of cell counts
            assert got[key] == (None if want[key] is None else pytest.approx(want[key], abs=1e-6))


def test_finetuning_improves_the_segmenter(finetuned):
    _, history, images, labels = finetuned["scratch_adamw_val"]
    losses = [h["train_loss"] for h in history]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert history[-1]["val_balanced_accuracy"] >= 0.85 > history[0]["val_balanced_accuracy"]

    # the given model after two SGD epochs: not yet separating the cells, but its per-cell loss on the labels fell
    model, history, images, labels = finetuned["given_sgd_no_val"]
    before = PatchSegmenter(grid_size=4, input_size=32, width=8)
    before.load_state_dict(finetuned["given_before"])
    target = labels.grids.float()
    loss_before = torch.nn.functional.binary_cross_entropy_with_logits(before.predict_logits(images), target)
    loss_after = torch.nn.functional.binary_cross_entropy_with_logits(model.predict_logits(images), target)
    assert loss_after < 0.9 * loss_before, (float(loss_before), float(loss_after))
    assert history[1]["train_loss"] < history[0]["train_loss"]
