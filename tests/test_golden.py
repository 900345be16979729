"""Golden tests: pinned before the v0.2 refactor (issue 9); the refactored code must reproduce them bit for bit.

The digests come from ``tests/_golden_cases.py`` (run it with ``--write`` to regenerate, only for a change
meant to alter outputs). The ``backswap demo --fast`` figures are compared in ``tests/test_demo.py``.
"""

import json

import pytest

from _golden_cases import GOLDEN, segmenter_cases, swap_cases

EXPECTED = json.loads(GOLDEN.read_text())


def test_swap_batches_match_golden():
    assert swap_cases() == EXPECTED["swap"]


@pytest.mark.usefixtures("one_thread")
def test_bank_bytes_and_segmenter_swap_match_golden():
    assert segmenter_cases() == EXPECTED["segmenter"]
