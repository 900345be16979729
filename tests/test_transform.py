"""BackgroundSwap on synthetic data with known masks.

Scene: a solid-colour square object (FG colour) on a noisy source background; the bank holds solid-colour
backgrounds, each a colour that appears nowhere else. After the swap, wherever the (moved) alpha is 1 the
pixel must be the object's colour (it came from the input), wherever it is 0 the pixel must be the one
bank colour that was sampled (it came from the bank), and no pixel of the noisy source background may
survive.
"""

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from torch_backswap.alpha import ObjectAlpha, ObjectAlphaDataset
from torch_backswap.bank import BackgroundBank
from torch_backswap.functional import move_alpha
from torch_backswap.transform import BackgroundSwapCollate
from torch_backswap.loader import DeviceSwapLoader
from torch_backswap.transform import BackgroundSwap
from torch_backswap.functional import Compositing
from torch_backswap.cutout import CutOut
from torch_backswap.jitter import JitterGenerator

H = W = 32
FG = torch.tensor([250, 250, 0], dtype=torch.uint8)
BANK_COLOURS = torch.tensor([[0, 0, 200], [0, 120, 0], [60, 0, 0], [0, 60, 60]], dtype=torch.uint8)


def _bank():
    bg = BANK_COLOURS[:, :, None, None].expand(-1, -1, H, W).contiguous()
    return BackgroundBank(bg, torch.tensor([0, 0, 1, 1]), classes=["land", "water"])


def _scene(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(100, 200, (b, 3, H, W), dtype=torch.uint8, generator=g)  # noisy source background
    masks = torch.zeros(b, 1, H, W, dtype=torch.bool)
    for i in range(b):
        y0, x0 = 6 + i % 5, 8 + (3 * i) % 7
        masks[i, :, y0 : y0 + 10, x0 : x0 + 12] = True
    images = torch.where(masks, FG[:, None, None], images)
    return images, masks


class _SquareSegmenter(nn.Module):
    """Fake segmenter: logits +/-10 per cell of an 8x8 grid from the object colour (no training needed)."""

    def forward(self, images):
        x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
        fg = ((x[:, 0] > 0.9) & (x[:, 1] > 0.9) & (x[:, 2] < 0.1)).float()[:, None]
        frac = nn.functional.adaptive_avg_pool2d(fg, 8)[:, 0]
        return torch.where(frac > 0.99, 10.0, -10.0)


def _check_swapped(out, moved):
    """out: (B,3,H,W) uint8; moved: (B,1,H,W) alpha of where the object now is."""
    assert out.dtype == torch.uint8 and out.shape[1:] == (3, H, W)
    for i in range(out.shape[0]):
        px = out[i].reshape(3, -1).T
        inside = (moved[i, 0] >= 0.999).flatten()
        outside = (moved[i, 0] <= 0).flatten()
        assert inside.sum() >= 20 and outside.sum() >= 100
        assert torch.all(px[inside] == FG), "foreground pixels must come from the input"
        bg = px[outside]
        assert torch.all(bg == bg[0]), "background pixels must all come from one bank image"
        assert any(torch.equal(bg[0], c) for c in BANK_COLOURS), "background colour must be a bank colour"
        # every pixel is a mix a*FG + (1-a)*bank colour (soft edges) -- no source-background pixel survives
        c, d = bg[0].float(), FG.float() - bg[0].float()
        a = ((px.float() - c) @ d) / (d @ d)
        residual = px.float() - (c + a[:, None] * d)
        assert residual.abs().max() <= 2 and a.min() >= -0.01 and a.max() <= 1.01, "source background leaked"


def _moved(alpha, record):
    return move_alpha(alpha.float(), record)


# ------------------------------------------------------------------------------------------------------
# the swap itself


def test_batch_known_alphas_foreground_from_input_background_from_bank():
    images, masks = _scene(6)
    swap = BackgroundSwap(_bank(), seed=0)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out, record = swap.swap_batch(images, labels, alphas=masks, return_record=True)
    moved = _moved(masks, record)
    _check_swapped(out, moved)
    assert not torch.equal(moved > 0.5, masks)  # the jitter moved the object
    # as a v2 transform on (images, labels, alpha), like CutMix: labels pass through unchanged (same object)
    out2, lab2, alpha2 = swap(images, labels, ObjectAlpha(masks.float()))
    assert out2.shape == images.shape and out2.dtype == torch.uint8 and lab2 is labels
    assert isinstance(alpha2, ObjectAlpha)
    _check_swapped(out2, alpha2.float())


def test_record_is_per_sample_provenance_and_params_replay():
    images, masks = _scene(5)
    bank = _bank()
    swap = BackgroundSwap(bank, seed=4, p=0.6)
    out, record = swap.swap_batch(images, alphas=masks, return_record=True)
    rows = record.to_list()
    assert len(rows) == 5 and swap.last_record is record
    for i, row in enumerate(rows):
        if row["swapped"]:
            assert row["bank_index"] >= 0 and row["background_label"] == int(bank.labels[row["bank_index"]])
            colour = out[i, :, 0, 0] if not masks[i, 0, 0, 0] else None
            assert colour is None or torch.equal(colour, BANK_COLOURS[row["bank_index"]])
        else:
            assert row["bank_index"] == -1 and row["background_label"] == -1
            assert torch.equal(out[i], images[i])
    # replay: the same params give the same bytes, with a swap of another seed
    again = BackgroundSwap(bank, seed=99, p=0.6).swap_batch(images, alphas=masks, params=record.params)
    assert torch.equal(again, out)


def test_segment_on_the_fly_matches_given_alphas():
    images, masks = _scene(4)
    a = BackgroundSwap(_bank(), _SquareSegmenter(), seed=7)
    out_a = a.swap_batch(images)
    assert out_a.shape == images.shape
    px = out_a.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (px == FG).all(dim=1).sum() > 50  # the object was pasted
    alpha = a.segment(images)
    assert alpha.shape == (4, 1, H, W) and alpha.dtype == torch.float32
    assert ((alpha > 0.5) == masks).float().mean() > 0.9


def test_float_input_float_output_and_value_range():
    images, masks = _scene(3)
    f = images.float() / 255
    out, record = BackgroundSwap(_bank(), seed=1).swap_batch(f, alphas=masks, return_record=True)
    assert out.dtype == torch.float32 and out.shape == f.shape
    _check_swapped((out * 255).round().to(torch.uint8), _moved(masks, record))
    # [-1, 1] images with value_range: the same swap, in the caller's range
    g = f * 2 - 1
    out_g = BackgroundSwap(_bank(), seed=1, value_range=(-1, 1)).swap_batch(g, alphas=masks)
    assert torch.allclose((out_g + 1) / 2, out, atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((3, H, W), float("nan")), "NaN"),
        (torch.zeros(3, H, W).index_put_((torch.tensor([0]), torch.tensor([5]), torch.tensor([5])), torch.tensor(float("inf"))), "inf"),
        (torch.rand(3, H, W) * 255, r"0\.\.255"),
        (torch.rand(3, H, W) * 2 - 1, r"\[0, 1\]"),
        (torch.zeros(3, H, W, dtype=torch.int32), "uint8 or floating point"),
        (torch.zeros(2, H, W), "channels"),
        (torch.zeros(1, 2, 3, H, W), "shape"),
    ],
)
def test_bad_images_raise_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)(bad)


def test_single_images_all_types_with_alpha_and_other_parts_in_sample():
    images, masks = _scene(1)
    swap = BackgroundSwap(_bank(), seed=3)
    seg_map = torch.where(masks[0], 7, 3).to(torch.uint8)  # class ids: object 7, background 3
    boxes = tv_tensors.BoundingBoxes([[8, 6, 20, 16]], format="XYXY", canvas_size=(H, W))
    sample = {
        "image": tv_tensors.Image(images[0]),
        "alpha": ObjectAlpha(masks[0].float()),
        "seg": tv_tensors.Mask(seg_map),
        "boxes": boxes,
        "label": 1,
        "meta": "keep",
    }
    out = swap(sample)
    assert isinstance(out["image"], tv_tensors.Image) and isinstance(out["alpha"], ObjectAlpha)
    assert out["label"] == 1 and out["meta"] == "keep" and out["alpha"].dtype == torch.float32
    moved = out["alpha"][None].float()
    _check_swapped(out["image"][None].as_subclass(torch.Tensor), moved)
    seg = out["seg"].as_subclass(torch.Tensor)[0]
    assert isinstance(out["seg"], tv_tensors.Mask) and seg.dtype == torch.uint8
    assert set(seg.unique().tolist()) <= {0, 7}  # the old background's class is gone, the object's moved
    assert torch.equal(seg == 7, moved[0, 0] > 0.5)
    # the box moved with the object: it holds the moved object's box
    ys, xs = torch.nonzero(moved[0, 0] > 0.5, as_tuple=True)
    x0, y0, x1, y1 = out["boxes"][0].tolist()
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes) and out["boxes"].canvas_size == (H, W)
    assert x0 - 1.5 <= xs.min() and xs.max() <= x1 + 1.5 and y0 - 1.5 <= ys.min() and ys.max() <= y1 + 1.5
    # plain tensor + tuple sample, PIL image
    seg_swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=3)
    t, lab = seg_swap((images[0], 1))
    assert type(t) is torch.Tensor and t.shape == (3, H, W) and t.dtype == torch.uint8 and lab == 1
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    out_pil = seg_swap(pil)
    assert isinstance(out_pil, Image.Image) and out_pil.size == (W, H) and out_pil.mode == "RGB"


def test_detection_style_instance_masks_move_with_the_object():
    images, masks = _scene(1)
    inst = torch.zeros(2, H, W, dtype=torch.bool)
    inst[0] = masks[0, 0]
    inst[1, 0:3, 0:3] = True  # something in the old background
    out = BackgroundSwap(_bank(), seed=2)(images[0], ObjectAlpha(masks[0]), tv_tensors.Mask(inst))
    moved, new_inst = out[1], out[2].as_subclass(torch.Tensor)
    assert new_inst.shape == (2, H, W) and new_inst.dtype == torch.bool
    assert torch.equal(new_inst[0], moved.as_subclass(torch.Tensor)[0])
    assert not new_inst[1].any()  # the background object is gone with the old background


@pytest.mark.parametrize("batch", [False, True])
def test_other_masks_move_with_the_segmenters_cut_out(batch):
    """Without an ObjectAlpha the segmenter's cut-out is the object: other masks move exactly as they do with that
    cut-out given as the ObjectAlpha (they used to raise "cannot keep this tv_tensors.Mask consistent")."""
    images, masks = _scene(4)
    image = images if batch else images[0]
    seg_map = tv_tensors.Mask(torch.where(masks[:, 0] if batch else masks[0, 0], 7, 3).to(torch.uint8))
    p = 0.6 if batch else 1.0  # a batch where only some samples swap: the cut-out has one row per swapped sample
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=1, p=p)
    out, out_seg = swap(image, seg_map)
    swapped = swap.last_record.swapped
    assert swapped.any() and (swapped.all() if not batch else not swapped.all())
    cut_out = swap.segment(images if batch else images[:1])
    given = ObjectAlpha(cut_out if batch else cut_out[0])
    out2, moved, out_seg2 = BackgroundSwap(_bank(), seed=1, p=p)(image, given, seg_map)
    # the swap cuts uint8 images out with a uint8 alpha (floor(255 a + 0.5)); segment() returns the float alpha
    # it rounds, so the composites agree to one grey level (the documented uint8 alpha tolerance)
    assert int((out.int() - out2.int()).abs().max()) <= 1 and isinstance(out_seg, tv_tensors.Mask)
    assert torch.equal(out_seg, out_seg2)
    seg = out_seg.as_subclass(torch.Tensor).reshape(-1, H, W)
    moved = moved.as_subclass(torch.Tensor).reshape(-1, H, W)
    orig = seg_map.as_subclass(torch.Tensor).reshape(-1, H, W)
    for i, did in enumerate(swapped.tolist()):
        if did:  # the object's class moved with it, the new background is 0
            assert set(seg[i].unique().tolist()) <= {0, 7} and torch.equal(seg[i] == 7, moved[i] > 0.5)
        else:
            assert torch.equal(seg[i], orig[i])


def test_grayscale_rgba_and_odd_sizes():
    seg = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    gray = torch.randint(0, 256, (1, 20, 28), dtype=torch.uint8)
    assert seg(gray).shape == (1, 20, 28)
    for mode in ("L", "RGBA", "P"):
        assert seg(Image.new(mode, (30, 18))).mode == mode
    assert seg(torch.rand(2, 3, 50, 70)).shape == (2, 3, 50, 70)  # bank resized on the fly
    images, masks = _scene(1)
    rgba = torch.cat([images[0].float() / 255, torch.full((1, H, W), 0.5)])
    out = BackgroundSwap(_bank(), seed=0)(rgba, ObjectAlpha(masks[0]))[0]
    assert out.shape == (4, H, W) and torch.all(out[3] == 1)  # swapped: the new background is opaque
    for size in ((2, 2), (3, 5), (7, 2)):  # tiny and odd sizes: nothing to segment, returned as is
        tiny = torch.randint(100, 200, (3, *size), dtype=torch.uint8)  # never the object colour
        assert torch.equal(seg(tiny), tiny)
    with pytest.raises(ValueError, match="at least 2x2 pixels"):
        seg(torch.zeros(3, 1, 1, dtype=torch.uint8))


@pytest.mark.parametrize(
    "make",
    [
        lambda img: Image.fromarray(img[0].numpy(), mode="L"),
        lambda img: img[:1].clone(),
        lambda img: Image.fromarray(torch.cat([img, torch.full((1, H, W), 77, dtype=torch.uint8)]).permute(1, 2, 0).numpy(), mode="RGBA"),
        lambda img: torch.cat([img, torch.full((1, H, W), 77, dtype=torch.uint8)]),
        lambda img: tv_tensors.Image(img.float() / 255),
    ],
)
def test_unchanged_samples_are_returned_bit_identical(make):
    images, _ = _scene(1)
    image = make(images[0])
    for swap in (BackgroundSwap(_bank(), _SquareSegmenter(), p=0.0), BackgroundSwap(_bank(), lambda x: torch.full((x.shape[0], 8, 8), -10.0))):
        out = swap(image)
        if isinstance(image, Image.Image):
            assert out.mode == image.mode and np.array_equal(np.asarray(out), np.asarray(image))
        else:
            assert type(out) is type(image) and torch.equal(out, image)


def test_channels_last_and_non_contiguous_inputs_give_the_same_result():
    images, masks = _scene(3)
    ref = BackgroundSwap(_bank(), seed=5).swap_batch(images, alphas=masks)
    cl = BackgroundSwap(_bank(), seed=5).swap_batch(images.contiguous(memory_format=torch.channels_last), alphas=masks)
    wide = torch.zeros(3, 3, H, 2 * W, dtype=torch.uint8)
    wide[..., ::2] = images
    nc = BackgroundSwap(_bank(), seed=5).swap_batch(wide[..., ::2], alphas=masks)
    assert torch.equal(ref, cl) and torch.equal(ref, nc)


def test_inside_compose_random_apply_and_random_choice():
    images, _ = _scene(1)
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    swap = BackgroundSwap(_bank(), _SquareSegmenter())
    tail = [v2.RandomResizedCrop(24, scale=(0.7, 1.0)), v2.RandomHorizontalFlip(), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    for head in (swap, v2.RandomApply([swap], p=0.5), v2.RandomChoice([swap, v2.Identity()])):
        out = v2.Compose([head, *tail])(pil)
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_empty_and_speck_foregrounds_leave_every_part_unchanged():
    images, masks = _scene(3)
    assert torch.equal(BackgroundSwap(_bank(), seed=0).swap_batch(images, alphas=torch.zeros_like(masks)), images)
    masks[1] = False
    masks[1, :, 4:6, 4:6] = True  # 4 px of 1024: 0.4 % of the image, below the 1 % default
    out = BackgroundSwap(_bank(), seed=0).swap_batch(images, alphas=masks)
    assert torch.equal(out[1], images[1])
    assert not torch.equal(out[0], images[0]) and not torch.equal(out[2], images[2])
    for m in (masks.to(torch.uint8) * 255, masks.float()):
        assert torch.equal(BackgroundSwap(_bank(), seed=0).swap_batch(images, alphas=m)[1], images[1])
    assert not torch.equal(BackgroundSwap(_bank(), compositing=Compositing(min_foreground=0), seed=0).swap_batch(images, alphas=masks)[1], images[1])
    # a speck sample: the image, its alpha and its other masks all come back as they were
    seg_map = tv_tensors.Mask(masks[1, 0].to(torch.uint8) * 3)
    out_img, out_alpha, out_seg = BackgroundSwap(_bank(), seed=0)(images[1], ObjectAlpha(masks[1]), seg_map)
    assert torch.equal(out_img, images[1]) and torch.equal(out_alpha, masks[1]) and torch.equal(out_seg, seg_map)
    with pytest.raises(ValueError, match="min_foreground"):
        BackgroundSwap(_bank(), compositing=Compositing(min_foreground=1.5))


def test_compositing_backend_picks_the_kernel():
    """``Compositing(backend=)`` reaches composite: "torch" (the default) and "auto" are the same draws, "auto" the
    OpenCV kernel's bytes where cv2 imports."""
    images, masks = _scene(4)
    run = {name: BackgroundSwap(_bank(), compositing=Compositing(backend=name), seed=3).swap_batch(images, alphas=masks)
           for name in ("auto", "torch")}
    assert Compositing().backend == "torch"
    assert torch.equal(BackgroundSwap(_bank(), seed=3).swap_batch(images, alphas=masks), run["torch"])
    assert (run["auto"].int() - run["torch"].int()).abs().max() <= 2
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'cv2'\), got 'fast'"):
        Compositing(backend="fast")
    pytest.importorskip("cv2")
    cv = BackgroundSwap(_bank(), compositing=Compositing(backend="cv2"), seed=3).swap_batch(images, alphas=masks)
    assert torch.equal(cv, run["auto"]) and not torch.equal(cv, run["torch"])


def test_same_seed_same_output_and_p():
    images, masks = _scene(4)
    a = BackgroundSwap(_bank(), seed=11).swap_batch(images, alphas=masks)
    b = BackgroundSwap(_bank(), seed=11).swap_batch(images, alphas=masks)
    c = BackgroundSwap(_bank(), seed=12).swap_batch(images, alphas=masks)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    assert BackgroundSwap(_bank(), generator=g).swap_batch(images, alphas=masks).shape == images.shape
    assert torch.equal(BackgroundSwap(_bank(), p=0.0).swap_batch(images, alphas=masks), images)
    half = BackgroundSwap(_bank(), p=0.5, seed=0).swap_batch(images.repeat(8, 1, 1, 1), alphas=masks.repeat(8, 1, 1, 1))
    same = (half == images.repeat(8, 1, 1, 1)).flatten(1).all(1)
    assert 0 < same.sum() < 32


@pytest.mark.parametrize(
    "labels",
    [[0, 1], np.array([0, 1]), torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.2, 0.8]]), (0, 1)],
    ids=["list", "numpy", "tensor", "soft", "tuple"],
)
def test_other_class_recognises_every_label_form(labels):
    images, masks = _scene(2)
    swap = BackgroundSwap(_bank(), strategy="other_class", seed=0)
    out, record = swap.swap_batch(images, labels, alphas=masks, return_record=True)
    assert record.background_labels.tolist() == [1, 0]  # the other class's backgrounds only
    out2, lab2, _ = swap(images, labels, ObjectAlpha(masks))
    assert lab2 is labels if isinstance(labels, (torch.Tensor, np.ndarray)) else lab2 == labels
    assert swap.last_record.background_labels.tolist() == [1, 0]


def test_label_errors_name_the_argument_and_the_value():
    images, masks = _scene(2)
    oc = BackgroundSwap(_bank(), strategy="other_class", seed=0)
    with pytest.raises(ValueError, match="needs the samples' labels"):
        oc.swap_batch(images, alphas=masks)
    with pytest.raises(ValueError, match=r"whole class indices.*0\.5"):
        oc.swap_batch(images, [0.5, 1.7], alphas=masks)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        oc.swap_batch(images, [0, 1, 1], alphas=masks)
    with pytest.raises(ValueError, match="at least 2 classes"):
        BackgroundSwap(BackgroundBank(torch.zeros(2, 3, H, W, dtype=torch.uint8), torch.tensor([0, 0])), strategy="other_class")


def test_a_mask_target_in_a_tuple_is_not_taken_for_labels():
    images, masks = _scene(1)
    target = masks[0, 0].to(torch.int64) * 4  # an (H, W) segmentation target, a plain tensor
    out, tgt = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)(images[0], target)
    assert out.shape == (3, H, W) and tgt is target


def test_unsupported_parts_raise_clear_errors():
    images, masks = _scene(2)
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    with pytest.raises(TypeError, match=r"only image-like item is a tv_tensors.Video; swap its frames as a batch"):
        swap(tv_tensors.Video(torch.zeros(2, 3, H, W, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="BoundingBoxes.*single images"):
        swap(images, tv_tensors.BoundingBoxes([[0, 0, 4, 4]], format="XYXY", canvas_size=(H, W)))
    with pytest.raises(ValueError, match=r"ObjectAlpha must be \(1, H, W\)"):
        swap(images[0], ObjectAlpha(torch.ones(3, H, W)))
    with pytest.raises(ValueError, match="no cut-out and the sample carries no ObjectAlpha"):
        BackgroundSwap(_bank())(images[0])
    with pytest.raises(ValueError, match="p must be"):
        BackgroundSwap(_bank(), p=2)
    with pytest.raises(TypeError, match="no image"):
        swap({"label": 1})


def test_pickles_and_collate():
    images, masks = _scene(4)
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    clone = pickle.loads(pickle.dumps(swap))
    assert torch.equal(clone.swap_batch(images), BackgroundSwap(_bank(), _SquareSegmenter(), seed=0).swap_batch(images))
    collate = pickle.loads(pickle.dumps(BackgroundSwapCollate(swap)))
    assert isinstance(collate, BackgroundSwapCollate)
    batch = collate([(images[i], i % 2) for i in range(4)])
    assert batch[0].shape == (4, 3, H, W) and batch[1].tolist() == [0, 1, 0, 1]


def test_cuda_segmenter_in_worker_is_one_clear_error(monkeypatch):
    class OnMeta(nn.Module):  # parameters on a non-CPU device without needing a GPU
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, x):  # pragma: no cover - never reached
            raise AssertionError

    swap = BackgroundSwap(_bank(), _SquareSegmenter())
    swap.cut_out = CutOut(OnMeta())
    swap.runtime.cpu_cut_out = swap.cut_out

    class Info:
        id, seed = 1, 123

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Info())
    with pytest.raises(RuntimeError, match="worker 1.*must not use CUDA"):
        swap(torch.zeros(3, H, W, dtype=torch.uint8))


class _SceneDataset(torch.utils.data.Dataset):
    def __init__(self, n=8):
        self.images, self.masks = _scene(n)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": i % 2, "index": i}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_per_sample_and_collate_with_object_alpha_dataset(num_workers):
    bank = _bank().share_memory_()
    swap = BackgroundSwap(bank, seed=0)
    base = _SceneDataset(8)
    ds = ObjectAlphaDataset(base, base.masks.float(), transform=swap)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=num_workers)
    seen = []
    for batch in loader:
        _check_swapped(batch["image"], batch["alpha"].float())
        seen.append(batch["label"])
        assert torch.equal(batch["label"], batch["index"] % 2)
    assert torch.cat(seen).numel() == 8
    # batched: default_collate then one swap of the batch (the alpha travels as an ObjectAlpha batch)
    ds2 = ObjectAlphaDataset(base, base.masks.float())
    loader2 = torch.utils.data.DataLoader(ds2, batch_size=4, num_workers=num_workers, collate_fn=BackgroundSwapCollate(swap))
    for batch in loader2:
        _check_swapped(batch["image"], batch["alpha"].float())
        assert torch.equal(batch["label"], batch["index"] % 2)


def test_workers_get_different_streams():
    images, masks = _scene(1)
    swap = BackgroundSwap(_bank(), jitter=JitterGenerator(scale=(0.6, 1.4)), seed=0)

    class Wrapped(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return swap(images[0], ObjectAlpha(masks[0]))[0]

    torch.manual_seed(0)
    outs = list(torch.utils.data.DataLoader(Wrapped(), batch_size=2, num_workers=2))
    assert not torch.equal(outs[0][0], outs[1][0])  # worker 0 and worker 1: different streams
    torch.manual_seed(0)
    again = list(torch.utils.data.DataLoader(Wrapped(), batch_size=2, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(outs, again))  # reproducible under torch.manual_seed


def test_on_device_is_a_one_line_loader_wrapper_that_swaps():
    images, masks = _scene(4)
    ds = ObjectAlphaDataset([(images[i], i % 2) for i in range(4)], masks.float())
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batches = list(DeviceSwapLoader(loader, BackgroundSwap(_bank(), seed=0), "cpu", alpha=1))
    assert len(batches) == 2
    for (out, alpha, labels), i in zip(batches, (0, 2)):
        assert labels.tolist() == [0, 1] and not torch.equal(out, images[i : i + 2])


def test_refined_cut_out_follows_the_object_edges_better():
    class HalfCells(nn.Module):  # coarse but unbiased: a cell is object when half of it is
        def forward(self, images):
            x = images.float() / 255.0
            fg = ((x[:, 0] > 0.9) & (x[:, 1] > 0.9) & (x[:, 2] < 0.1)).float()[:, None]
            return torch.where(nn.functional.adaptive_avg_pool2d(fg, 8)[:, 0] > 0.5, 6.0, -6.0)

    _, masks = _scene(6)
    images = torch.where(masks, FG[:, None, None], torch.tensor([40, 90, 160], dtype=torch.uint8)[:, None, None])
    kw = dict(feather=0.0, tight_threshold=0.5)
    plain = BackgroundSwap(_bank(), CutOut(HalfCells(), **kw), seed=0).segment(images)
    refined = BackgroundSwap(_bank(), CutOut(HalfCells(), "guided", flip_average=True, **kw), seed=0).segment(images)
    assert refined.shape == plain.shape == (6, 1, H, W)

    def iou(a):
        a = a > 0.5
        return float((a & masks).sum() / (a | masks).sum())

    assert iou(refined) > iou(plain)
    with pytest.raises(ValueError, match="refiner must be one of"):
        CutOut(HalfCells(), "sharpen")


# ------------------------------------------------------------------------------------------------------
# issue 24: defects found trying the package as a user would


@pytest.mark.parametrize("image_hw, alpha_shape", [((64, 64), (1, 32, 32)), ((48, 64), (1, 64, 48)), ((48, 64), (64, 48))])
def test_an_object_alpha_of_another_size_is_refused_never_resized_or_scrambled(image_hw, alpha_shape):
    image = torch.full((3, *image_hw), 255, dtype=torch.uint8)
    alpha = ObjectAlpha(torch.ones(alpha_shape))
    h, w = image_hw
    message = rf"ObjectAlpha must have the image's size \({h}, {w}\).*got shape {re.escape(str(alpha_shape))}"
    with pytest.raises(ValueError, match=message):
        BackgroundSwap(_bank(), seed=0)(image, alpha)
    # swap_batch's alphas (never returned) may be a lower resolution of the image's aspect ratio, not another ratio
    alphas = torch.ones(1, *alpha_shape[-2:])
    if image_hw == (64, 64):
        assert BackgroundSwap(_bank(), seed=0).swap_batch(image[None], alphas=alphas).shape == (1, 3, *image_hw)
    else:
        with pytest.raises(ValueError, match=r"alphas must have the image's aspect ratio \(48, 64\).*\(1, 64, 48\)"):
            BackgroundSwap(_bank(), seed=0).swap_batch(image[None], alphas=alphas)


def test_other_class_finds_the_labels_of_object_alpha_dataset_samples():
    """ObjectAlphaDataset yields (image, ObjectAlpha, label): the default labels_getter skips the alpha and takes
    the label (it read the alpha, so strategy="other_class" failed per sample, in collate_fn and in on_device)."""
    images, masks = _scene(4)
    labels = [0, 1, 1, 0]
    base = [(images[i], labels[i]) for i in range(4)]
    swap = BackgroundSwap(_bank(), strategy="other_class", seed=0)
    per_sample = ObjectAlphaDataset(base, masks.float(), transform=swap)
    for i in range(4):
        out, alpha, label = per_sample[i]
        assert label == labels[i] and swap.last_record.background_labels.tolist() == [1 - labels[i]]
    loader = torch.utils.data.DataLoader(ObjectAlphaDataset(base, masks.float()), batch_size=4,
                                         collate_fn=BackgroundSwapCollate(swap))
    out, alpha, lab = next(iter(loader))
    assert lab.tolist() == labels and swap.last_record.background_labels.tolist() == [1, 0, 0, 1]
    plain = torch.utils.data.DataLoader(ObjectAlphaDataset(base, masks.float()), batch_size=4)
    seg_swap = BackgroundSwap(_bank(), _SquareSegmenter(), strategy="other_class", seed=0)
    for kwargs in ({}, {"alpha": 1}):  # the alpha in the batch left alone, or used
        (out, alpha, lab), = list(DeviceSwapLoader(plain, seg_swap, "cpu", **kwargs))
        assert lab.tolist() == labels and seg_swap.last_record.background_labels.tolist() == [1, 0, 0, 1]


def test_found_labels_must_fit_the_batch_and_the_banks_classes():
    images, masks = _scene(2)
    alpha = ObjectAlpha(masks.float())
    swap = BackgroundSwap(_bank(), seed=0)  # default strategy: the labels are not needed, but are checked
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\).*\[0, 1, 1\]"):
        swap(images, [0, 1, 1], alpha)  # three labels for two images (v2.CutMix raises, too)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        swap({"image": images, "label": torch.tensor([0, 1, 1]), "alpha": alpha})
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        swap(images, 1, alpha)
    with pytest.raises(ValueError, match=r"labels must be classes of the bank, which has 2 classes 0\.\.1 "
                                         r"\['land', 'water'\]; got \[5\] in labels \[0, 5\]"):
        swap(images, [0, 5], alpha)
    with pytest.raises(ValueError, match=r"labels must be classes of the bank.*got \[7\]"):
        BackgroundSwap(_bank(), strategy="other_class", seed=0).swap_batch(images, [7, 0], alphas=masks)
    unnamed = BackgroundBank(BANK_COLOURS[:, :, None, None].expand(-1, -1, H, W).contiguous(), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match=r"bank, which has classes \[0, 2\] \(it has no class names\); got \[1\]"):
        BackgroundSwap(unnamed, seed=0)(images, [1, 2], alpha)
    # labels that fit pass through; a value that is no label (an (H, W) target of one image) is still left alone
    out, lab, _ = swap(images, [1, 0], alpha)
    assert lab == [1, 0]
    target = masks[0, 0].long()
    assert BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)(images[0], target)[1] is target


def test_other_class_without_a_labels_getter_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"strategy='other_class' needs the samples' labels, but labels_getter=None"):
        BackgroundSwap(_bank(), strategy="other_class", labels_getter=None)
    BackgroundSwap(_bank(), strategy="class_balanced", labels_getter=None)


def test_the_first_image_is_swapped_further_images_and_videos_pass_through():
    """Like v2.CutMix / query_chw, the swap takes one image: the first image-like item. A second image or a Video
    in the sample comes back as it was (both raised a TypeError / ValueError)."""
    images, masks = _scene(2)
    video = tv_tensors.Video(images[None].clone())
    second = tv_tensors.Image(images[1])
    for sample in ((tv_tensors.Image(images[0]), second, 1), (tv_tensors.Image(images[0]), video, 1),
                   {"image": Image.fromarray(images[0].permute(1, 2, 0).numpy()), "video": video, "label": 1}):
        swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
        out = swap(sample)
        first, rest = (out["image"], [out["video"]]) if isinstance(out, dict) else (out[0], [out[1]])
        assert swap.last_record.swapped.tolist() == [True]
        ref = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)(images[0])
        got = torch.from_numpy(np.array(first)).permute(2, 0, 1) if isinstance(first, Image.Image) else first
        assert torch.equal(got.as_subclass(torch.Tensor), ref)
        original = sample["video"] if isinstance(sample, dict) else sample[1]
        assert all(r is original for r in rest)


@pytest.mark.parametrize("kind", ["tensor", "tv_image", "batch", "pil"])
def test_unswapped_inputs_are_returned_as_is_swapped_ones_are_new(kind):
    """The documented convention, torchvision's: an input of which nothing is swapped comes back as the same object
    (not a copy), so an in-place step after it writes to the caller's tensor, as after a RandomHorizontalFlip that
    did not flip; a swapped output never shares memory with the input."""
    images, masks = _scene(2)
    make = {"tensor": lambda: images[0].clone(), "tv_image": lambda: tv_tensors.Image(images[0].clone()),
            "batch": lambda: images.clone(), "pil": lambda: Image.fromarray(images[0].permute(1, 2, 0).numpy())}[kind]
    flip = v2.RandomHorizontalFlip(p=0.0)
    for unswapped in (BackgroundSwap(_bank(), _SquareSegmenter(), p=0.0),
                      BackgroundSwap(_bank(), lambda x: torch.full((x.shape[0], 8, 8), -10.0))):
        image = make()
        assert unswapped(image) is image and flip(image) is image
    image = make()
    kept = np.array(image) if kind == "pil" else image.clone()
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0, p=0.5 if kind == "batch" else 1.0)
    out = swap(image)
    assert out is not image and swap.last_record.swapped.any()
    if kind == "pil":
        assert np.array_equal(np.array(image), kept)
        return
    if kind == "batch":
        assert not swap.last_record.swapped.all()  # a partly swapped batch: a new tensor, too
    out.as_subclass(torch.Tensor).fill_(0)  # an in-place step after the swap
    assert torch.equal(image, kept)


def test_make_params_is_plain_data_and_transform_does_the_pixels():
    """Issue 26: torchvision's contract: make_params composites nothing; transform does each kind's pixel work, in
    whatever order the sample lists its items (a mask before the image)."""
    from torchvision import tv_tensors

    bank = _bank()
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    alpha = torch.zeros(1, 32, 32)
    alpha[:, 8:24, 8:24] = 1
    mask = tv_tensors.Mask((alpha > 0).to(torch.uint8) * 3)
    swap = BackgroundSwap(bank, compositing=Compositing(min_foreground=0.0), seed=1)
    sample = {"mask": mask, "alpha": ObjectAlpha(alpha), "image": tv_tensors.Image(image)}
    out = swap(sample)
    params = BackgroundSwap(bank, compositing=Compositing(min_foreground=0.0), seed=1).make_params(
        [sample["mask"], sample["alpha"], sample["image"]], labels=None, labels_explicit=False)
    assert set(params) >= {"params", "alpha", "record"}
    assert params["image"] is sample["image"]  # which item is the image: the input itself, no composite
    assert not any(isinstance(v, torch.Tensor) and v.shape[-3:] == (3, 32, 32) for k, v in params.items() if k != "image")
    assert torch.equal(params["record"].matrices, swap.last_record.matrices)
    again = BackgroundSwap(bank, compositing=Compositing(min_foreground=0.0), seed=1)
    fresh = again.make_params([sample["mask"], sample["alpha"], sample["image"]], labels=None, labels_explicit=False)
    for key in ("mask", "alpha", "image"):
        assert torch.equal(again.transform(sample[key], fresh), out[key]), key
    assert bool(swap.last_record.swapped.all()) and not torch.equal(out["image"], sample["image"])
    assert int(out["mask"].max()) == 3


def test_swap_params_round_trip_through_json_and_replay_bit_identically():
    """Issue 26: a logged record replays: SwapParams.to_dict() is JSON, from_dict() gives the same swap."""
    import json

    from torch_backswap.functional import SwapParams

    images, masks = _scene(6, seed=3)
    swap = BackgroundSwap(_bank(), seed=7, p=0.7)
    out = swap.swap_batch(images, alphas=masks)
    logged = json.dumps(swap.last_record.params.to_dict())
    params = SwapParams.from_dict(json.loads(logged))
    original = swap.last_record.params
    assert torch.equal(params.apply, original.apply) and torch.equal(params.bank_indices, original.bank_indices)
    for name in ("scale", "angle", "translate"):
        assert torch.equal(getattr(params.jitter, name), getattr(original.jitter, name))
    replayed = BackgroundSwap(_bank(), seed=123).swap_batch(images, alphas=masks, params=params)
    assert torch.equal(replayed, out)
