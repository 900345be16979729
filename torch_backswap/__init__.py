"""torch-backswap: background swapping augmentation against spurious backgrounds.

The pipeline, in module order: :mod:`~torch_backswap.labels` (patch labels) →
:mod:`~torch_backswap.segmenter` / :mod:`~torch_backswap.finetune` (patch segmenter) →
:mod:`~torch_backswap.inpaint` + :mod:`~torch_backswap.build` (segment + inpaint) →
:mod:`~torch_backswap.bank` (the background store) → :mod:`~torch_backswap.functional` (the swap as pure
functions) → :mod:`~torch_backswap.transform` (``BackgroundSwap``) / :mod:`~torch_backswap.loader`
(device-side swapping) → :mod:`~torch_backswap.metrics` / :mod:`~torch_backswap.diagnose`.

The public API is :data:`__all__`; the experiment harness (:mod:`torch_backswap.experiments`) is not part of it.
"""

__version__ = "0.2.0"

from ._io import BackswapFileError, BackswapFileNotFoundError
from .labels import LabelFormatError, MissingImageError, PatchLabels, dense_to_patch_grid, patch_grid_to_dense
from .hub import DEFAULT_SEGMENTER, PretrainedNotFoundError, resolve_pretrained
from .metrics import (
    boundary_f_score,
    cell_balanced_accuracy,
    ghost_fraction,
    group_accuracies,
    mask_iou,
    worst_group_accuracy,
)
from .segmenter import LOOSE_THRESHOLD, TIGHT_THRESHOLD, PatchSegmenter, logits_to_probability, probability_to_mask
from .finetune import finetune_segmenter
from .refine import calibrate_threshold, flip_average_logits, loose_hole, refine_probability
from .edge_refiner import DEFAULT_EDGE_REFINER, EdgeRefiner
from .quantize import QuantizedPatchSegmenter, quantize_segmenter
from .inpaint import (
    GrayFill,
    MeanFill,
    ModuleInpainter,
    NoiseFill,
    PyramidInpainter,
    ScramblePatches,
    ScramblePixels,
    get_inpainter,
)
from .composite import composite
from .jitter import JitterParams, jitter_affine, sample_jitter
from .bank import BackgroundBank
from .bankfiles import BankManifest
from .build import build_bank
from .streaming import StreamingBackgroundBank
from .alpha import ObjectAlpha, ObjectAlphaDataset
from .functional import SwapParams, SwapRecord, sample_params, swap_backgrounds
from .transform import BackgroundSwap, BackgroundSwapCollate
from .loader import DeviceSwapLoader
from .diagnose import background_gap
from .datasets import StampBirds

__all__ = [
    # patch labels
    "PatchLabels",
    "LabelFormatError",
    "MissingImageError",
    "dense_to_patch_grid",
    "patch_grid_to_dense",
    # segmenter
    "PatchSegmenter",
    "DEFAULT_SEGMENTER",
    "PretrainedNotFoundError",
    "resolve_pretrained",
    "TIGHT_THRESHOLD",
    "LOOSE_THRESHOLD",
    "logits_to_probability",
    "probability_to_mask",
    "finetune_segmenter",
    "refine_probability",
    "EdgeRefiner",
    "DEFAULT_EDGE_REFINER",
    "flip_average_logits",
    "calibrate_threshold",
    "loose_hole",
    "quantize_segmenter",
    "QuantizedPatchSegmenter",
    # inpainting and the bank
    "get_inpainter",
    "PyramidInpainter",
    "GrayFill",
    "MeanFill",
    "NoiseFill",
    "ScramblePixels",
    "ScramblePatches",
    "ModuleInpainter",
    "BackgroundBank",
    "StreamingBackgroundBank",
    "BankManifest",
    "build_bank",
    # the swap
    "ObjectAlpha",
    "ObjectAlphaDataset",
    "SwapParams",
    "SwapRecord",
    "sample_params",
    "swap_backgrounds",
    "JitterParams",
    "sample_jitter",
    "jitter_affine",
    "composite",
    "BackgroundSwap",
    "BackgroundSwapCollate",
    "DeviceSwapLoader",
    # measuring
    "cell_balanced_accuracy",
    "mask_iou",
    "boundary_f_score",
    "ghost_fraction",
    "group_accuracies",
    "worst_group_accuracy",
    "background_gap",
    # data and files
    "StampBirds",
    "BackswapFileError",
    "BackswapFileNotFoundError",
]
