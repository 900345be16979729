"""The object's jitter: random scale / rotation / shift per sample, and the affine matrices that apply it.

Plain data from a generator, replayable: :func:`sample_jitter` draws a :class:`JitterParams` (paper defaults:
scale 0.5–1.5, ±30°, ±32 px at 224 px), :func:`jitter_affine` turns it into source→destination ``(B, 2, 3)``
matrices about each object's bounding box (:func:`mask_bboxes`), clipped so the object stays in frame.
:mod:`torch_backswap.composite` pastes with those matrices; the same matrices move masks and boxes
(:mod:`torch_backswap.functional`).

Example:
    >>> import torch
    >>> from torch_backswap.jitter import jitter_affine, sample_jitter
    >>> params = sample_jitter(2, generator=torch.Generator().manual_seed(0))
    >>> alpha = torch.zeros(2, 1, 32, 32); alpha[:, :, 8:24, 8:24] = 1
    >>> jitter_affine(params, (32, 32), alpha).shape
    torch.Size([2, 2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ._opencv import plane_boxes, uint8_planes

__all__ = [
    "JitterGenerator","REFERENCE_SIZE", "JitterParams", "jitter_affine", "mask_bboxes", "sample_jitter"]

#: Image side (pixels) at which the paper's translation range (±32 px) is defined.
REFERENCE_SIZE = 224


# --------------------------------------------------------------------------------------------------
# jitter parameters
# --------------------------------------------------------------------------------------------------


@dataclass
class JitterParams:
    """One set of random foreground-jitter parameters per sample.

    Attributes:
        scale: ``(B,)`` isotropic scale factor about the object's bounding-box centre.
        angle: ``(B,)`` rotation in degrees, positive = counter-clockwise on screen.
        translate: ``(B, 2)`` shift ``(dx / W, dy / H)`` as a fraction of the image width / height, so
            the same parameters mean the same thing at any resolution.
    """

    scale: Tensor
    angle: Tensor
    translate: Tensor

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> JitterParams:
        return JitterParams(*(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)))

    def __getitem__(self, index) -> JitterParams:
        return JitterParams(*(getattr(self, f.name)[index] for f in fields(self)))


def _check_range(name: str, value, *, positive: bool = False) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        lo, hi = float(value), float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}") from None
    if lo > hi or (positive and lo <= 0):
        raise ValueError(f"{name} must be a{' positive' if positive else ''} (min, max) pair with min <= max, got {value!r}")
    return lo, hi


def check_jitter_ranges(scale, degrees, translate_px, reference_size) -> tuple[tuple[float, float], tuple[float, float]]:
    """Check the ranges of :func:`sample_jitter` and return ``((scale_lo, scale_hi), (degrees_lo, degrees_hi))``.

    Raises:
        ValueError: naming the argument, the expected form and the value.
    """
    scale_range = _check_range("scale", scale, positive=True)
    if isinstance(degrees, (int, float)):
        if degrees < 0:
            raise ValueError(f"degrees must be >= 0 or a (min, max) pair, got {degrees!r}")
        degrees_range = (-float(degrees), float(degrees))
    else:
        degrees_range = _check_range("degrees", degrees)
    if translate_px < 0:
        raise ValueError(f"translate_px must be >= 0, got {translate_px!r}")
    if reference_size <= 0:
        raise ValueError(f"reference_size must be positive, got {reference_size!r}")
    return scale_range, degrees_range


def sample_jitter(
    batch_size: int,
    *,
    scale: float | tuple[float, float] = (0.5, 1.5),
    degrees: float | tuple[float, float] = 30.0,
    translate_px: float = 32.0,
    reference_size: int = REFERENCE_SIZE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> JitterParams:
    """Sample foreground jitter parameters (paper defaults).

    Args:
        batch_size: number of parameter sets ``B``.
        scale: ``(min, max)`` of the uniform isotropic scale (paper: 0.5–1.5); a number means fixed.
        degrees: rotation range; a number ``d`` means uniform in ``[-d, d]`` (paper: ±30°).
        translate_px: maximum shift in pixels **at** ``reference_size`` (paper: ±32 px at 224 px; use 64
            for Spawrious-like data). At other resolutions the shift scales with the image:
            ``max_dx = translate_px / reference_size * W`` (so ±32 px at 224² is ±9.1 px at 64²). The
            shift is later clipped by :func:`jitter_affine` so the object stays inside the frame.
        reference_size: side length at which ``translate_px`` is given.
        generator: optional CPU ``torch.Generator`` for reproducibility (sampling happens on CPU, then
            the parameters are moved to ``device``).
        device: device of the returned tensors.

    Returns:
        :class:`JitterParams` with float32 tensors of batch size ``batch_size``.
    """
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    (s_lo, s_hi), (d_lo, d_hi) = check_jitter_ranges(scale, degrees, translate_px, reference_size)
    u = torch.rand(batch_size, 4, generator=generator)
    frac = float(translate_px) / float(reference_size)
    params = JitterParams(
        scale=s_lo + (s_hi - s_lo) * u[:, 0],
        angle=d_lo + (d_hi - d_lo) * u[:, 1],
        translate=(u[:, 2:] * 2.0 - 1.0) * frac,
    )
    return params.to(device) if device is not None else params


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------


def _check_alpha(alpha: Tensor, images: Tensor | None = None) -> None:
    if not isinstance(alpha, Tensor) or alpha.ndim != 4 or alpha.shape[1] != 1:
        shape = tuple(alpha.shape) if isinstance(alpha, Tensor) else type(alpha).__name__
        raise ValueError(f"alpha must be a (B, 1, H, W) tensor, got {shape}")
    if images is not None and (alpha.shape[0] != images.shape[0] or alpha.shape[-2:] != images.shape[-2:]):
        raise ValueError(
            f"alpha shape {tuple(alpha.shape)} does not match images shape {tuple(images.shape)} (need B and H, W equal)"
        )


def mask_bboxes(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Tight bounding boxes of the non-zero part of each mask.

    Args:
        alpha: ``(B, 1, H, W)`` mask or alpha of any dtype; ``> 0`` counts as foreground.

    Returns:
        ``(boxes, valid)``: ``boxes`` int64 ``(B, 4)`` inclusive ``(x0, y0, x1, y1)`` pixel indices,
        ``valid`` bool ``(B,)``, False where the mask is empty (its box is then ``(0, 0, 0, 0)``).
    """
    _check_alpha(alpha)
    planes = uint8_planes(alpha)
    if planes is not None:  # OpenCV installed: one boundingRect per sample, the same integers
        return plane_boxes(planes)
    a = alpha[:, 0]
    if a.dtype == torch.bool:
        a = a.view(torch.uint8)
    # reduce the values first, compare after: one max over each axis is ~25x faster on CPU than
    # building a (B, H, W) bool tensor and reducing it with any()
    rows = a.amax(dim=2) > 0  # (B, H)
    cols = a.amax(dim=1) > 0  # (B, W)
    valid = rows.any(dim=1)
    h, w = a.shape[-2:]
    ar_h = torch.arange(h, device=alpha.device)
    ar_w = torch.arange(w, device=alpha.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    boxes = torch.where(valid[:, None], boxes, torch.zeros_like(boxes))
    return boxes, valid


def _transform_corners(matrices: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Apply ``(B,2,3)`` matrices to the 4 corners of float ``(B,4)`` boxes; returns mins, maxs ``(B,2)``."""
    x0, y0, x1, y1 = boxes.unbind(1)
    cx = torch.stack([x0, x1, x0, x1], dim=1)
    cy = torch.stack([y0, y0, y1, y1], dim=1)
    tx = matrices[:, 0, 0:1] * cx + matrices[:, 0, 1:2] * cy + matrices[:, 0, 2:3]
    ty = matrices[:, 1, 0:1] * cx + matrices[:, 1, 1:2] * cy + matrices[:, 1, 2:3]
    mins = torch.stack([tx.amin(1), ty.amin(1)], dim=1)
    maxs = torch.stack([tx.amax(1), ty.amax(1)], dim=1)
    return mins, maxs


def jitter_affine(
    params: JitterParams,
    size: tuple[int, int],
    masks: Tensor | None = None,
    *,
    bboxes: Tensor | None = None,
    keep_inside: bool = True,
) -> Tensor:
    """Turn jitter parameters into source→destination affine matrices.

    The object is scaled and rotated about the centre of its bounding box, then shifted by
    ``params.translate * (W, H)``. With ``keep_inside`` the shift is clipped so the transformed bounding
    box stays inside the frame (if the box is larger than the frame along an axis it is centred instead).

    Args:
        params: :class:`JitterParams` of batch size ``B``.
        size: ``(H, W)`` of the images.
        masks: ``(B, 1, H, W)`` foreground masks / alphas (used for their bounding boxes), or
        bboxes: ``(B, 4)`` inclusive ``(x0, y0, x1, y1)`` pixel boxes instead of ``masks``.
        keep_inside: clip the translation so the object stays in frame (paper behaviour).

    Returns:
        float32 ``(B, 2, 3)`` matrices (identity for empty masks).
    """
    h, w = int(size[0]), int(size[1])
    valid = None
    if bboxes is None:
        if masks is None:
            raise ValueError("jitter_affine needs masks or bboxes, got neither")
        bboxes, valid = mask_bboxes(masks)
    device = bboxes.device
    params = params.to(device=device, dtype=torch.float32)
    n = len(params)
    if bboxes.shape != (n, 4):
        raise ValueError(f"bboxes must have shape ({n}, 4) to match params, got {tuple(bboxes.shape)}")
    boxes = bboxes.to(torch.float32)
    if n == 0:
        return torch.zeros(0, 2, 3, device=device)
    x0, y0, x1, y1 = boxes.unbind(1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rad = torch.deg2rad(params.angle)
    a = params.scale * torch.cos(rad)
    b = params.scale * torch.sin(rad)
    sx, sy = (params.translate * torch.tensor([w, h], dtype=torch.float32, device=device)).unbind(1)
    if keep_inside:
        # rotation and scale about the box centre keep the centre: the moved box is centre ± these half extents
        hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
        ea, eb = a.abs(), b.abs()
        ex, ey = ea * hw + eb * hh, eb * hw + ea * hh
        sx = _clip_shift(sx, ex - cx, (w - 1) - cx - ex)
        sy = _clip_shift(sy, ey - cy, (h - 1) - cy - ey)
    # the matrix of kornia's get_rotation_matrix2d (isotropic scale) about the centre, then the shift
    row0 = torch.stack([a, b, (1 - a) * cx - b * cy + sx], 1)
    row1 = torch.stack([-b, a, b * cx + (1 - a) * cy + sy], 1)
    matrices = torch.stack([row0, row1], 1)
    if valid is not None:
        eye = torch.eye(2, 3, device=device).expand(n, 2, 3)
        matrices = torch.where(valid[:, None, None], matrices, eye)
    return matrices


def _clip_shift(shift: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``shift`` clipped to ``[lo, hi]``; the middle of the range where it is empty (object larger than the frame)."""
    return torch.where(lo <= hi, torch.minimum(torch.maximum(shift, lo), hi), (lo + hi) / 2)


def _affine_inverse(matrices: Tensor) -> Tensor:
    a, b, c = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    d, e, f = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * e - b * d
    if bool((det.abs() < 1e-12).any()):
        raise ValueError("affine matrices must be invertible (a sample has scale 0)")
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic = -(ia * c + ib * f)
    if_ = -(id_ * c + ie * f)
    return torch.stack([torch.stack([ia, ib, ic], 1), torch.stack([id_, ie, if_], 1)], 1)


@dataclass(frozen=True)
class JitterGenerator:
    """The object's jitter ranges as one object (kornia's ``_param_generator`` pattern): ``gen(n, generator)``
    samples :class:`JitterParams` for ``n`` objects (:func:`sample_jitter`; ranges checked here, once).

    Args:
        scale: ``(low, high)`` or one value (paper: 0.5–1.5).
        degrees: ``(low, high)`` or ``d`` for ``(-d, d)`` (paper: ±30°).
        translate_px: the largest shift in pixels at ``reference_size`` (paper: ±32 px at 224 px), scaled with the
            image size; the object is kept inside the frame.
        reference_size: the image side ``translate_px`` refers to.

    Example:
        >>> JitterGenerator(scale=1.0, degrees=0, translate_px=0)(2).scale.tolist()
        [1.0, 1.0]
    """

    scale: float | tuple[float, float] = (0.5, 1.5)
    degrees: float | tuple[float, float] = 30.0
    translate_px: float = 32.0
    reference_size: int = REFERENCE_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "translate_px", float(self.translate_px))
        object.__setattr__(self, "reference_size", int(self.reference_size))
        check_jitter_ranges(self.scale, self.degrees, self.translate_px, self.reference_size)

    def ranges(self) -> dict:
        """The ranges as keyword arguments of :func:`sample_jitter` / ``functional.sample_params``."""
        return {"scale": self.scale, "degrees": self.degrees, "translate_px": self.translate_px,
                "reference_size": self.reference_size}

    def __call__(self, n: int, generator: torch.Generator | None = None) -> JitterParams:
        return sample_jitter(n, generator=generator, **self.ranges())
