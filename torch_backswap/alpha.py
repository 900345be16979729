"""``ObjectAlpha``: the tv_tensor that names *the object to swap* in a sample.

A sample may carry many masks (a segmentation map, instance masks, ...). Only an :class:`ObjectAlpha` is
taken by :class:`~torch_backswap.transform.BackgroundSwap` as the foreground's alpha; every other
``tv_tensors.Mask`` keeps its meaning and is moved with the object. Because it subclasses
``tv_tensors.Mask``, torchvision's v2 geometric transforms (crops, flips, resizes, ...) move it with the
image, so an alpha precomputed for a fixed dataset stays aligned after upstream augmentation.

Shapes and dtypes: ``(1, H, W)`` or ``(H, W)`` for one image, ``(B, 1, H, W)`` for a batch; ``bool``,
``uint8`` (``0..255``, or ``0/1``) or float in ``[0, 1]`` (soft edges).

Example:
    >>> import torch
    >>> from torch_backswap.alpha import ObjectAlpha
    >>> alpha = ObjectAlpha(torch.zeros(1, 8, 8))
    >>> type(alpha).__name__, tuple(alpha.shape)
    ('ObjectAlpha', (1, 8, 8))
"""

from __future__ import annotations

from torchvision import tv_tensors

__all__ = ["ObjectAlpha"]


class ObjectAlpha(tv_tensors.Mask):
    """The foreground alpha of the object to swap (a ``tv_tensors.Mask`` subclass; see the module docs)."""
