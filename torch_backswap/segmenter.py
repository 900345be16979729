"""PatchSegmenter: images → S×S foreground logits, and helpers that turn them into image-size masks.

Functional core
---------------
* :func:`logits_to_probability` – ``(B,S,S)`` logits → ``(B,1,H,W)`` foreground probability, upsampled
  **bilinearly on probabilities** (smooth, no blocky cells);
* :func:`probability_to_mask` – threshold with an optional soft ramp (feathering);
* :data:`TIGHT_THRESHOLD` (0.67, cut-out with little background) and :data:`LOOSE_THRESHOLD`
  (0.1, covers the whole object; the hole to inpaint).

The model
---------
:class:`PatchSegmenter` normalises and resizes internally: it takes ``(B,C,H,W)`` uint8 or float images in
``[0, 1]`` of any size, with ``C`` = 3, 1 (grayscale, repeated) or 4 (RGBA, alpha dropped).

Backbones:

* ``"tiny"`` (default) – a small fully-convolutional CNN built here: three stride-2 stages down to
  ``input_size/8`` (= S at the default 128 px, 16 cells), two dilated residual blocks and a global-context
  gate for a receptive field that spans most of the image, then a 1×1 conv head – one logit per cell.
  Fully convolutional means each cell's logit is computed the same way wherever the cell is, which suits
  the whole-cell shift augmentation and trains quickly from scratch on a CPU.
* ``"mobilenet_v3_small"``, ``"efficientnet_b0"``, ``"resnet18"`` – torchvision feature extractors
  (ImageNet weights with ``pretrained_backbone=True``) with the paper's patch head: global average
  pooling → Dropout → Linear(C, 2S²) → GELU → Linear(2S², S²). Their stride-32 feature maps are coarser than
  the grid (4×4 at 128 px), so a conv head would need to invent resolution; the pooled MLP head lets every
  cell see the whole image, as in the reference detector.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ._checks import check_images
from ._image import to_rgb
from .backbones import BACKBONES, PooledPatchHead, TinyPatchNet, torchvision_features
from .hub import DEFAULT_SEGMENTER, load_pretrained_model, save_pretrained_model

__all__ = [
    "BACKBONES",
    "DEFAULT_SEGMENTER",
    "LOOSE_THRESHOLD",
    "TIGHT_THRESHOLD",
    "PatchSegmenter",
    "logits_to_probability",
    "prepare_images",
    "probability_to_mask",
    "eval_mode",
    "logits_to_alpha",
    "segment_logits",
    "segment_probability",
    "segmenter_input",
]

#: Foreground probability above which a pixel belongs to the *tight* (cut-out) mask.
TIGHT_THRESHOLD = 0.67
#: Foreground probability above which a pixel belongs to the *loose* (hole to fill) mask.
LOOSE_THRESHOLD = 0.1
#: Supported backbone names.

#: ImageNet channel means and standard deviations (RGB, for images in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------------
# Functional helpers


def prepare_images(images: Tensor) -> Tensor:
    """Bring images to float ``(B, 3, H, W)`` in ``[0, 1]``.

    Accepts ``(B,C,H,W)`` or ``(C,H,W)``, uint8 (0–255) or float (``[0, 1]``), ``C`` in {1, 3, 4}: grayscale
    is repeated to 3 channels, the alpha channel of RGBA is dropped. Float dtypes are kept.
    """
    x = check_images(images, "images", ndims=(3, 4), check_values=False)
    x = to_rgb(x[None] if x.ndim == 3 else x)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def logits_to_probability(logits: Tensor, size: tuple[int, int] | Sequence[int]) -> Tensor:
    """Foreground probability at image resolution.

    Args:
        logits: ``(B, S, S)`` (or ``(B, 1, S, S)``) cell logits.
        size: ``(H, W)`` of the output.

    Returns:
        FloatTensor ``(B, 1, H, W)`` in ``[0, 1]``: sigmoid per cell, then bilinear upsampling of the
        probabilities (``align_corners=False``), so masks follow smooth contours rather than cell blocks.
    """
    if logits.ndim == 3:
        logits = logits[:, None]
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (B,S,S) or (B,1,S,S), got shape {tuple(logits.shape)}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive ints, got {tuple(size)!r}")
    prob = torch.sigmoid(logits.float())
    if prob.shape[-2:] == (height, width):
        return prob
    return F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def probability_to_mask(prob: Tensor, threshold: float, feather: float = 0.0) -> Tensor:
    """Threshold a probability map into a (soft) mask.

    Args:
        prob: ``(B, 1, H, W)`` float in ``[0, 1]``.
        threshold: object where ``prob > threshold`` (e.g. :data:`TIGHT_THRESHOLD`, :data:`LOOSE_THRESHOLD`).
        feather: width, in probability units, of a linear ramp centred on ``threshold``
            (``0`` at ``threshold - feather/2``, ``1`` at ``threshold + feather/2``); ``0`` gives a hard mask.

    Returns:
        Float tensor of ``prob``'s shape and dtype with values in ``[0, 1]``.
    """
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if float(feather) < 0:
        raise ValueError(f"feather must be >= 0, got {feather!r}")
    dtype = prob.dtype if prob.is_floating_point() else torch.float32
    if feather == 0:
        return (prob > threshold).to(dtype)
    return ((prob.to(dtype) - threshold) / float(feather) + 0.5).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=32)
def _upsample_matrix(n_out: int, n_in: int) -> tuple[Tensor, tuple[int, ...], tuple[int, ...]]:
    """The ``(n_out, n_in)`` float32 matrix of 1-D bilinear upsampling as :func:`torch.nn.functional.interpolate`
    computes it (``align_corners=False``, size given), and for each input cell the first and last output index
    whose value depends on it."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    l1 = src - i0.double()
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    weights.index_put_((rows, i0), 1.0 - l1, accumulate=True)
    weights.index_put_((rows, i1), l1, accumulate=True)
    used = weights > 0
    first = tuple(int(used[:, k].nonzero()[0]) if bool(used[:, k].any()) else n_out for k in range(n_in))
    last = tuple(int(used[:, k].nonzero()[-1]) if bool(used[:, k].any()) else -1 for k in range(n_in))
    return weights.float(), first, last


def logits_to_alpha(logits: Tensor, size: tuple[int, int] | Sequence[int], threshold: float,
                    feather: float = 0.0) -> Tensor:
    """The cut-out alpha as ``uint8`` (``value / 255``) straight from cell logits, without full-resolution float work.

    Equals ``probability_to_mask(logits_to_probability(logits, size), threshold, feather)`` rounded to whole
    levels of ``1/255`` (half up), up to float rounding: bilinear upsampling is linear and its weights sum to 1,
    so the ramp ``(p - threshold) / feather + 0.5`` (scaled to ``0..255``) is applied to the ``S x S`` cell
    probabilities first and upsampled after. On the CPU only the window of pixels that depend on a cell with a
    positive value is upsampled (two small matrix products per image, into a zero frame): every other pixel is a
    convex combination of non-positive values, so its alpha is 0. On other devices one batched upsampling.
    ``feather=0`` gives a hard 0/255 mask (``p > threshold``).

    Args:
        logits: ``(B, S, S)`` (or ``(B, 1, S, S)``) cell logits.
        size: ``(H, W)`` of the alpha.
        threshold, feather: as in :func:`probability_to_mask`.

    Returns:
        uint8 ``(B, 1, H, W)`` on the logits' device.
    """
    if logits.ndim == 3:
        logits = logits[:, None]
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (B,S,S) or (B,1,S,S), got shape {tuple(logits.shape)}")
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if float(feather) < 0:
        raise ValueError(f"feather must be >= 0, got {feather!r}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive ints, got {tuple(size)!r}")
    b, _, sh, sw = logits.shape
    prob = torch.sigmoid(logits.float())
    if feather == 0:
        cells = prob - float(threshold)  # > 0 inside; the sign of the upsampled value decides
    else:  # the ramp in 0..255 (+ 0.5: truncating to uint8 then rounds half up)
        cells = (prob - float(threshold)).mul_(255.0 / float(feather)).add_(127.5 + 0.5)
    out = torch.zeros(b, 1, height, width, dtype=torch.uint8, device=logits.device)
    if b == 0:
        return out

    def to_uint8(values: Tensor, target: Tensor) -> None:
        if feather == 0:
            target.copy_(values > 0).mul_(255)
        else:
            # truncation gives floor(v + 0.5) of the ramp (through int16: vectorised, the same values)
            target.copy_(values.clamp_(0.0, 255.0).to(torch.int16))

    if logits.device.type != "cpu":
        up = F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)
        to_uint8(up, out)
        return out
    wy, first_y, last_y = _upsample_matrix(height, sh)
    wx, first_x, last_x = _upsample_matrix(width, sw)
    positive = cells[:, 0] > (0.0 if feather == 0 else 1.0)  # ramp values <= 1 truncate to alpha 0
    rows = positive.any(2).tolist()
    cols = positive.any(1).tolist()
    for i in range(b):
        if True not in rows[i]:
            continue
        r0, r1 = rows[i].index(True), sh - 1 - rows[i][::-1].index(True)
        c0, c1 = cols[i].index(True), sw - 1 - cols[i][::-1].index(True)
        y0, y1 = first_y[r0], last_y[r1]
        x0, x1 = first_x[c0], last_x[c1]
        # only the cells that reach the window: [y0, y1] depends on cells first..last with a nonzero weight
        window = wy[y0 : y1 + 1] @ cells[i, 0] @ wx[x0 : x1 + 1].T
        to_uint8(window, out[i, 0, y0 : y1 + 1, x0 : x1 + 1])
    return out


def segmenter_input(images: Tensor, segmenter: Any) -> Tensor:
    """Shrink a large uint8 CPU batch to the segmenter's own input size before it runs.

    A :class:`PatchSegmenter` converts its input to float at full resolution and then resizes it to
    ``input_size`` (antialiased). For uint8 images on the CPU that are *larger* than ``input_size`` this does
    the resize first, on the uint8 bytes in channels-last layout (torch's vectorised uint8 antialias path),
    so the segmenter never touches the full-resolution image: ~20x less work for that step at 224 px. The
    only difference is the rounding of the resized pixels to whole grey levels, which moves the foreground
    probabilities by less than 0.02 (tested). Anything else (float images, GPU, callables without an
    ``input_size``, images at or below that size) is returned unchanged: upsampling in uint8 would only add
    rounding.

    Args:
        images: ``(B, 3, H, W)``.
        segmenter: the segmenter about to run.

    Returns:
        ``(B, 3, s, s)`` uint8 channels-last with ``s = segmenter.input_size``, or ``images``.
    """
    size = getattr(segmenter, "input_size", None)
    if (
        not isinstance(size, int)
        or images.dtype != torch.uint8
        or images.device.type != "cpu"
        or images.ndim != 4
        or images.shape[1] != 3
        or images.shape[-2] <= size
        or images.shape[-1] <= size
    ):
        return images
    # resize first, then lay out the small result channels-last for the convolutions: the same bytes as
    # resizing a channels-last copy of the full frame, without that full-frame permuting copy
    x = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[Any]:
    """Run ``module`` in eval mode under ``torch.no_grad`` and restore its previous mode afterwards.

    Every submodule runs in eval mode and gets its own mode back (a module in eval mode whose submodule was left
    in training mode still runs all in eval). Anything that is not an ``nn.Module`` (a plain callable) is used
    as is.
    """
    training = [m for m in module.modules() if m.training] if isinstance(module, nn.Module) else []
    for m in training:
        m.training = False
    try:
        with torch.no_grad():
            yield module
    finally:
        for m in training:
            m.training = True


def segment_logits(segmenter: Any, images: Tensor) -> Tensor:
    """The one route from images to cell logits, for a :class:`PatchSegmenter` or any callable
    ``images (B, 3, H, W) -> (B, S, S) logits``.

    Runs in eval mode without gradients (:func:`eval_mode`), on :func:`segmenter_input`, on the segmenter's
    device. Returns float ``(B, S, S)`` logits on the images' device.
    """
    seg_device = next((t.device for t in segmenter.parameters()), None) if isinstance(segmenter, nn.Module) else None
    x = segmenter_input(images, segmenter)
    if seg_device is not None and x.device != seg_device:
        x = x.to(seg_device)
    with eval_mode(segmenter):
        logits = segmenter(x)
    if not isinstance(logits, Tensor) or logits.ndim not in (3, 4) or logits.shape[0] != images.shape[0]:
        raise ValueError(
            f"the segmenter must return ({images.shape[0]}, S, S) logits, got {getattr(logits, 'shape', type(logits))}"
        )
    return (logits[:, 0] if logits.ndim == 4 else logits).to(images.device)


def segment_probability(segmenter: Any, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Foreground probability ``(B, 1, H, W)`` float32 of ``images`` at ``size`` (default: the images' size):
    :func:`segment_logits`, then :func:`logits_to_probability` (one upsampling, straight to ``size``)."""
    out_size = tuple(images.shape[-2:]) if size is None else tuple(size)
    return logits_to_probability(segment_logits(segmenter, images), out_size)


# ----------------------------------------------------------------------------------------------------------
# The model


class PatchSegmenter(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="torch-backswap",
    tags=["torch-backswap", "image-segmentation", "background-swap"],
    license="mit",
):
    """Predicts, for each cell of an S×S grid over the (resized) image, whether it shows the object.

    Args:
        grid_size: ``S``, cells per side.
        backbone: one of :data:`BACKBONES`.
        input_size: images are resized to ``input_size × input_size`` inside :meth:`forward`.
        pretrained_backbone: load torchvision ImageNet weights (needs internet or the torch hub cache;
            ignored for ``"tiny"``).
        width: channel width of the ``"tiny"`` backbone.
        dropout: dropout before the head.

    The configuration (these arguments) is saved as ``config.json`` by :meth:`save_pretrained`, the weights
    as ``model.safetensors``; :meth:`from_pretrained` reads both back without unpickling anything.
    """

    def __init__(
        self,
        grid_size: int = 16,
        backbone: str = "tiny",
        input_size: int = 128,
        pretrained_backbone: bool = False,
        width: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if not isinstance(input_size, int) or input_size < 32:
            raise ValueError(f"input_size must be an int >= 32, got {input_size!r}")
        if not isinstance(width, int) or width < 8:
            raise ValueError(f"width must be an int >= 8, got {width!r}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.grid_size = grid_size
        self.backbone_name = backbone
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if backbone == "tiny":
            self.net: nn.Module = TinyPatchNet(grid_size, width, float(dropout))
        else:
            features, channels = torchvision_features(backbone, bool(pretrained_backbone))
            self.net = nn.Sequential(features, PooledPatchHead(channels, grid_size, float(dropout)))

    @property
    def config(self) -> dict:
        """The constructor arguments (what ``config.json`` holds)."""
        return dict(self._hub_mixin_config or {})

    def normalize(self, images: Tensor) -> Tensor:
        """``(B,C,H,W)`` uint8/float images → resized, ImageNet-normalised ``(B,3,input_size,input_size)``
        in the model's dtype and device."""
        size = (self.input_size, self.input_size)
        if images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3 and images.shape[-2:] == size \
                and self.mean.dtype == torch.float32:
            # uint8 already at the input size (what segmenter_input hands over): one fused pass instead of four,
            # x * (1 / (255 std)) - mean / std (differs from (x / 255 - mean) / std by float rounding only)
            # computed on the (B, H, W, 3) view with the constants tiled along a row: the channels-last batch from
            # segmenter_input is then one contiguous run per row (the (1, 3, 1, 1) broadcast over channels-last
            # data does not vectorise; ~4x slower), the same values element for element
            x = images.to(device=self.mean.device, dtype=torch.float32).permute(0, 2, 3, 1)
            width = x.shape[2]
            shift = (-self.mean / self.std).view(1, 1, 1, 3).expand(1, 1, width, 3).contiguous()
            scale = (1.0 / (255.0 * self.std)).view(1, 1, 1, 3).expand(1, 1, width, 3).contiguous()
            return torch.addcmul(shift, x, scale).permute(0, 3, 1, 2)
        x = prepare_images(images)
        dtype = self.mean.dtype
        x = x.to(device=self.mean.device, dtype=dtype if dtype.is_floating_point else torch.float32)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        """``images`` ``(B,C,H,W)`` (or ``(C,H,W)``) uint8 or float in ``[0,1]`` → logits ``(B,S,S)`` float
        (``(S,S)`` for an unbatched input)."""
        unbatched = images.ndim == 3
        logits = self.net(self.normalize(images))
        return logits[0] if unbatched else logits

    def predict_logits(self, images: Tensor) -> Tensor:
        """Cell logits ``(B, S, S)`` float32 of ``(B, C, H, W)`` (or ``(C, H, W)``) uint8 / float images, in eval
        mode without gradients (the previous mode is restored): :func:`segment_logits`.

        Example:
            >>> import torch
            >>> seg = PatchSegmenter(grid_size=4, input_size=32)
            >>> tuple(seg.predict_logits(torch.zeros(2, 3, 40, 50, dtype=torch.uint8)).shape)
            (2, 4, 4)
        """
        return segment_logits(self, images[None] if images.ndim == 3 else images)

    def predict_probability(self, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Foreground probability ``(B, 1, H, W)`` float32 in ``[0, 1]`` at ``size`` (default: the images'
        ``(H, W)``): :func:`segment_probability`."""
        return segment_probability(self, images[None] if images.ndim == 3 else images, size)

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike = DEFAULT_SEGMENTER,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        **overrides,
    ) -> "PatchSegmenter":
        """Load a segmenter from a local directory, the Hub or the bundled weights (see
        :func:`torch_backswap.hub.resolve_pretrained`). Reads ``config.json`` (JSON) and
        ``model.safetensors`` only – never a pickle. ``overrides`` replace config entries (e.g.
        ``dropout``); the model is returned in eval mode. Weights saved by :meth:`save_pretrained` carry a
        sha256 of their tensors, checked here.

        Raises:
            PretrainedNotFoundError: no directory, Hub repo or bundled copy holds both files.
            BackswapFileError: naming ``config.json`` (not UTF-8 / not JSON / not an object / invalid values) or
                ``model.safetensors`` (empty, truncated, corrupt, another format, a checksum mismatch, or
                tensors that do not fit the model the config describes); the underlying error is chained.
        """
        return load_pretrained_model(
            cls, pretrained_model_name_or_path, what="segmenter", fixed={"pretrained_backbone": False},
            overrides=overrides, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            map_location=map_location, strict=strict)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> str | None:  # type: ignore[override]
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` (unless present) to
        ``save_directory``, each durably (:mod:`torch_backswap._io`: a temporary file unique to this writer,
        ``fsync``, ``os.replace``): an interrupted save leaves each file old or new, never half written. The
        weights' header carries a sha256 of the tensors, which :meth:`from_pretrained` checks.
        ``config`` replaces :attr:`config`; ``push_to_hub`` and the rest behave as in
        :meth:`huggingface_hub.ModelHubMixin.save_pretrained`. Returns the commit URL when pushing, else ``None``.
        """
        return save_pretrained_model(self, save_directory, **kwargs)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, backbone={self.backbone_name!r}, input_size={self.input_size}"
