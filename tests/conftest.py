"""Shared test fixtures, and the isolation every test runs under.

* **No network, nothing outside the repository.** ``HF_HUB_OFFLINE=1`` and a fresh temporary ``HF_HOME``
  are set before any test module imports ``huggingface_hub`` (it reads them at import), so a test can never
  reach the Hub nor read a cache the user happens to have. Tests that exercise the download path start a
  stand-in server on 127.0.0.1 and lift the offline flag for themselves with ``monkeypatch``.
* **Order does not matter.** Every test gets back, after it ran, the torch thread count, the global torch /
  NumPy / ``random`` generator states, the environment variables and the working directory it started
  with (``_restore_global_state``), so a test that sets any of them cannot change what a later one computes.
"""

import os
import random
import sys
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="backswap-tests-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# `benchmarks` (a package at the repository root) is importable by the tests that smoke-run it. The root is
# *appended*, so `torch_backswap` still resolves to the installed package (CI installs the wheel).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Snapshot the process-global state a test can change, and put it back afterwards."""
    threads = torch.get_num_threads()
    torch_rng = torch.get_rng_state()
    numpy_rng = np.random.get_state()
    python_rng = random.getstate()
    environ = dict(os.environ)
    cwd = os.getcwd()
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(torch_rng)
    np.random.set_state(numpy_rng)
    random.setstate(python_rng)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    os.chdir(cwd)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (no oversubscription on shared CPUs); restored by the autouse fixture."""
    torch.set_num_threads(1)
    yield


def pytest_addoption(parser):
    parser.addoption("--test-order", default="file", metavar="ORDER",
                     help="run the collected tests in another order to prove they do not depend on it: 'file' "
                          "(default), 'reverse', or 'shuffle:SEED'")


def pytest_collection_modifyitems(config, items):
    order = config.getoption("--test-order")
    if order == "file":
        return
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:") and order[len("shuffle:"):].isdigit():
        random.Random(int(order[len("shuffle:"):])).shuffle(items)
    else:
        raise pytest.UsageError(f"--test-order must be 'file', 'reverse' or 'shuffle:SEED' (an integer), got {order!r}")


def pytest_report_header(config):
    return f"test order: {config.getoption('--test-order')}"
