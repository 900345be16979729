"""BackgroundSwap on synthetic data with known masks.

Scene: a solid-colour square object (FG colour) on a noisy source background; the bank holds solid-colour
backgrounds, each a colour that appears nowhere else. After the swap, wherever the (moved) alpha is 1 the
pixel must be the object's colour (it came from the input), wherever it is 0 the pixel must be the one
bank colour that was sampled (it came from the bank), and no pixel of the noisy source background may
survive.
"""

import pickle

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from torch_backswap.bank import BackgroundBank
from torch_backswap.transform import BackgroundSwap, BackgroundSwapCollate

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


def _check_swapped(out, moved, labels_in=None, labels_out=None):
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
    if labels_in is not None:
        assert torch.equal(labels_in, labels_out)


def test_batch_known_masks_foreground_from_input_background_from_bank():
    images, masks = _scene(6)
    swap = BackgroundSwap(_bank(), seed=0)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out, moved = swap.swap_batch(images, labels, masks=masks, return_masks=True)
    _check_swapped(out, moved)
    # the object really moved/scaled somewhere for at least one sample (jitter is on)
    assert not torch.equal(moved > 0.5, masks)
    # as a v2 transform on (images, labels), like CutMix/MixUp: labels pass through unchanged
    out2, lab2, mask2 = swap(images, labels, tv_tensors.Mask(masks.float()))
    assert out2.shape == images.shape and out2.dtype == torch.uint8 and lab2 is labels
    _check_swapped(out2, mask2.float())


def test_segment_on_the_fly_matches_given_masks():
    images, masks = _scene(4)
    a = BackgroundSwap(_bank(), _SquareSegmenter(), seed=7)
    b = BackgroundSwap(_bank(), seed=7, feather=0.1)
    out_a = a.swap_batch(images)
    # the fake segmenter yields a smooth tight mask; its core must still be the input's object colour
    assert out_a.shape == images.shape
    out_b, moved = b.swap_batch(images, masks=masks, return_masks=True)
    _check_swapped(out_b, moved)
    px = out_a.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (px == FG).all(dim=1).sum() > 50  # the object was pasted


def test_float_input_float_output():
    images, masks = _scene(3)
    swap = BackgroundSwap(_bank(), seed=1)
    f = images.float() / 255
    out, moved = swap.swap_batch(f, masks=masks, return_masks=True)
    assert out.dtype == torch.float32 and out.shape == f.shape
    _check_swapped((out * 255).round().to(torch.uint8), moved)
    with pytest.raises(ValueError, match="NaN"):
        swap(torch.full((3, H, W), float("nan")))


def test_single_images_all_types_with_mask_in_sample():
    images, masks = _scene(1)
    swap = BackgroundSwap(_bank(), seed=3)
    sample = {"image": tv_tensors.Image(images[0]), "mask": tv_tensors.Mask(masks[0].float()), "label": 1, "meta": "keep"}
    out = swap(sample)
    assert isinstance(out["image"], tv_tensors.Image) and isinstance(out["mask"], tv_tensors.Mask)
    assert out["label"] == 1 and out["meta"] == "keep" and out["mask"].dtype == torch.float32
    _check_swapped(out["image"][None].as_subclass(torch.Tensor), out["mask"][None].float())
    # plain tensor + tuple sample, PIL image
    seg = BackgroundSwap(_bank(), _SquareSegmenter(), seed=3)
    t, lab = seg((images[0], 5))
    assert type(t) is torch.Tensor and t.shape == (3, H, W) and t.dtype == torch.uint8 and lab == 5
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    out_pil = seg(pil)
    assert isinstance(out_pil, Image.Image) and out_pil.size == (W, H) and out_pil.mode == "RGB"


def test_grayscale_rgba_and_odd_sizes():
    seg = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    gray = torch.randint(0, 256, (1, 20, 28), dtype=torch.uint8)
    assert seg(gray).shape == (1, 20, 28)
    rgba = torch.rand(4, 40, 24)
    out = seg(rgba)
    assert out.shape == (4, 40, 24) and out.dtype == torch.float32 and torch.all(out[3] == 1)
    for mode in ("L", "RGBA", "P"):
        assert seg(Image.new(mode, (30, 18))).mode == mode
    assert seg(torch.rand(2, 3, 50, 70)).shape == (2, 3, 50, 70)  # bank resized on the fly


def test_compose_with_random_resized_crop_on_pil():
    images, _ = _scene(1)
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    tf = v2.Compose(
        [
            BackgroundSwap(_bank(), _SquareSegmenter()),
            v2.RandomResizedCrop(24, scale=(0.7, 1.0)),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    out = tf(pil)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_empty_foreground_returns_image_unchanged():
    images, masks = _scene(2)
    swap = BackgroundSwap(_bank(), seed=0)
    out = swap.swap_batch(images, masks=torch.zeros_like(masks))
    assert torch.equal(out, images)
    blank = torch.zeros(3, H, W, dtype=torch.uint8)
    assert torch.equal(BackgroundSwap(_bank(), _SquareSegmenter())(blank), blank)


def test_speck_of_foreground_is_left_unchanged_but_real_objects_swap():
    images, masks = _scene(3)
    masks[1] = False
    masks[1, :, 4:6, 4:6] = True  # 4 px of 1024: 0.4 % of the image, below the 1 % default
    out = BackgroundSwap(_bank(), seed=0).swap_batch(images, masks=masks)
    assert torch.equal(out[1], images[1])
    assert not torch.equal(out[0], images[0]) and not torch.equal(out[2], images[2])
    # the same speck as uint8 0/255 and float alpha, and with the guard disabled
    for m in (masks.to(torch.uint8) * 255, masks.float()):
        assert torch.equal(BackgroundSwap(_bank(), seed=0).swap_batch(images, masks=m)[1], images[1])
    assert not torch.equal(BackgroundSwap(_bank(), seed=0, min_foreground=0).swap_batch(images, masks=masks)[1], images[1])
    with pytest.raises(ValueError, match="min_foreground"):
        BackgroundSwap(_bank(), min_foreground=1.5)


def test_same_seed_same_output_and_p():
    images, masks = _scene(4)
    a = BackgroundSwap(_bank(), seed=11).swap_batch(images, masks=masks)
    b = BackgroundSwap(_bank(), seed=11).swap_batch(images, masks=masks)
    c = BackgroundSwap(_bank(), seed=12).swap_batch(images, masks=masks)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    d = BackgroundSwap(_bank(), generator=g).swap_batch(images, masks=masks)
    assert d.shape == images.shape
    assert torch.equal(BackgroundSwap(_bank(), p=0.0).swap_batch(images, masks=masks), images)
    half = BackgroundSwap(_bank(), p=0.5, seed=0).swap_batch(images.repeat(8, 1, 1, 1), masks=masks.repeat(8, 1, 1, 1))
    same = (half == images.repeat(8, 1, 1, 1)).flatten(1).all(1)
    assert 0 < same.sum() < 32


def test_mask_cache_by_index():
    images, masks = _scene(5)
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    cache = swap.cache_masks(images, batch_size=2, progress=False)
    assert cache.shape == (5, 1, H, W) and cache.dtype == torch.uint8
    out = swap({"image": images[2], "index": 2, "label": 0})
    assert out["image"].shape == (3, H, W) and out["index"] == 2
    direct = BackgroundSwap(_bank(), seed=0, masks=masks)
    out2, moved = direct.swap_batch(images[:3], indices=[0, 1, 2], return_masks=True)
    _check_swapped(out2, moved)


def test_bad_inputs():
    images, masks = _scene(2)
    single = BackgroundBank(torch.zeros(2, 3, H, W, dtype=torch.uint8), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        BackgroundSwap(single, strategy="other_class")
    oc = BackgroundSwap(_bank(), strategy="other_class", seed=0)
    with pytest.raises(ValueError, match="labels"):
        oc.swap_batch(images, masks=masks)
    out, moved = oc.swap_batch(images, torch.tensor([0, 1]), masks=masks, return_masks=True)
    _check_swapped(out, moved)
    for i, allowed in ((0, BANK_COLOURS[2:]), (1, BANK_COLOURS[:2])):  # the other class's backgrounds only
        outside = moved[i, 0] <= 0
        colour = out[i][:, outside][:, 0]
        assert any(torch.equal(colour, c) for c in allowed)
    with pytest.raises(ValueError, match="no segmenter"):
        BackgroundSwap(_bank())(images[0])
    with pytest.raises(ValueError, match="p must be"):
        BackgroundSwap(_bank(), p=2)
    with pytest.raises(ValueError, match="channels"):
        BackgroundSwap(_bank(), _SquareSegmenter())(torch.zeros(2, H, W))
    with pytest.raises(TypeError, match="no image"):
        BackgroundSwap(_bank(), _SquareSegmenter())({"label": 1})


def test_pickles_and_collate():
    images, masks = _scene(4)
    swap = BackgroundSwap(_bank(), _SquareSegmenter(), seed=0)
    clone = pickle.loads(pickle.dumps(swap))
    assert torch.equal(clone.swap_batch(images), BackgroundSwap(_bank(), _SquareSegmenter(), seed=0).swap_batch(images))
    collate = pickle.loads(pickle.dumps(swap.collate_fn))
    assert isinstance(collate, BackgroundSwapCollate)
    batch = collate([(images[i], i) for i in range(4)])
    assert batch[0].shape == (4, 3, H, W) and batch[1].tolist() == [0, 1, 2, 3]


def test_cuda_segmenter_in_worker_is_one_clear_error(monkeypatch):
    class OnMeta(nn.Module):  # parameters on a non-CPU device without needing a GPU
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, x):  # pragma: no cover - never reached
            raise AssertionError

    swap = BackgroundSwap(_bank(), _SquareSegmenter())
    swap.segmenter = OnMeta()
    swap._cpu_segmenter = [swap.segmenter]
    import torch_backswap.transform as tmod

    class Info:
        id, seed = 1, 123

    monkeypatch.setattr(tmod.torch.utils.data, "get_worker_info", lambda: Info())
    with pytest.raises(RuntimeError, match="worker 1.*must not use CUDA"):
        swap(torch.zeros(3, H, W, dtype=torch.uint8))


class _SceneDataset(torch.utils.data.Dataset):
    def __init__(self, n=8, transform=None):
        self.images, self.masks = _scene(n)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        sample = {"image": self.images[i], "mask": tv_tensors.Mask(self.masks[i].float()), "label": i % 2, "index": i}
        return self.transform(sample) if self.transform is not None else sample


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_per_sample_and_collate(num_workers):
    bank = _bank().share_memory_()
    swap = BackgroundSwap(bank, seed=0)
    ds = _SceneDataset(8, transform=swap)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=num_workers)
    seen = []
    for batch in loader:
        _check_swapped(batch["image"], batch["mask"].float())
        seen.append(batch["label"])
        assert torch.equal(batch["label"], batch["index"] % 2)
    assert torch.cat(seen).numel() == 8
    # batched: default_collate then one swap of the batch (masks travel as a tv_tensors.Mask batch)
    ds2 = _SceneDataset(8)
    loader2 = torch.utils.data.DataLoader(ds2, batch_size=4, num_workers=num_workers, collate_fn=swap.collate_fn)
    for batch in loader2:
        _check_swapped(batch["image"], batch["mask"].float())
        assert torch.equal(batch["label"], batch["index"] % 2)


def test_workers_get_different_streams():
    images, masks = _scene(1)

    class Same(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": images[0], "mask": tv_tensors.Mask(masks[0].float())}

    swap = BackgroundSwap(_bank(), seed=0, scale=(0.6, 1.4))
    ds = Same()

    class Wrapped(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return swap(ds[i])["image"]

    torch.manual_seed(0)
    outs = list(torch.utils.data.DataLoader(Wrapped(), batch_size=2, num_workers=2))
    # worker 0 produced batch 0, worker 1 batch 1: different streams -> different first samples
    assert not torch.equal(outs[0][0], outs[1][0])
    torch.manual_seed(0)
    again = list(torch.utils.data.DataLoader(Wrapped(), batch_size=2, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(outs, again))  # reproducible under torch.manual_seed
