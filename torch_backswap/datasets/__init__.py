"""Datasets: the StampBirds benchmark and its generic stamp-compositing helpers."""

from torch_backswap.datasets.stamp_composite import (
    CompositeLayout,
    Composites,
    blend_uint8,
    composite_stamps,
    load_stamp_rgba,
    render_layout,
    sample_layout,
)
from torch_backswap.datasets.stampbirds import StampBirds, default_root, load_pack

__all__ = [
    "StampBirds",
    "default_root",
    "load_pack",
    "composite_stamps",
    "load_stamp_rgba",
    "sample_layout",
    "render_layout",
    "blend_uint8",
    "CompositeLayout",
    "Composites",
]
