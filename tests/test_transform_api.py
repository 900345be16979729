"""The shape of the swap's entrance (issue 26): a small class with a few collaborators, a typed bank protocol,
clear errors for what moved, and the value range honoured by every route into the cut-out."""

from __future__ import annotations

import inspect

import pytest
import torch

from torch_backswap import BackgroundBank, BackgroundSwap, CutOut, StreamingBackgroundBank
from torch_backswap.bank import Bank, as_bank
from torch_backswap.functional import Compositing
from torch_backswap.jitter import JitterGenerator


def _bank():
    return BackgroundBank(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))


class _RecordingSegmenter:
    """Logits of a centred object; remembers the value range of the images it was given."""

    def __init__(self):
        self.seen: list[tuple[float, float]] = []

    def __call__(self, images):
        self.seen.append((float(images.min()), float(images.max())))
        logits = torch.full((images.shape[0], 4, 4), -8.0)
        logits[:, 1:3, 1:3] = 8.0
        return logits


def test_the_class_is_small_and_the_constructor_takes_at_most_ten_parameters():
    lines, _ = inspect.getsourcelines(BackgroundSwap)
    params = [p for p in inspect.signature(BackgroundSwap.__init__).parameters if p != "self"]
    assert len(lines) < 250
    assert len(params) <= 10 and not any(
        inspect.signature(BackgroundSwap.__init__).parameters[p].kind is inspect.Parameter.VAR_KEYWORD for p in params)


@pytest.mark.parametrize("knob", ["tight_threshold", "feather_px", "scale", "refine", "segmenter"])
def test_a_02_knob_is_refused_by_name(knob):
    with pytest.raises(TypeError, match=knob):
        BackgroundSwap(_bank(), **{knob: 0.5})


def test_collaborators_of_the_wrong_type_are_named():
    with pytest.raises(TypeError, match=r"jitter must be a JitterGenerator or None, got"):
        BackgroundSwap(_bank(), jitter={"scale": (0.5, 1.5)})
    with pytest.raises(TypeError, match=r"compositing must be a Compositing or None, got"):
        BackgroundSwap(_bank(), compositing=0.01)
    swap = BackgroundSwap(_bank(), jitter=JitterGenerator(degrees=0.0), compositing=Compositing(harmonize=0.5))
    assert swap.jitter.degrees == 0.0 and swap.compositing.harmonize == 0.5


def test_both_banks_are_a_bank_and_anything_else_is_named(tmp_path):
    bank = _bank()
    assert isinstance(bank, Bank) and as_bank(bank) is bank
    bank.save(tmp_path / "bank", shard_size=2)
    streaming = StreamingBackgroundBank(tmp_path / "bank")
    try:
        assert isinstance(streaming, Bank)
        assert BackgroundSwap(streaming, seed=0).bank is streaming
    finally:
        streaming.close()
    assert len(as_bank(tmp_path / "bank")) == 4  # a path loads the saved bank
    with pytest.raises(TypeError, match=r"bank must be a BackgroundBank.*got dict \(missing \['labels', 'device'"):
        BackgroundSwap({"backgrounds": bank.backgrounds})


def test_segment_maps_the_value_range_like_the_swap_does():
    """0.2 handed [-1, 1] images to the segmenter unmapped in ``segment`` (the swap itself mapped them)."""
    seg = _RecordingSegmenter()
    swap = BackgroundSwap(_bank(), CutOut(seg), value_range=(-1.0, 1.0), seed=0)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    alpha = swap.segment(images)
    swap.swap_batch(images)
    assert len(seg.seen) == 2 and all(lo >= 0.0 and hi <= 1.0 for lo, hi in seg.seen)
    assert alpha.shape == (2, 1, 16, 16) and float(alpha[0, 0, 8, 8]) == 1.0 and float(alpha[0, 0, 0, 0]) == 0.0
