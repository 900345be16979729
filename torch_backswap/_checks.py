"""Input checks, one helper per check and one message per helper.

Every message names the argument, the expected form and the value received, e.g.
``images must be uint8, or float in [0, 1] (pass value_range=(lo, hi) for other float ranges); got float32
values in [-1.000, 1.000]``. The checks run once, at the edge of the public API; kernels below trust their
inputs.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_fraction",
    "check_images",
    "check_instance",
    "check_labels",
    "check_non_negative",
    "describe",
    "value_range_of",
]


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages (type, shape and dtype of tensors)."""
    if isinstance(value, Tensor):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # NumPy
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_instance(name: str, value: Any, kind: type, *, optional: bool = True) -> Any:
    """``value`` if it is a ``kind`` (or ``None`` when ``optional``), else ``TypeError`` naming both."""
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise TypeError(f"{name} must be a {kind.__name__}{' or None' if optional else ''}, got {describe(value)}")


def check_fraction(name: str, value: Any, *, upper_open: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (``[0, 1)`` with ``upper_open``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {describe(value)}") from None
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return v


def check_non_negative(name: str, value: Any) -> float:
    """``value`` as a float ``>= 0``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0, got {describe(value)}") from None
    if not v >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def value_range_of(name: str, value_range: Any) -> tuple[float, float] | None:
    """Validate a ``value_range=(lo, hi)`` argument (``None`` = the default ``[0, 1]`` for floats)."""
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be None or a (low, high) pair of numbers, got {value_range!r}") from None
    if not lo < hi:
        raise ValueError(f"{name} must be a (low, high) pair with low < high, got {value_range!r}")
    return lo, hi


def check_images(
    images: Any,
    name: str = "images",
    *,
    ndims: tuple[int, ...] = (4,),
    channels: tuple[int, ...] = (1, 3, 4),
    value_range: tuple[float, float] | None = None,
    min_size: int = 1,
    check_values: bool = True,
) -> Tensor:
    """Check an image tensor and return it as a plain ``Tensor`` (tv_tensor wrappers removed).

    Args:
        images: ``(B, C, H, W)`` (or another rank in ``ndims``, channels at dim ``-3``).
        name: the argument's name, for messages.
        ndims: accepted ranks.
        channels: accepted channel counts.
        value_range: the float range the caller promised (default ``[0, 1]``); uint8 is always ``0..255``.
        min_size: smallest accepted height and width.
        check_values: also check float values (finite, inside ``value_range``); off for hot paths that only
            need the structure (it reads every value).

    Raises:
        TypeError: not a tensor.
        ValueError: wrong rank, channels, size or dtype; NaN or inf; float values outside the range.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(images)}")
    x = images.as_subclass(Tensor)
    if x.ndim not in ndims:
        forms = " or ".join({2: "(H, W)", 3: "(C, H, W)", 4: "(B, C, H, W)"}.get(n, f"{n}-D") for n in ndims)
        raise ValueError(f"{name} must be {forms}, got shape {tuple(x.shape)}")
    if x.ndim >= 3 and x.shape[-3] not in channels:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, channels))} channels (1 gray, 3 RGB, 4 RGBA) at dim -3, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[-1] < min_size or x.shape[-2] < min_size:
        raise ValueError(f"{name} must be at least {min_size}x{min_size} pixels, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 or floating point, got dtype {x.dtype}")
    if x.numel() == 0 or not check_values:
        return x
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"{name} must be finite, got {bad} values (fix the input pipeline: they cannot be composited)")
    lo, hi = value_range if value_range is not None else (0.0, 1.0)
    tol = 1e-3 * (hi - lo)
    vmin, vmax = float(x.amin()), float(x.amax())
    if vmin < lo - tol or vmax > hi + tol:
        hint = (
            " (looks like 0..255: use v2.ToDtype(torch.float32, scale=True), or pass value_range=(0, 255))"
            if vmax > 1.5 and value_range is None
            else " (pass value_range=(low, high) for other float ranges)"
        )
        raise ValueError(
            f"{name} must be uint8, or float in [{lo:g}, {hi:g}]{hint}; got {x.dtype} values in [{vmin:.3f}, {vmax:.3f}]"
        )
    return x


def check_labels(labels: Any, batch_size: int, name: str = "labels") -> Tensor | None:
    """Class labels in any common form → int64 ``(B,)`` class indices (``None`` stays ``None``).

    Accepts a Python int (B = 1), a list / tuple of ints, a NumPy array or a tensor of shape ``(B,)`` with
    integer values, or ``(B, K)`` one-hot / soft labels (after CutMix or MixUp: the class is the argmax).

    Raises:
        ValueError: wrong length, non-integer class values (e.g. ``[0.5, 1.7]``), negative classes, NaN.
    """
    if labels is None:
        return None
    if isinstance(labels, bool) or (isinstance(labels, Tensor) and labels.dtype == torch.bool):
        raise ValueError(f"{name} must be integer class indices or (B, K) soft labels, got {describe(labels)}")
    if isinstance(labels, numbers.Integral):
        t = torch.tensor([int(labels)])
    else:
        try:
            t = torch.as_tensor(labels) if not isinstance(labels, Tensor) else labels.as_subclass(Tensor)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name} must be an int, a list / NumPy array / tensor of ints, or (B, K) soft labels, "
                f"got {describe(labels)}"
            ) from None
        t = t.detach().cpu()
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim == 2:
        if t.shape[0] != batch_size:
            raise ValueError(f"{name} must have {batch_size} rows (one per image), got shape {tuple(t.shape)}")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} (soft labels) must be finite, got {describe(labels)}")
        return t.argmax(dim=1) if t.shape[0] else t.new_zeros(0, dtype=torch.long)
    if t.ndim != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape ({batch_size},) (class indices) or ({batch_size}, K) (soft labels), "
            f"got {describe(labels)}"
        )
    if t.dtype.is_floating_point:
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise ValueError(f"{name} must be whole class indices, got non-integer values {t.tolist()[:8]}")
    elif t.dtype.is_complex:
        raise ValueError(f"{name} must be integer class indices, got {describe(labels)}")
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {t.tolist()[:8]}")
    return t
