"""From coarse cell logits to masks that follow the image's edges.

The segmenter predicts one logit per cell of an S×S grid (a 4-px cell on a 64-px image); upsampled
bilinearly, its probability is smooth but knows nothing of where the object's outline really runs. This
module holds the steps that bring the mask back to pixel accuracy, all batched and device-agnostic:

* :func:`flip_average_logits` – test-time augmentation: the mean of the logits of the image and of its
  mirror image (mirrored back);
* :func:`refine_probability` – edge-aware filtering of the upsampled probability with the image as guide:
  ``"guided"`` (He et al.'s guided filter, :func:`kornia.filters.guided_blur`) or ``"bilateral"`` (joint
  bilateral filter, :func:`kornia.filters.joint_bilateral_blur`);
* :func:`calibrate_threshold` – the tight threshold that best reproduces a labelled split's patch labels;
* :func:`loose_hole` – the hole to inpaint: ``probability > threshold``, optionally grown by a few pixels;
* a learned alternative to the fixed filters: :class:`~torch_backswap.edge_refiner.EdgeRefiner` (pass it as
  ``refiner=`` to :func:`cut_out_probability` / :class:`~torch_backswap.cutout.CutOut`).

Typical use (``segmenter`` a :class:`~torch_backswap.segmenter.PatchSegmenter`, ``images`` uint8)::

    logits = flip_average_logits(segmenter, images)
    prob = refine_probability(logits_to_probability(logits, images.shape[-2:]), images)

The measured effect of each step is in ``benchmarks/RESULTS.md`` (section ``mask_quality``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .segmenter import (
    logits_to_alpha,
    logits_to_probability,
    probability_to_mask,
    segment_logits,
    segment_probability,
)

__all__ = [
    "REFINED_HOLE_THRESHOLD",
    "REFINED_TIGHT_THRESHOLD",
    "REFINE_METHODS",
    "calibrate_threshold",
    "cut_out_alpha",
    "cut_out_probability",
    "flip_average_logits",
    "hole_growth",
    "is_learned_refiner",
    "loose_hole",
    "refine_probability",
]

#: Methods of :func:`refine_probability`.
REFINE_METHODS = ("none", "guided", "bilateral")

#: Where a learned refiner's probability is cut for the object: its output is a per-pixel probability, so 0.5
#: (no threshold to fit). With the hole below this is the route measured best on StampBirds
#: (``benchmarks/RESULTS.md``: *mask_quality* ``flip+edge``, *robustness* ``backswap_edge``).
REFINED_TIGHT_THRESHOLD = 0.5
#: Where a learned refiner's probability is cut for the hole to inpaint, before it is grown by
#: :func:`hole_growth` pixels (ghost pixels 1.9 % of the object on StampBirds crops, hole 22 % of the image).
REFINED_HOLE_THRESHOLD = 0.2


def hole_growth(size: Sequence[int]) -> int:
    """Pixels to grow a refined hole by for images of ``size`` ``(H, W)``: 1/32 of the shorter side, at least 1
    (2 px at 64 px, the measured setting: half a cell of a 16-cell grid).

    Example:
        >>> hole_growth((64, 64)), hole_growth((224, 300)), hole_growth((16, 16))
        (2, 7, 1)
    """
    return max(1, round(min(int(side) for side in size) / 32))


def is_learned_refiner(refiner: object) -> bool:
    """Whether ``refiner`` is a learned refiner (anything with ``predict_probability``), not a filter name or None."""
    return (refiner is not None and not isinstance(refiner, str)
            and callable(getattr(refiner, "predict_probability", None)))


class Refiner(Protocol):
    """A learned refinement step (e.g. :class:`~torch_backswap.edge_refiner.EdgeRefiner`): images ``(B, C, H, W)``
    and their upsampled probability ``(B, 1, H, W)`` → refined probability ``(B, 1, H, W)``."""

    def predict_probability(self, images: Tensor, probability: Tensor) -> Tensor: ...


def _guide(images: Tensor, size: tuple[int, int], device: torch.device) -> Tensor:
    """``images`` as float32 ``(B, 3, *size)`` in ``[0, 1]`` on ``device`` (bilinear, antialiased resize)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must be (B, C, H, W) with C in (1, 3, 4), got shape {tuple(images.shape)}")
    x = images[:, :3].to(device)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
    else:
        raise TypeError(f"images must be uint8 (0-255) or float in [0, 1], got dtype {images.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x


def refine_probability(
    probability: Tensor,
    images: Tensor,
    *,
    method: str = "guided",
    radius: int = 2,
    eps: float = 1e-3,
    sigma_color: float = 0.1,
    sigma_space: float | None = None,
) -> Tensor:
    """Snap an upsampled foreground probability to the edges of the image.

    Args:
        probability: float ``(B, 1, H, W)`` in ``[0, 1]`` (e.g. from
            :func:`~torch_backswap.segmenter.logits_to_probability`).
        images: ``(B, C, h, w)`` with ``C`` in {1, 3, 4}, uint8 (0–255) or float in ``[0, 1]``: the guide.
            Resized to ``(H, W)`` if needed; moved to ``probability``'s device.
        method: ``"guided"`` – guided filter with window ``2·radius+1`` and regulariser ``eps`` (in squared
            ``[0, 1]`` intensity units: a smaller ``eps`` follows weaker edges); ``"bilateral"`` – joint
            bilateral filter, window ``2·radius+1``, ``sigma_color`` (``[0, 1]`` units, L1 colour distance)
            and ``sigma_space`` (px, default ``radius``); ``"none"`` – returned unchanged (as float32).
        radius: filter radius in pixels, ``>= 1``. About half a cell (``H / S / 2``) is a good start.

    Returns:
        float32 ``(B, 1, H, W)`` in ``[0, 1]`` on ``probability``'s device. Each sample is filtered on its
        own (the batch gives the same result as one sample at a time).

    Example:
        >>> img = torch.zeros(1, 3, 16, 16); img[..., :, 7:] = 1.0  # a sharp vertical edge at x = 7
        >>> blurry = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).contiguous()  # a ramp, no edge
        >>> out = refine_probability(blurry, img, radius=3, eps=1e-4)
        >>> out.shape, out.dtype
        (torch.Size([1, 1, 16, 16]), torch.float32)
        >>> bool(out[0, 0, 8, 5] < blurry[0, 0, 8, 5]), bool(out[0, 0, 8, 8] > blurry[0, 0, 8, 8])
        (True, True)
    """
    if not isinstance(probability, Tensor) or not probability.is_floating_point():
        raise TypeError(f"probability must be a float torch.Tensor, got "
                        f"{getattr(probability, 'dtype', type(probability).__name__)}")
    if probability.ndim != 4 or probability.shape[1] != 1:
        raise ValueError(f"probability must be (B, 1, H, W), got shape {tuple(probability.shape)}")
    if method not in REFINE_METHODS:
        raise ValueError(f"method must be one of {REFINE_METHODS}, got {method!r}")
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
        raise ValueError(f"radius must be an int >= 1, got {radius!r}")
    if images.shape[0] != probability.shape[0]:
        raise ValueError(f"images batch size {images.shape[0]} != probability batch size {probability.shape[0]}")
    prob = probability.float()
    if method == "none":
        return prob
    # imported on use: kornia is slow to import
    from kornia.filters import guided_blur, joint_bilateral_blur

    guide = _guide(images, tuple(prob.shape[-2:]), prob.device)
    kernel = 2 * radius + 1
    if method == "guided":
        if not float(eps) > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        out = guided_blur(guide, prob, kernel, float(eps))
    else:
        if not float(sigma_color) > 0:
            raise ValueError(f"sigma_color must be > 0, got {sigma_color!r}")
        space = float(radius if sigma_space is None else sigma_space)
        if not space > 0:
            raise ValueError(f"sigma_space must be > 0, got {sigma_space!r}")
        out = joint_bilateral_blur(prob, guide, kernel, float(sigma_color), (space, space))
    return out.float().clamp_(0.0, 1.0)


@torch.no_grad()
def flip_average_logits(segmenter: torch.nn.Module, images: Tensor) -> Tensor:
    """Test-time flip averaging: the mean of the cell logits of ``images`` and of their horizontal mirror.

    The mirror image's logits are mirrored back before averaging, so a cell of the result speaks for the
    same part of the image. Runs in eval mode (the previous mode is restored), without gradients.

    Args:
        segmenter: maps ``(B, C, H, W)`` images to ``(B, S, S)`` logits (a
            :class:`~torch_backswap.segmenter.PatchSegmenter`).
        images: ``(B, C, H, W)``, uint8 or float, as the segmenter accepts them.

    Returns:
        float ``(B, S, S)`` logits (the segmenter's dtype and device).
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    both = segment_logits(segmenter, torch.cat([images, images.flip(-1)]))
    plain, mirrored = both.split(images.shape[0])
    return (plain + mirrored.flip(-1)) / 2


def calibrate_threshold(
    probability: Tensor,
    grids: Tensor,
    *,
    cell_threshold: float = 0.25,
    thresholds: Sequence[float] | Tensor | None = None,
    criterion: str = "iou",
) -> tuple[float, Tensor]:
    """The tight threshold whose masks best reproduce the person's patch labels.

    Criterion: for each candidate threshold ``t``, the mask ``probability > t`` is turned into cells with the
    labelling rule (a cell is object when ``>= cell_threshold`` of it is covered,
    :func:`~torch_backswap.labels.dense_to_patch_grid`) and compared with ``grids``, pooled over the batch:
    ``"iou"`` – cell IoU of the object cells (default), ``"f1"`` – their F1 (Dice), ``"balanced_accuracy"``
    – cell balanced accuracy (:func:`~torch_backswap.metrics.cell_balanced_accuracy`; it weighs a missed
    object cell like many false ones, so it picks lower thresholds). The best ``t`` wins; ties go to the
    smallest. Use images the segmenter was **not** trained on (e.g. the validation part of the labelled
    images).

    Args:
        probability: float ``(B, 1, H, W)`` in ``[0, 1]`` (after any refinement you will use).
        grids: bool or 0/1 ``(B, S, S)`` patch labels of the same images.
        cell_threshold: the coverage rule the labels follow (0.25 for the simulated StampBirds person).
        thresholds: candidates (default ``0.05, 0.10, …, 0.95``).
        criterion: ``"iou"``, ``"f1"`` or ``"balanced_accuracy"`` (see above).

    Returns:
        ``(threshold, scores)``: the best threshold and float64 ``(T,)`` balanced accuracy per candidate.

    Example:
        >>> prob = torch.zeros(1, 1, 8, 8); prob[..., :4, :] = 0.7; prob[..., 4:, :] = 0.3
        >>> grids = torch.zeros(1, 2, 2, dtype=torch.bool); grids[:, 0] = True  # top row of cells
        >>> calibrate_threshold(prob, grids, thresholds=[0.2, 0.5, 0.8])[0]
        0.5
    """
    from .labels import dense_to_patch_grid
    from .metrics import cell_balanced_accuracy

    if not isinstance(probability, Tensor) or probability.ndim != 4 or probability.shape[1] != 1:
        raise ValueError(f"probability must be a (B, 1, H, W) tensor, got {getattr(probability, 'shape', None)}")
    if not isinstance(grids, Tensor) or grids.ndim != 3 or grids.shape[0] != probability.shape[0]:
        raise ValueError(f"grids must be a (B, S, S) tensor with B = {probability.shape[0]}, got "
                         f"{getattr(grids, 'shape', type(grids).__name__)}")
    cands = torch.arange(0.05, 0.951, 0.05) if thresholds is None else torch.as_tensor(thresholds).flatten()
    if cands.numel() == 0 or not bool(((cands >= 0) & (cands <= 1)).all()):
        raise ValueError(f"thresholds must be a non-empty list of values in [0, 1], got {thresholds!r}")
    if criterion not in ("iou", "f1", "balanced_accuracy"):
        raise ValueError(f"criterion must be 'iou', 'f1' or 'balanced_accuracy', got {criterion!r}")
    size, truth = grids.shape[-1], grids.bool()

    def agreement(t: float) -> float:
        cells = dense_to_patch_grid(probability > t, size, cell_threshold).to(truth.device)
        if criterion == "balanced_accuracy":
            return cell_balanced_accuracy(cells, truth)
        tp = (cells & truth).sum().item()
        wrong = (cells ^ truth).sum().item()
        if tp + wrong == 0:
            return 1.0
        return tp / (tp + wrong) if criterion == "iou" else 2 * tp / (2 * tp + wrong)

    scores = torch.tensor([agreement(float(t)) for t in cands.tolist()], dtype=torch.float64)
    best = int(torch.argmax(scores))  # first maximum: the smallest threshold among ties
    return round(float(cands[best]), 6), scores


def loose_hole(probability: Tensor, threshold: float = 0.1, dilate: int = 0) -> Tensor:
    """The hole to inpaint: ``probability > threshold``, grown by ``dilate`` pixels (square structuring
    element, so a pixel within ``dilate`` px in chessboard distance of the mask joins it).

    Args:
        probability: float ``(B, 1, H, W)`` in ``[0, 1]``.
        threshold: in ``[0, 1]``; the paper's loose threshold is 0.1.
        dilate: pixels to grow by, ``>= 0``.

    Returns:
        bool ``(B, 1, H, W)``.

    Example:
        >>> p = torch.zeros(1, 1, 5, 5); p[..., 2, 2] = 0.5
        >>> loose_hole(p, 0.1, dilate=1)[0, 0].int().sum().item()
        9
    """
    if not isinstance(probability, Tensor) or probability.ndim != 4 or probability.shape[1] != 1:
        raise ValueError(f"probability must be a (B, 1, H, W) tensor, got {getattr(probability, 'shape', None)}")
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if not isinstance(dilate, int) or isinstance(dilate, bool) or dilate < 0:
        raise ValueError(f"dilate must be an int >= 0, got {dilate!r}")
    hole = probability > threshold
    if dilate:  # a square's max is the max of the rows' maxima: two 1-D passes, the same mask
        k = 2 * dilate + 1
        grown = F.max_pool2d(hole.float(), (1, k), stride=1, padding=(0, dilate))
        hole = F.max_pool2d(grown, (k, 1), stride=1, padding=(dilate, 0)) > 0.5
    return hole


def cut_out_alpha(
    segmenter: torch.nn.Module,
    images: Tensor,
    *,
    tight_threshold: float,
    feather: float = 0.0,
    refiner: str | Refiner | None = None,
    flip_average: bool = False,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The object's cut-out alpha from a segmenter: float ``(B, 1, H, W)`` in ``[0, 1]`` of ``(B, 3, H, W)`` images.

    Logits through the one route (:func:`~torch_backswap.segmenter.segment_logits`; with ``flip_average`` the
    mean with the mirror image's, :func:`flip_average_logits`), bilinear probability at the images' size,
    optionally snapped to the image's edges (``refiner="guided"`` or ``"bilateral"``, radius two cells, see
    :func:`refine_probability`, or a learned :class:`~torch_backswap.edge_refiner.EdgeRefiner`), then the tight
    mask with a ``feather`` ramp (:func:`~torch_backswap.segmenter.probability_to_mask`).

    ``dtype=torch.uint8`` returns the compact alpha the compositing kernels read directly (``value / 255``, the
    float alpha rounded half up to whole levels, up to float rounding). Without ``refiner`` it is computed at the
    grid's resolution (:func:`~torch_backswap.segmenter.logits_to_alpha`): no full-resolution float probability,
    only the window of pixels around the object is upsampled. ``None`` (default): float32.
    """
    if dtype not in (None, torch.float32, torch.uint8):
        raise ValueError(f"dtype must be None, torch.float32 or torch.uint8, got {dtype!r}")
    if dtype == torch.uint8 and (refiner is None or isinstance(refiner, str) and refiner in ("", "none")):
        logits = flip_average_logits(segmenter, images) if flip_average else segment_logits(segmenter, images)
        return logits_to_alpha(logits, tuple(images.shape[-2:]), tight_threshold, feather)
    prob = cut_out_probability(segmenter, images, refiner=refiner, flip_average=flip_average)
    alpha = probability_to_mask(prob, tight_threshold, feather)
    if dtype == torch.uint8:
        return alpha.mul_(255.0).add_(0.5).to(torch.uint8)
    return alpha


def cut_out_probability(
    segmenter: torch.nn.Module, images: Tensor, *, refiner: str | Refiner | None = None, flip_average: bool = False
) -> Tensor:
    """The foreground probability behind :func:`cut_out_alpha`: float ``(B, 1, H, W)`` in ``[0, 1]``.

    Bilinear from the segmenter's logits (mean with the mirror image's with ``flip_average``), optionally
    snapped to the image's edges with ``refiner``: a method of :func:`refine_probability` (radius two cells,
    ``eps=1e-4``) or a learned refiner (anything with ``predict_probability(images, probability)``, e.g.
    :class:`~torch_backswap.edge_refiner.EdgeRefiner`).
    """
    size = tuple(images.shape[-2:])
    if not flip_average and (refiner is None or isinstance(refiner, str) and not refiner):
        return segment_probability(segmenter, images)
    logits = flip_average_logits(segmenter, images) if flip_average else segment_logits(segmenter, images)
    prob = logits_to_probability(logits, size)
    if isinstance(refiner, str):
        radius = max(1, round(2 * size[0] / logits.shape[-1]))  # two cells
        prob = refine_probability(prob, images, method=refiner, radius=radius, eps=1e-4)
    elif refiner is not None:
        prob = refiner.predict_probability(images, prob)
    return prob
