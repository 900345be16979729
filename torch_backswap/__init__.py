"""torch-backswap: background swapping augmentation against spurious backgrounds.

The pipeline, in module order: :mod:`~torch_backswap.labels` (patch labels) →
:mod:`~torch_backswap.segmenter` / :mod:`~torch_backswap.finetune` (patch segmenter) →
:mod:`~torch_backswap.inpaint` + :mod:`~torch_backswap.build` (segment + inpaint) →
:mod:`~torch_backswap.bank` (the background store) → :mod:`~torch_backswap.functional` (the swap as pure
functions) → :mod:`~torch_backswap.transform` (``BackgroundSwap``) / :mod:`~torch_backswap.loader`
(device-side swapping) → :mod:`~torch_backswap.metrics` / :mod:`~torch_backswap.diagnose`.

The public API is :data:`__all__` (the objects a user builds); kernels and jitter live in
:mod:`torch_backswap.functional`, fills in :mod:`torch_backswap.inpaint`, metrics in :mod:`torch_backswap.metrics`,
constants in their modules. :mod:`torch_backswap.demo` (``backswap demo``) and :mod:`torch_backswap.classifiers`
(the small classifiers it trains and ``backswap diagnose`` loads) are not part of it; the research harness lives
in ``benchmarks/``, outside the package.
"""

__version__ = "0.3.0"

import importlib as _importlib
import warnings as _warnings

from ._io import BackswapFileError, BackswapFileNotFoundError
from .labels import LabelFormatError, MissingImageError, PatchLabels
from .hub import PretrainedNotFoundError
from .segmenter import PatchSegmenter
from .finetune import finetune_segmenter
from .edge_refiner import EdgeRefiner
from .cutout import CutOut
from .quantize import quantize_segmenter
from .inpaint import get_inpainter
from .bank import BackgroundBank
from .bankfiles import BankManifest
from .build import build_bank
from .streaming import StreamingBackgroundBank
from .alpha import ObjectAlpha, ObjectAlphaDataset
from .transform import BackgroundSwap, BackgroundSwapCollate
from .loader import DeviceSwapLoader
from .diagnose import background_gap
from .datasets import StampBirds
from . import functional, inpaint, metrics

__all__ = [
    # patch labels and the segmenter
    "PatchLabels",
    "PatchSegmenter",
    "finetune_segmenter",
    "quantize_segmenter",
    "EdgeRefiner",
    "CutOut",
    # the bank
    "get_inpainter",
    "BackgroundBank",
    "StreamingBackgroundBank",
    "BankManifest",
    "build_bank",
    # the swap
    "ObjectAlpha",
    "ObjectAlphaDataset",
    "BackgroundSwap",
    "BackgroundSwapCollate",
    "DeviceSwapLoader",
    # measuring and data
    "background_gap",
    "StampBirds",
    # errors
    "BackswapFileError",
    "BackswapFileNotFoundError",
    "LabelFormatError",
    "MissingImageError",
    "PretrainedNotFoundError",
]

#: Names that left the top level in 0.3 (issue 26) → the module that holds them. ``torch_backswap.<name>`` still
#: works, with a ``DeprecationWarning``.
_MOVED = {
    **dict.fromkeys(["dense_to_patch_grid", "patch_grid_to_dense"], "labels"),
    **dict.fromkeys(["DEFAULT_SEGMENTER", "resolve_pretrained"], "hub"),
    **dict.fromkeys(["TIGHT_THRESHOLD", "LOOSE_THRESHOLD", "logits_to_probability", "probability_to_mask"],
                    "segmenter"),
    **dict.fromkeys(["refine_probability", "flip_average_logits", "calibrate_threshold", "loose_hole"], "refine"),
    "DEFAULT_EDGE_REFINER": "edge_refiner",
    "QuantizedPatchSegmenter": "quantize",
    **dict.fromkeys(["GrayFill", "MeanFill", "NoiseFill", "PyramidInpainter", "ScramblePixels", "ScramblePatches",
                     "ModuleInpainter"], "inpaint"),
    **dict.fromkeys(["SwapParams", "SwapRecord", "sample_params", "swap_backgrounds", "JitterParams", "composite",
                     "sample_jitter", "jitter_affine"], "functional"),
    **dict.fromkeys(["cell_balanced_accuracy", "mask_iou", "boundary_f_score", "ghost_fraction", "group_accuracies",
                     "worst_group_accuracy"], "metrics"),
}


def __getattr__(name: str):
    if name in _MOVED:
        module = _MOVED[name]
        _warnings.warn(f"torch_backswap.{name} moved: import it from torch_backswap.{module}", DeprecationWarning,
                       stacklevel=2)
        return getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
