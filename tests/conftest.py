"""Shared test fixtures."""

import sys
from pathlib import Path

import pytest
import torch

# `benchmarks` (a package at the repository root) is importable by the tests that smoke-run it. The root is
# *appended*, so `torch_backswap` still resolves to the installed package (CI installs the wheel).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (deterministic reductions, no oversubscription on shared CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
