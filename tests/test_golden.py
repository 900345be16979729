"""Golden tests: pinned before the v0.2 refactor (issue 9); the refactored code must reproduce them bit for bit.

The digests come from ``tests/_golden_cases.py`` (run it with ``--write`` to regenerate, only for a change
meant to alter outputs). The ``backswap demo --fast`` figures are compared in ``tests/test_demo.py``.

One deliberate change: ``segmenter_input`` no longer upsamples images smaller than the segmenter's input
size in uint8 (that only added rounding). ``segmenter_v0.1`` holds the v0.1 digests, reproduced exactly
when the v0.1 ``segmenter_input`` is put back.
"""

import json

import pytest
import torch
from _golden_cases import (
    GOLDEN,
    edge_route_cases,
    finetune_cases,
    segmenter_cases,
    swap_cases,
)

import torch_backswap.segmenter as segmenter_module

EXPECTED = json.loads(GOLDEN.read_text())


def _segmenter_input_v01(images, segmenter):
    """v0.1's segmenter_input: resized uint8 CPU batches to the input size in both directions."""
    size = getattr(segmenter, "input_size", None)
    if (not isinstance(size, int) or images.dtype != torch.uint8 or images.device.type != "cpu"
            or images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) == (size, size)):
        return images
    x = images.contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def test_swap_batches_match_golden():
    assert swap_cases() == EXPECTED["swap"]


@pytest.mark.usefixtures("one_thread")
def test_bank_bytes_and_segmenter_swap_match_golden():
    assert segmenter_cases() == EXPECTED["segmenter"]


@pytest.mark.usefixtures("one_thread")
def test_edge_route_defaults_match_golden():
    assert edge_route_cases() == EXPECTED["edge_route"]


@pytest.mark.usefixtures("one_thread")
def test_finetuned_weights_and_history_match_golden():
    assert finetune_cases() == EXPECTED["finetune"]


@pytest.mark.usefixtures("one_thread")
def test_v01_bytes_reproduced_with_the_v01_segmenter_input(monkeypatch):
    monkeypatch.setattr(segmenter_module, "segmenter_input", _segmenter_input_v01)
    got = segmenter_cases()
    expected = EXPECTED["segmenter_v0.1"]
    for key in ("bank_backgrounds", "bank_labels", "segmenter_swap_uint8"):
        assert got[key] == expected[key], key
