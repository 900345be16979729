"""int8 CPU inference for the tiny :class:`~torch_backswap.segmenter.PatchSegmenter` (``torch.ao`` static quantization).

On one CPU core the segmenter is the largest part of a swap that segments on the fly. Static int8
quantization of its convolutional trunk (``torch.ao.quantization`` FX mode, the ``x86`` / ``fbgemm``
backend, per-channel weights, activations calibrated on a few images) runs it about twice as fast with
the same masks up to a small change (tight-mask IoU on the StampBirds test split within 0.01; see
``python -m benchmarks.throughput``). Dynamic quantization would not help: it covers ``Linear`` / ``LSTM``
layers only and the tiny trunk is all convolutions. Note: torch marks its quantized tensor types as
deprecated in favour of the ``torchao`` package; this module uses the ``torch.ao`` API that ships with torch.

    seg = PatchSegmenter.from_pretrained()
    fast = quantize_segmenter(seg, calibration_images)     # (N, 3, H, W) uint8, a few dozen images
    swap = BackgroundSwap(bank, fast)                       # CPU only (DataLoader workers, collate swap)

The quantized model is a CPU module with the segmenter's interface (``forward(images) -> (B, S, S)``
logits, ``input_size``, ``grid_size``), so :func:`~torch_backswap.segmenter.segment_logits` and the
swap use it unchanged. It cannot be moved to a GPU (on a GPU run the float model in bf16 instead).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .segmenter import PatchSegmenter, segmenter_input

__all__ = ["QuantizedPatchSegmenter", "quantize_segmenter"]


class QuantizedPatchSegmenter(nn.Module):
    """An int8 copy of a ``"tiny"`` :class:`PatchSegmenter` for CPU inference (see :func:`quantize_segmenter`).

    ``forward``: ``(B, C, H, W)`` uint8 or float images in ``[0, 1]`` (any size; resized to ``input_size``
    by the float model's :meth:`~PatchSegmenter.normalize`) → float32 logits ``(B, S, S)``.
    """

    def __init__(self, segmenter: PatchSegmenter, features: nn.Module, recipe: tuple | None = None) -> None:
        super().__init__()
        # (float segmenter, calibration inputs at input_size, backend): pickling rebuilds from these, because
        # torch cannot unpickle a converted FX graph module (DataLoader workers started by spawn need it)
        self._recipe = recipe
        self.grid_size = segmenter.grid_size
        self.input_size = segmenter.input_size
        self.backbone_name = segmenter.backbone_name
        self.register_buffer("mean", segmenter.mean.detach().clone(), persistent=False)
        self.register_buffer("std", segmenter.std.detach().clone(), persistent=False)
        self.features = features  # int8 trunk: float in, float out (quantize / dequantize inside)
        self.head = copy.deepcopy(segmenter.net.head)  # Dropout2d + 1x1 conv to one logit per cell, float

    def normalize(self, images: Tensor) -> Tensor:
        """The float model's input preparation (:meth:`PatchSegmenter.normalize`): resized, normalised float."""
        return PatchSegmenter.normalize(self, images)

    def forward(self, images: Tensor) -> Tensor:
        unbatched = images.ndim == 3
        x = self.normalize(images[None] if unbatched else images)
        features = self.features(x)
        if features.shape[-2:] != (self.grid_size, self.grid_size):
            features = F.adaptive_avg_pool2d(features, (self.grid_size, self.grid_size))
        logits = self.head(features)[:, 0]
        return logits[0] if unbatched else logits

    def __reduce__(self):
        if self._recipe is None:
            raise TypeError("this QuantizedPatchSegmenter was not made by quantize_segmenter and cannot be pickled")
        return (_requantize, self._recipe)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, backbone={self.backbone_name!r} (int8), input_size={self.input_size}"


def quantize_segmenter(
    segmenter: PatchSegmenter,
    calibration: Tensor,
    *,
    backend: str | None = None,
    batch_size: int = 32,
) -> QuantizedPatchSegmenter:
    """Statically quantize the convolutional trunk of a ``"tiny"`` segmenter to int8 for CPU inference.

    Args:
        segmenter: a :class:`PatchSegmenter` with ``backbone="tiny"`` (not changed; a copy is quantized).
        calibration: ``(N, 3, H, W)`` uint8 or float images like the ones it will see (a few dozen are
            enough); they set the activation ranges.
        backend: ``torch.backends.quantized`` engine, default ``"x86"`` where available, else ``"fbgemm"``
            or ``"qnnpack"`` (ARM).
        batch_size: calibration batch size.

    Returns:
        A :class:`QuantizedPatchSegmenter` in eval mode, on the CPU.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not isinstance(segmenter, PatchSegmenter):
        raise TypeError(f"segmenter must be a PatchSegmenter, got {type(segmenter).__name__}")
    if segmenter.backbone_name != "tiny":
        raise ValueError(f"quantize_segmenter supports the 'tiny' backbone only, got backbone={segmenter.backbone_name!r}")
    if not isinstance(calibration, Tensor) or calibration.ndim != 4 or calibration.shape[0] < 1:
        shape = tuple(calibration.shape) if isinstance(calibration, Tensor) else type(calibration).__name__
        raise ValueError(f"calibration must be a non-empty (N, 3, H, W) image tensor, got {shape}")
    engines = torch.backends.quantized.supported_engines
    if backend is None:
        backend = next((e for e in ("x86", "fbgemm", "qnnpack") if e in engines), None)
    if backend not in engines:
        raise ValueError(f"backend must be one of the engines this torch supports {engines}, got {backend!r}")
    torch.backends.quantized.engine = backend
    source = copy.deepcopy(segmenter).cpu().eval()
    with torch.no_grad():
        inputs = torch.cat([segmenter_input(calibration[i : i + batch_size].cpu(), source)
                            for i in range(0, calibration.shape[0], batch_size)])
        example = source.normalize(inputs[:1])
        prepared = prepare_fx(copy.deepcopy(source.net.features), get_default_qconfig_mapping(backend), (example,))
        for i in range(0, inputs.shape[0], batch_size):
            prepared(source.normalize(inputs[i : i + batch_size]))
    with warnings.catch_warnings():  # torch's deprecation notice for its quantized tensor types, once per conv
        warnings.simplefilter("ignore", UserWarning)
        trunk = convert_fx(prepared)
    return QuantizedPatchSegmenter(source, trunk, recipe=(segmenter, inputs, backend)).eval()


def _requantize(segmenter: PatchSegmenter, inputs: Tensor, backend: str) -> QuantizedPatchSegmenter:
    return quantize_segmenter(segmenter, inputs, backend=backend)
