"""``CutOut``: the one route from images to the object's alpha.

A segmenter and everything that turns its coarse cell logits into a pixel alpha, in one object: flip averaging,
the refiner (a filter name or a learned :class:`~torch_backswap.edge_refiner.EdgeRefiner`), the tight threshold and
the feather ramp. ``cut_out(images) -> alpha``. :class:`~torch_backswap.transform.BackgroundSwap`,
:func:`~torch_backswap.diagnose.background_gap` and the benchmarks all cut objects out through it
(:func:`~torch_backswap.refine.cut_out_alpha` underneath)::

    cut_out = CutOut(segmenter)                                   # the paper's bilinear route, p > 0.67
    cut_out = CutOut(segmenter, EdgeRefiner.from_pretrained())    # the measured best: flip-averaged, p > 0.5
    cut_out = CutOut.from_pretrained()                            # the same, both loaded
    alpha = cut_out(images)                                       # (B, 1, H, W) float in [0, 1]
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_fraction, check_non_negative, describe
from .edge_refiner import DEFAULT_EDGE_REFINER, EdgeRefiner
from .hub import DEFAULT_SEGMENTER
from .refine import REFINE_METHODS, REFINED_TIGHT_THRESHOLD, cut_out_alpha, cut_out_probability, is_learned_refiner
from .segmenter import TIGHT_THRESHOLD

__all__ = ["CutOut"]


class CutOut(nn.Module):
    """The object's cut-out alpha of images: segmenter → (flip average) → probability → (refiner) → tight mask.

    Args:
        segmenter: a :class:`~torch_backswap.segmenter.PatchSegmenter` or any callable ``images (B, 3, H, W)
            uint8|float -> (B, S, S) logits``.
        refiner: ``"guided"`` or ``"bilateral"`` (snap the upsampled probability to the image's edges,
            :func:`~torch_backswap.refine.refine_probability`, radius two cells), a learned refiner
            (:class:`~torch_backswap.edge_refiner.EdgeRefiner`, moved by :meth:`to` with the segmenter) or ``None``
            (default: the bilinear upsampling, the paper's route).
        tight_threshold: foreground probability of the cut-out (default 0.67, the paper's; 0.5 with a learned
            refiner, :data:`~torch_backswap.refine.REFINED_TIGHT_THRESHOLD`).
        feather: ramp width in probability units around ``tight_threshold`` (soft edges).
        flip_average: average the logits with the mirror image's (default: on with a learned refiner, the
            measured route; off otherwise).

    Example:
        >>> import torch
        >>> def segmenter(images):  # the centre 2x2 cells of a 4x4 grid are the object
        ...     logits = torch.full((images.shape[0], 4, 4), -8.0); logits[:, 1:3, 1:3] = 8.0; return logits
        >>> alpha = CutOut(segmenter)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        >>> alpha.shape, float(alpha[0, 0, 16, 16]), float(alpha[0, 0, 0, 0])
        (torch.Size([2, 1, 32, 32]), 1.0, 0.0)
    """

    def __init__(
        self,
        segmenter: nn.Module | Callable[[Tensor], Tensor],
        refiner: str | nn.Module | None = None,
        *,
        tight_threshold: float | None = None,
        feather: float = 0.1,
        flip_average: bool | None = None,
    ) -> None:
        super().__init__()
        if not callable(segmenter):
            raise TypeError(f"segmenter must be callable (images -> (B, S, S) logits), got {describe(segmenter)}")
        if refiner is not None and not isinstance(refiner, str) and not is_learned_refiner(refiner):
            raise TypeError("refiner must be None, 'guided', 'bilateral' or a learned refiner with "
                            f"predict_probability(images, probability) (e.g. EdgeRefiner), got {describe(refiner)}")
        if isinstance(refiner, str):
            refiner = check_choice("refiner", refiner, tuple(m for m in REFINE_METHODS if m != "none"))
        learned = is_learned_refiner(refiner)  # its route: flip-averaged, cut at its per-pixel p > 0.5
        default_threshold = REFINED_TIGHT_THRESHOLD if learned else TIGHT_THRESHOLD
        self.segmenter = segmenter
        self.refiner = refiner
        self.tight_threshold = check_fraction(
            "tight_threshold", default_threshold if tight_threshold is None else tight_threshold
        )
        self.feather = check_non_negative("feather", feather)
        self.flip_average = learned if flip_average is None else bool(flip_average)

    @classmethod
    def from_pretrained(
        cls,
        segmenter_name_or_path: str | os.PathLike = DEFAULT_SEGMENTER,
        *,
        refiner: str | os.PathLike | None = DEFAULT_EDGE_REFINER,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> "CutOut":
        """Load a pretrained :class:`~torch_backswap.segmenter.PatchSegmenter` (default: the bundled one) and, by
        default, the learned :class:`~torch_backswap.edge_refiner.EdgeRefiner`: the measured best route
        (``benchmarks/RESULTS.md``, *mask_quality* and *robustness*, ``backswap_edge``). ``refiner=None`` keeps
        the paper's bilinear route; ``refiner="guided"`` / ``"bilateral"`` a filter; another string or path names
        the refiner's weights. ``kwargs`` go to :class:`CutOut`."""
        from .segmenter import PatchSegmenter

        hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only}
        hub = {k: v for k, v in hub.items() if v is not None}
        segmenter = PatchSegmenter.from_pretrained(segmenter_name_or_path, **hub)
        if refiner is not None and not (isinstance(refiner, str) and refiner in REFINE_METHODS):
            refiner = EdgeRefiner.from_pretrained(refiner, **hub)
        return cls(segmenter, refiner, **kwargs)

    def forward(self, images: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The tight, feathered object alpha ``(B, 1, H, W)`` of ``(B, 3, H, W)`` uint8 or ``[0, 1]`` float images
        (:func:`~torch_backswap.refine.cut_out_alpha`): float32 in ``[0, 1]`` by default; ``dtype=torch.uint8``
        gives the compact alpha the compositing kernels read (``value / 255``, within one level of the float's)."""
        return cut_out_alpha(self.segmenter, images, tight_threshold=self.tight_threshold, feather=self.feather,
                             refiner=self.refiner, flip_average=self.flip_average, dtype=dtype)

    def probability(self, images: Tensor) -> Tensor:
        """The foreground probability behind the alpha (:func:`~torch_backswap.refine.cut_out_probability`)."""
        return cut_out_probability(self.segmenter, images, refiner=self.refiner, flip_average=self.flip_average)

    def extra_repr(self) -> str:
        refiner = self.refiner if isinstance(self.refiner, str) or self.refiner is None else type(self.refiner).__name__
        return (f"refiner={refiner!r}, tight_threshold={self.tight_threshold}, feather={self.feather}, "
                f"flip_average={self.flip_average}")
