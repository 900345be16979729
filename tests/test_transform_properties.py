"""Property-based invariants of BackgroundSwap (hypothesis): labels never change, p=0 is the identity, without
jitter every object pixel comes from the input and every background pixel from the bank, and other masks and
boxes stay aligned with the moved object."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from torch_backswap import BackgroundBank, BackgroundSwap, ObjectAlpha
from torch_backswap.functional import Compositing
from torch_backswap.jitter import JitterGenerator

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw):
    h = draw(st.integers(8, 40))
    w = draw(st.integers(8, 40))
    b = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    alpha = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for i in range(b):
        y0 = draw(st.integers(0, h // 2))
        x0 = draw(st.integers(0, w // 2))
        alpha[i, :, y0 : y0 + draw(st.integers(2, h // 2)), x0 : x0 + draw(st.integers(2, w // 2))] = True
    bank = BackgroundBank(torch.randint(0, 256, (4, 3, h, w), generator=g, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    labels = [draw(st.integers(0, 1)) for _ in range(b)]
    return images, alpha, bank, labels, seed


@SETTINGS
@given(scenes())
def test_labels_never_change(scene):
    images, alpha, bank, labels, seed = scene
    out = BackgroundSwap(bank, seed=seed, strategy="other_class")(images, list(labels), ObjectAlpha(alpha))
    assert out[1] == labels


@SETTINGS
@given(scenes(), st.sampled_from(["uint8", "float", "gray", "rgba"]))
def test_p_zero_is_the_identity(scene, kind):
    images, alpha, bank, labels, seed = scene
    x = {"uint8": images, "float": images.float() / 255, "gray": images[:, :1], "rgba": torch.cat([images, images[:, :1]], 1)}[kind]
    out = BackgroundSwap(bank, seed=seed, p=0.0)(x, torch.tensor(labels), ObjectAlpha(alpha))
    assert torch.equal(out[0], x) and torch.equal(out[2], alpha)


@SETTINGS
@given(scenes())
def test_without_jitter_object_pixels_from_input_background_from_bank(scene):
    images, alpha, bank, labels, seed = scene
    swap = BackgroundSwap(bank, jitter=JitterGenerator(scale=1.0, degrees=0.0, translate_px=0.0), compositing=Compositing(min_foreground=0.0), seed=seed)
    out, record = swap.swap_batch(images, labels, alphas=alpha, return_record=True)
    backgrounds = bank.backgrounds[record.bank_indices]
    expected = torch.where(alpha, images, backgrounds)
    assert torch.equal(out, expected)


@SETTINGS
@given(scenes())
def test_masks_and_boxes_stay_aligned_with_the_moved_object(scene):
    images, alpha, bank, labels, seed = scene
    swap = BackgroundSwap(bank, compositing=Compositing(min_foreground=0.0, interpolation="nearest"), seed=seed)
    ys, xs = torch.nonzero(alpha[0, 0], as_tuple=True)
    box = tv_tensors.BoundingBoxes(
        [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], format="XYXY", canvas_size=tuple(images.shape[-2:])
    )
    mask = tv_tensors.Mask(alpha[0, 0].to(torch.uint8) * 5)
    _, moved, new_mask, new_box = swap(images[0], ObjectAlpha(alpha[0]), mask, box)
    moved = moved.as_subclass(torch.Tensor)[0]
    assert torch.equal(new_mask.as_subclass(torch.Tensor) == 5, moved)
    if moved.any():
        ys, xs = torch.nonzero(moved, as_tuple=True)
        x0, y0, x1, y1 = new_box[0].tolist()
        assert x0 - 1 <= xs.min() and xs.max() <= x1 and y0 - 1 <= ys.min() and ys.max() <= y1
