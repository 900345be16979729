"""Write one benchmark's section of ``benchmarks/RESULTS.md`` without touching the others.

Each benchmark owns the block between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``; a new name is
appended at the end. The block should start with the exact command that produced it.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from torch_backswap._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery section below is written by the script named in it; rerun the command to refresh it.\n"


def machine_line() -> str:
    """One line naming the date, CPU count and torch version, for the record."""
    import torch

    return (f"_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads_")


def loadavg() -> str:
    """The 1/5/15-minute load averages as ``"a, b, c"`` ("n/a" where the platform has none)."""
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def write_section(name: str, markdown: str, path: Path = RESULTS) -> Path:
    begin, end = f"<!-- begin: {name} -->", f"<!-- end: {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    return atomic_write_text(path, text)
