"""int8 segmenter: the same interface and nearly the same logits as the float model it was made from."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from torch_backswap import BackgroundBank, BackgroundSwap, PatchSegmenter
from torch_backswap.quantize import QuantizedPatchSegmenter, quantize_segmenter
from torch_backswap.segmenter import segment_logits
from torch_backswap.cutout import CutOut


def _images(n, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth images (a resize of noise), like photos
    return (F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bilinear") * 255).to(torch.uint8)


@pytest.mark.usefixtures("one_thread")
def test_int8_segmenter_keeps_the_interface_and_the_logits():
    torch.manual_seed(0)
    seg = PatchSegmenter(grid_size=4, input_size=32, width=8).eval()
    q = quantize_segmenter(seg, _images(16, seed=1))
    assert isinstance(q, QuantizedPatchSegmenter) and q.input_size == 32 and q.grid_size == 4
    x = _images(6, seed=2)
    ref, out = segment_logits(seg, x), segment_logits(q, x)
    assert out.shape == ref.shape == (6, 4, 4) and out.dtype == torch.float32
    # int8 rounding moves the logits a little, relative to their spread
    assert (out - ref).abs().max() < 0.2 * ref.std() + 0.05
    assert q(x[0]).shape == (4, 4)  # unbatched input, like PatchSegmenter
    # usable by the swap, picklable for DataLoader workers
    bank = BackgroundBank(_images(4, seed=3), torch.tensor([0, 1, 0, 1]))
    swapped = BackgroundSwap(bank, CutOut(pickle.loads(pickle.dumps(q)), tight_threshold=0.0), seed=0).swap_batch(x)
    assert swapped.shape == x.shape and swapped.dtype == torch.uint8


def test_quantize_segmenter_rejects_what_it_cannot_quantize():
    seg = PatchSegmenter(grid_size=4, input_size=32, width=8)
    with pytest.raises(TypeError, match="segmenter must be a PatchSegmenter"):
        quantize_segmenter(lambda x: x, _images(2))
    with pytest.raises(ValueError, match="calibration must be a non-empty"):
        quantize_segmenter(seg, torch.zeros(0, 3, 8, 8))
    with pytest.raises(ValueError, match="backend must be one of"):
        quantize_segmenter(seg, _images(2), backend="no-such-engine")
