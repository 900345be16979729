"""Datasets: StampBirds (+ its stamp-compositing helpers) and loaders for the paper's on-disk benchmarks."""

from torch_backswap.datasets._folder import DatasetFileError, ImageFileDataset
from torch_backswap.datasets.imagenet9 import ImageNet9
from torch_backswap.datasets.spawrious import Spawrious
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
from torch_backswap.datasets.subpopulation import MetaShift, SubpopulationCSV
from torch_backswap.datasets.waterbirds import Waterbirds

__all__ = [
    "StampBirds",
    "Waterbirds",
    "Spawrious",
    "ImageNet9",
    "MetaShift",
    "SubpopulationCSV",
    "ImageFileDataset",
    "DatasetFileError",
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
