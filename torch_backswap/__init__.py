"""torch-backswap: background swapping augmentation against spurious backgrounds.

The pipeline, in module order: :mod:`~torch_backswap.labels` (patch labels) →
:mod:`~torch_backswap.segmenter` / :mod:`~torch_backswap.finetune` (patch segmenter) →
:mod:`~torch_backswap.inpaint` + :mod:`~torch_backswap.bank` (background bank) →
:mod:`~torch_backswap.composite` + :mod:`~torch_backswap.transform` (``BackgroundSwap``).
"""

__version__ = "0.1.0"

from .labels import LabelFormatError, MissingImageError, PatchLabels, dense_to_patch_grid, patch_grid_to_dense
from .hub import DEFAULT_SEGMENTER, PretrainedNotFoundError, resolve_pretrained
from .metrics import cell_balanced_accuracy, group_accuracies, mask_iou, worst_group_accuracy
from .segmenter import (
    LOOSE_THRESHOLD,
    TIGHT_THRESHOLD,
    PatchSegmenter,
    logits_to_probability,
    probability_to_mask,
)
from .finetune import finetune_segmenter
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
from .composite import JitterParams, composite, composite_reference, jitter_affine, sample_jitter
from .bank import BackgroundBank
from .transform import BackgroundSwap, BackgroundSwapCollate
from .datasets import StampBirds
