"""The speed-ups of issue 5 against the unoptimised computations they replace (same outputs, or within the
stated tolerance). Timings are checked by ``benchmarks/throughput.py``, never here."""

import torch
import torch.nn.functional as F

from torch_backswap import BackgroundBank, BackgroundSwap, CutOut
from torch_backswap.functional import Compositing
from torch_backswap.inpaint import PyramidInpainter
from torch_backswap._image import to_uint8_rgb
from torch_backswap.segmenter import segment_probability, segmenter_input
from torch_backswap.jitter import mask_bboxes
from torch_backswap.inpaint import ScramblePatches, _scramble_cells
from torch_backswap.segmenter import PatchSegmenter, logits_to_probability
from torch_backswap._image import float_alpha, mask_to_alpha


def _naive_bboxes(alpha):
    fg = alpha[:, 0] > 0
    out = []
    for m in fg:
        ys, xs = m.nonzero(as_tuple=True)
        out.append([0, 0, 0, 0] if ys.numel() == 0 else [xs.min(), ys.min(), xs.max(), ys.max()])
    return torch.tensor(out, dtype=torch.long), fg.flatten(1).any(1)


def _blobs(b=6, h=40, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    alpha = torch.zeros(b, 1, h, w)
    for i in range(b - 1):  # the last one stays empty
        y0, x0 = int(torch.randint(0, h - 14, (1,), generator=g)), int(torch.randint(0, w - 16, (1,), generator=g))
        alpha[i, :, y0 : y0 + 12, x0 : x0 + 14] = torch.rand(1, 12, 14, generator=g).clamp_min(0.02)
    return images, alpha


def test_mask_bboxes_matches_naive_for_every_dtype():
    _, alpha = _blobs()
    for a in (alpha, alpha > 0.5, (alpha * 255).round().to(torch.uint8)):
        boxes, valid = mask_bboxes(a)
        ref_boxes, ref_valid = _naive_bboxes(a)
        assert torch.equal(valid, ref_valid)
        assert torch.equal(boxes, ref_boxes)


def test_compact_masks_give_bit_identical_swaps():
    images, alpha = _blobs(seed=1)
    bank = BackgroundBank(torch.randint(0, 256, (5, 3, 40, 52), dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 1]))
    u8 = (alpha * 255).round().to(torch.uint8)
    binary = alpha > 0.3
    for mask in (u8, binary, binary.to(torch.uint8)):
        # the old path: masks turned into float alpha first
        ref, ref_rec = BackgroundSwap(bank, seed=3).swap_batch(images, alphas=float_alpha(mask_to_alpha(mask)), return_record=True)
        out, rec = BackgroundSwap(bank, seed=3).swap_batch(images, alphas=mask, return_record=True)
        assert torch.equal(out, ref)
        assert torch.equal(rec.matrices, ref_rec.matrices)
    # p < 1 and resized masks still work with compact masks
    swap = BackgroundSwap(bank, seed=0, p=0.5)
    out = swap.swap_batch(images, alphas=u8[..., ::2, ::2])
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_segmenter_input_is_within_tolerance_of_the_full_resolution_path():
    torch.manual_seed(0)
    seg = PatchSegmenter(grid_size=8, input_size=64, width=8).eval()
    g = torch.Generator().manual_seed(0)
    # smooth images (a resize of noise), like photos; pure pixel noise would exaggerate rounding
    images = (F.interpolate(torch.rand(4, 3, 12, 12, generator=g), size=(150, 150), mode="bilinear") * 255).to(torch.uint8)
    small = segmenter_input(images, seg)
    assert small.shape == (4, 3, 64, 64) and small.dtype == torch.uint8
    with torch.no_grad():
        ref = logits_to_probability(seg(images), (150, 150))
    fast = segment_probability(seg, images)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max() < 0.02
    # float inputs, inputs already at the input size and plain callables are left alone
    assert segmenter_input(images.float() / 255, seg).shape == images.shape
    assert segmenter_input(small, seg) is small
    assert segmenter_input(images, lambda x: x) is images


def test_uint8_fill_matches_rounding_the_float_fill():
    images, alpha = _blobs(seed=2)
    holes = alpha > 0
    for inpainter in (PyramidInpainter(), PyramidInpainter(texture=0), PyramidInpainter(texture_level=2)):
        ref = to_uint8_rgb(inpainter(images.float() / 255, holes), check_values=False)
        assert torch.equal(inpainter(images, holes), ref)


def _scramble_reference(images, hole, patch, generator):
    """The unfold / gather / fold formulation the index_select version replaced."""
    b, c, h, w = images.shape
    ph, pw = -h % patch, -w % patch
    x = F.pad(images, (0, pw, 0, ph))
    k = F.pad((~hole).to(images.dtype), (0, pw, 0, ph))
    cells = F.unfold(x, patch, stride=patch)
    cell_ok = F.avg_pool2d(k, patch, stride=patch).reshape(b, -1) > 0.999
    n_cells = cell_ok.shape[1]
    counts = cell_ok.sum(1)
    cum = cell_ok.long().cumsum(1)
    u = torch.rand(b, n_cells, generator=generator)
    target = (u * counts[:, None].to(u.dtype)).floor().long().clamp_max((counts - 1).clamp_min(0)[:, None])
    src = torch.searchsorted(cum, target + 1).clamp_max(n_cells - 1)
    picked = cells.gather(2, src[:, None, :].expand(-1, cells.shape[1], -1))
    return F.fold(picked, x.shape[-2:], patch, stride=patch)[..., :h, :w], counts > 0


def test_scramble_cells_matches_unfold_fold():
    images, alpha = _blobs(seed=3, h=45, w=38)  # sizes that need padding
    x = images.float() / 255
    holes = alpha > 0
    for patch in (3, 7, 14):
        out, ok = _scramble_cells(x, holes, patch, torch.Generator().manual_seed(5))
        ref, ref_ok = _scramble_reference(x, holes, patch, torch.Generator().manual_seed(5))
        assert torch.equal(ok, ref_ok)
        assert torch.equal(out, ref)
    assert ScramblePatches(patch_size=5)(images, holes).dtype == torch.uint8


def test_uint8_normalize_at_the_input_size_matches_the_general_path():
    seg = PatchSegmenter(grid_size=4, input_size=32, width=8).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fused = seg.normalize(images)  # one addcmul pass
    general = (images.float() / 255.0 - seg.mean) / seg.std
    assert fused.shape == (3, 3, 32, 32) and fused.dtype == torch.float32
    assert (fused - general).abs().max() < 1e-5
    # other sizes and float inputs take the general route
    assert torch.equal(seg.normalize(images.float() / 255.0), general)


def test_segmenter_input_gives_the_bytes_of_the_full_frame_channels_last_route():
    seg = PatchSegmenter(grid_size=4, input_size=32, width=8)
    g = torch.Generator().manual_seed(3)
    images = (F.interpolate(torch.rand(3, 3, 9, 9, generator=g), size=(77, 90), mode="bilinear") * 255).to(torch.uint8)
    old = F.interpolate(images.contiguous(memory_format=torch.channels_last), size=(32, 32), mode="bilinear",
                        antialias=True, align_corners=False)
    new = segmenter_input(images, seg)
    assert torch.equal(new, old) and new.is_contiguous(memory_format=torch.channels_last)


def test_swap_segmenting_uint8_images_is_within_one_level_of_the_float_alpha_swap():
    """Issue 25: uint8 images get the uint8 cut-out (grid-resolution threshold, window upsampling); float images
    keep the float alpha. Same params: the uint8 output is within one grey level of the float output, rounded."""
    torch.manual_seed(0)
    seg = PatchSegmenter(grid_size=8, input_size=32, width=8).eval()
    g = torch.Generator().manual_seed(4)
    images = (F.interpolate(torch.rand(6, 3, 6, 6, generator=g), size=(48, 48), mode="bilinear") * 255).to(torch.uint8)
    bank = BackgroundBank(torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8, generator=g), torch.tensor([0, 1, 0, 1]))
    swap = BackgroundSwap(bank, CutOut(seg, tight_threshold=0.45), seed=0, compositing=Compositing(min_foreground=0.0))
    out8, rec = swap.swap_batch(images, return_record=True)
    outf = swap.swap_batch(images.float() / 255, params=rec.params)
    assert rec.swapped.any()
    assert ((outf * 255).round().int() - out8.int()).abs().max() <= 1
