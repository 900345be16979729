import pickle

import pytest
import torch
from torch import nn

from torch_backswap.inpaint import (
    INPAINTERS,
    GrayFill,
    ModuleInpainter,
    PyramidInpainter,
    get_inpainter,
    push_pull,
)


def _scene(b=4, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, (yy + xx) / 2])[None].repeat(b, 1, 1, 1)
    tex = torch.rand(b, 3, h, w, generator=g) - 0.5
    images = (0.15 + 0.7 * base + 0.2 * tex).clamp(0, 1)
    holes = torch.zeros(b, 1, h, w, dtype=torch.bool)
    holes[:, :, 10:30, 14:34] = True
    return images, holes


@pytest.mark.parametrize("name", sorted(INPAINTERS))
def test_protocol_for_every_inpainter(name):
    images, holes = _scene()
    holes[1] = True  # all hole
    holes[2] = False  # no hole
    inp = get_inpainter(name)
    out = inp(images, holes)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    known = ~holes.expand_as(images)
    assert torch.equal(out[known], images[known])  # visible pixels exact
    assert torch.equal(out[2], images[2])  # no hole -> unchanged
    # float holes (> 0.5 = hole) behave like bool holes, uint8 images come back uint8
    assert torch.equal(inp(images, holes.float()), out)
    u8 = inp((images * 255).round().to(torch.uint8), holes)
    assert u8.dtype == torch.uint8 and u8.shape == images.shape
    pickle.loads(pickle.dumps(inp))


def test_all_hole_is_grey_for_deterministic_fills():
    images, holes = _scene(b=2)
    holes[:] = True
    for name in ("pyramid", "mean", "scramble_pixels", "scramble_patches"):
        out = get_inpainter(name)(images, holes)
        assert torch.allclose(out, torch.full_like(out, 0.5)), name


def test_pyramid_beats_flat_fills_and_keeps_texture():
    images, holes = _scene(b=4, h=64, w=64)
    hm = holes.expand_as(images)

    def psnr(out):
        mse = ((out - images)[hm] ** 2).mean()
        return float(10 * torch.log10(1 / mse))

    smooth = PyramidInpainter(texture=0.0)(images, holes)
    textured = PyramidInpainter()(images, holes)
    assert psnr(smooth) > psnr(GrayFill()(images, holes)) + 3
    assert psnr(textured) > psnr(get_inpainter("mean")(images, holes)) + 3

    def hf(x):
        return (x - nn.functional.avg_pool2d(x, 3, 1, 1))[hm].std()

    assert hf(textured) > 3 * hf(smooth)  # the texture option puts grain back into the hole


def test_push_pull_reproduces_constant_and_is_batched():
    x = torch.full((2, 3, 33, 17), 0.25)
    known = torch.zeros(2, 1, 33, 17)
    known[:, :, ::5, ::4] = 1
    out = push_pull(x, known)[0]
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-6)


def test_seeded_fills_are_reproducible():
    images, holes = _scene()
    for name in ("noise", "scramble_pixels", "scramble_patches", "pyramid"):
        a = get_inpainter(name)(images, holes)
        b = get_inpainter(name)(images, holes)
        assert torch.equal(a, b), name


class _MeanNet(nn.Module):
    """A stand-in learned inpainter: fills with the mean of the visible image, in its own input range."""

    def __init__(self):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.calls = []

    def forward(self, image, mask):
        self.calls.append((tuple(image.shape), float(image.min()), float(mask.max())))
        vis = 1 - mask
        mean = (image * vis).sum((2, 3), keepdim=True) / vis.sum((2, 3), keepdim=True).clamp_min(1)
        return mean.expand_as(image)


def test_module_inpainter_adapter():
    images, holes = _scene()
    net = _MeanNet()
    inp = get_inpainter(net, input_range=(-1, 1), size=32)
    assert isinstance(inp, ModuleInpainter)
    out = inp(images, holes)
    shape, lo, mmax = net.calls[-1]
    assert shape == (4, 3, 32, 32) and lo >= -1 and mmax == 1.0
    known = ~holes.expand_as(images)
    assert torch.equal(out[known], images[known])
    mean_fill = get_inpainter("mean")(images, holes)
    assert (out - mean_fill).abs().max() < 0.05
    # mask-first convention and plain callables
    first = ModuleInpainter(lambda m, x: x.flip(-1), mask_first=True, mask_image=False)
    assert first(images, holes).shape == images.shape
    with pytest.raises(ValueError, match="must return"):
        ModuleInpainter(lambda x, m: x[:, :1])(images, holes)


def test_bad_inputs_and_registry():
    images, holes = _scene()
    with pytest.raises(ValueError, match="unknown inpainter"):
        get_inpainter("lama")
    with pytest.raises(ValueError, match="holes"):
        get_inpainter("gray")(images, holes[:, :, :5])
    with pytest.raises(ValueError, match="images"):
        get_inpainter("gray")(images[0], holes)
    assert isinstance(get_inpainter(None), PyramidInpainter)
    assert get_inpainter("scramble-patches").name == "scramble_patches"
