"""``EdgeRefiner``: a small learned network that snaps the segmenter's coarse probability to the object's outline.

The segmenter gives one probability per cell (a 4-px cell on a 64-px image). :func:`~torch_backswap.refine.
refine_probability` sharpens its bilinear upsampling with a fixed edge-aware filter; this module *learns* that
step: it reads the image, the upsampled probability and its guided-filter refinement, and predicts a
correction to the refined logit (its output layer starts at zero, so an untrained refiner is the guided
filter). Fully convolutional: seven dilated 3×3 residual blocks (receptive field ±45 px), 38,353 parameters.

It never sees patch labels or the user's classes: the bundled weights (``torch-backswap/edgerefine-tiny``,
``weights/train_edge_refiner.py``) are trained on synthetic composites of **non-bird** Tux Paint stamps on
photos, whose exact alpha is known, with the bundled segmenter's probability made noisier and biased so the
refiner learns to fix a weak segmenter's mistakes rather than trust it. It runs at ``work_size`` (64 px, the
scale it was trained at: 4 px per cell of a 16-cell grid); other image sizes are resized to it and the
result is resized back.

Use it through the cut-out route (:class:`~torch_backswap.cutout.CutOut`: ``CutOut(segmenter, refiner)``, :func:`~torch_backswap.refine.
cut_out_probability`) or directly:

Example:
    >>> import torch
    >>> from torch_backswap.edge_refiner import EdgeRefiner
    >>> refiner = EdgeRefiner()  # untrained: the guided filter
    >>> images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    >>> prob = torch.rand(2, 1, 64, 64)
    >>> refiner.predict_probability(images, prob).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from .hub import load_pretrained_model, save_pretrained_model
from .refine import _guide, refine_probability
from .segmenter import eval_mode

__all__ = ["DEFAULT_EDGE_REFINER", "EdgeRefiner"]

#: Hub id of the bundled weights (``weights/edgerefine-tiny``).
DEFAULT_EDGE_REFINER = "torch-backswap/edgerefine-tiny"

_MEAN, _STD = 0.45, 0.25  # image normalisation (the training composites' rough statistics)


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


class EdgeRefiner(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="torch-backswap",
    tags=["torch-backswap", "image-segmentation", "matting"],
    repo_url="https://github.com/torch-backswap/torch-backswap",
):
    """Learned refinement of an upsampled foreground probability (see the module docs).

    Args (the Hub config):
        width: channels of the residual blocks.
        dilations: one 3×3 residual block per entry, with that dilation.
        guided_radius, guided_eps: the guided filter whose logit the network corrects
            (:func:`~torch_backswap.refine.refine_probability`), at ``work_size``.
        work_size: side (px) the refiner runs at; ``None`` runs at the images' own size.
    """

    def __init__(
        self,
        width: int = 24,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4, 8, 4, 2, 1),
        guided_radius: int = 6,
        guided_eps: float = 1e-4,
        work_size: int | None = 64,
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if not dilations or any(not isinstance(d, int) or d < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty sequence of positive ints, got {dilations!r}")
        if work_size is not None and (not isinstance(work_size, int) or work_size < 8):
            raise ValueError(f"work_size must be an int >= 8 or None, got {work_size!r}")
        self.width = width
        self.dilations = tuple(int(d) for d in dilations)
        self.guided_radius = int(guided_radius)
        self.guided_eps = float(guided_eps)
        self.work_size = work_size
        # inputs: RGB, probability, guided probability, and both as logits (/ 4)
        self.inp = nn.Conv2d(7, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in self.dilations)
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for _ in self.dilations)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)  # untrained = the guided filter
        nn.init.zeros_(self.out.bias)

    @property
    def config(self) -> dict[str, Any]:
        return {"width": self.width, "dilations": list(self.dilations), "guided_radius": self.guided_radius,
                "guided_eps": self.guided_eps, "work_size": self.work_size}

    def forward(self, images: Tensor, probability: Tensor, *,
                memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
        """Refined foreground logits, float ``(B, 1, h, w)``, of float ``(B, 3, h, w)`` images in ``[0, 1]`` and
        their upsampled probability ``(B, 1, h, w)``, both already at the working size (the training route).

        ``memory_format=torch.channels_last`` runs the convolutions in NHWC (about 1.8× faster on a CPU; the
        logits agree to ~1e-6, not bit for bit); :meth:`predict_probability` uses it on a CPU."""
        guided = refine_probability(probability, images, method="guided", radius=self.guided_radius,
                                    eps=self.guided_eps)
        guided_logit, plain_logit = _logit(guided), _logit(probability)
        x = torch.cat([(images - _MEAN) / _STD, probability.clamp(1e-4, 1 - 1e-4), guided.clamp(1e-4, 1 - 1e-4),
                       plain_logit / 4, guided_logit / 4], 1).contiguous(memory_format=memory_format)
        h = F.relu(self.inp(x))
        for conv, norm in zip(self.blocks, self.norms):
            h = h + F.relu(norm(conv(h)))
        return guided_logit + self.out(h)

    @torch.no_grad()
    def predict_probability(self, images: Tensor, probability: Tensor) -> Tensor:
        """The refined probability, float32 ``(B, 1, H, W)`` in ``[0, 1]``: ``images`` ``(B, C, H, W)`` uint8 or
        float in ``[0, 1]`` (C = 1, 3 or 4), ``probability`` float ``(B, 1, H, W)``; run in eval mode at
        ``work_size`` on the refiner's device, returned at ``(H, W)`` on the probability's device."""
        if not isinstance(probability, Tensor) or probability.ndim != 4 or probability.shape[1] != 1:
            raise ValueError(f"probability must be a (B, 1, H, W) tensor, got {getattr(probability, 'shape', probability)!r}")
        size = tuple(probability.shape[-2:])
        work = size if self.work_size is None else (self.work_size, self.work_size)
        device = next(self.parameters()).device
        x = _guide(images, work, device)
        p = probability.to(device=device, dtype=torch.float32)
        if work != size:
            p = F.interpolate(p, size=work, mode="bilinear", align_corners=False, antialias=True)
        layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        with eval_mode(self):
            out = torch.sigmoid(self(x, p.clamp(0, 1), memory_format=layout)).contiguous()
        if work != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)
        return out.to(probability.device)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike = DEFAULT_EDGE_REFINER,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        map_location: str | torch.device = "cpu",
    ) -> EdgeRefiner:
        """Load a refiner from a local directory, the Hub or the bundled weights
        (:func:`~torch_backswap.hub.resolve_pretrained`): ``config.json`` and ``model.safetensors`` only, never a
        pickle (:func:`~torch_backswap.hub.load_pretrained_model`); returned in eval mode."""
        return load_pretrained_model(cls, pretrained_model_name_or_path, what="edge refiner", revision=revision,
                                     cache_dir=cache_dir, local_files_only=local_files_only,
                                     map_location=map_location)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> str | None:  # type: ignore[override]
        """Write ``model.safetensors``, ``config.json`` and a model card durably
        (:func:`~torch_backswap.hub.save_pretrained_model`; ``kwargs`` as there)."""
        return save_pretrained_model(self, save_directory, **kwargs)

    def extra_repr(self) -> str:
        return f"width={self.width}, dilations={self.dilations}, work_size={self.work_size}"
