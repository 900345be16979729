"""Write one benchmark's section of ``benchmarks/RESULTS.md`` without touching the others.

Each benchmark owns the block between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``; a new name is
appended at the end. The block should start with the exact command that produced it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

from torch_backswap._io import atomic_write_text

__all__ = ["RESULTS", "before_after_table", "render_case_matrix", "write_case_matrix", "dilate", "loadavg", "machine_line", "make_inpainter", "mean_ci", "psnr", "t975",
           "weights_id", "write_section"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery section below is written by the script named in it; rerun the command to refresh it.\n"


def t975(df: int) -> float:
    """``t_{0.975, df}`` (``df >= 1``): :func:`torch_backswap.diagnose.t_quantile`, the package's one Student-t
    quantile (the interval of ``background_gap`` too)."""
    from torch_backswap.diagnose import t_quantile

    return t_quantile(0.975, df)


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval, ``t_{0.975, n-1} * s / sqrt(n)`` (``nan`` half-width for
    fewer than two values)."""
    values = list(values)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


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


def make_inpainter(name: str):
    """Registry inpainter by name; ``pyramid_smooth`` is the pyramid without the patch texture."""
    from torch_backswap.inpaint import PyramidInpainter, get_inpainter

    return PyramidInpainter(texture=0.0) if name == "pyramid_smooth" else get_inpainter(name)


def dilate(mask, radius: int):
    """Square dilation of a bool ``(B, 1, H, W)`` mask by ``radius`` pixels."""
    import torch.nn.functional as F

    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0.5


def psnr(pred, target, region=None):
    """Per-image PSNR in dB of float ``(B, 3, H, W)`` images in [0, 1]; ``region`` (B, 1, H, W) bool
    restricts the mean squared error to its pixels (NaN for an image whose region is empty)."""
    import torch

    err = (pred - target).pow(2)
    if region is None:
        mse = err.mean(dim=(1, 2, 3))
    else:
        w = region.float()
        mse = (err * w).sum(dim=(1, 2, 3)) / (3.0 * w.sum(dim=(1, 2, 3)))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def weights_id(name: str) -> str:
    """Short sha256 of a segmenter's model.safetensors, so a figure says which weights made it."""
    import hashlib

    from torch_backswap.hub import resolve_pretrained

    return hashlib.sha256((resolve_pretrained(name) / "model.safetensors").read_bytes()).hexdigest()[:12]


def _read_cases(before_file: Path, after: dict[str, str]) -> list[dict[str, str]]:
    """Each case of ``after`` with its outcome in ``before_file`` (``name || outcome`` lines of an older run)."""
    lines = before_file.read_text().splitlines()
    before = dict(line.split(" || ", 1) for line in lines if " || " in line)
    return [{"case": name, "before": before.get(name, "(not run)"), "now": outcome} for name, outcome in after.items()]


def _case_table(cases: list[dict[str, str]], columns: tuple[str, ...], before_name: str) -> str:
    """Markdown table of cases: the first ``columns`` come from the case name split on ``" | "``."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| " + " | ".join([*(cell(part) for part in c["case"].split(" | ", len(columns) - 1)), cell(c["before"]),
                               cell(c["now"])]) + " |" for c in cases]
    head = "| " + " | ".join([*columns, before_name, "now"]) + " |"
    return "\n".join([head, "|" + "---|" * (len(columns) + 2), *rows])


def before_after_table(after: dict[str, str], before_file, before_name: str, columns: tuple[str, ...]) -> str | None:
    """The case matrices of issue 11 (``input_matrix``, ``file_error_matrix``): outcome per case, before and now.

    Without ``before_file`` the cases are printed as ``name || outcome`` lines (the file a later run reads as
    its "before") and ``None`` is returned; with it, a markdown table whose first ``columns`` come from the case
    name split on ``" | "``.
    """
    if before_file is None:
        for name, outcome in after.items():
            print(f"{name} || {outcome}")
        return None
    return _case_table(_read_cases(before_file, after), columns, before_name)


def write_case_matrix(path: Path, *, title: str, command: str, columns: tuple[str, ...], before_file: Path,
                      before_name: str, after: dict[str, str], note: str = "") -> Path:
    """Store a case matrix (``input_matrix``, ``file_error_matrix``) as JSON: each case's outcome before and now.

    :func:`render_case_matrix` turns it into the RESULTS.md section (``python -m benchmarks.report``)."""
    import json

    data = {"title": title, "command": command, "machine": machine_line(), "columns": list(columns),
            "before_name": before_name, "note": note, "cases": _read_cases(before_file, after)}
    return atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def render_case_matrix(d: dict) -> str:
    """The section of a case matrix stored by :func:`write_case_matrix`."""
    changed = sum(c["before"] != c["now"] for c in d["cases"])
    note = f" {d['note']}" if d.get("note") else ""
    table = _case_table(d["cases"], tuple(d["columns"]), d["before_name"])
    return (f"## {d['title']}\n\n`{d['command']}`\n\n{d['machine']}\n\n{len(d['cases'])} cases, {changed} with "
            f"another outcome than before.{note}\n\n{table}")
