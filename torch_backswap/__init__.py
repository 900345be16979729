"""torch-backswap: background swapping augmentation against spurious backgrounds.

The public API is re-exported here as modules land.
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
