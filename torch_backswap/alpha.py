"""``ObjectAlpha``: the tv_tensor that names *the object to swap* in a sample.

A sample may carry many masks (a segmentation map, instance masks, ...). Only an :class:`ObjectAlpha` is
taken by :class:`~torch_backswap.transform.BackgroundSwap` as the foreground's alpha; every other
``tv_tensors.Mask`` keeps its meaning and is moved with the object. Because it subclasses
``tv_tensors.Mask``, torchvision's v2 geometric transforms (crops, flips, resizes, ...) move it with the
image, so an alpha precomputed for a fixed dataset stays aligned after upstream augmentation.

Shapes and dtypes: ``(1, H, W)`` or ``(H, W)`` for one image, ``(B, 1, H, W)`` for a batch; ``bool``,
``uint8`` (``0..255``, or ``0/1``) or float in ``[0, 1]`` (soft edges). ``(H, W)`` must be the image's own size:
an alpha of another size or aspect ratio raises ``ValueError`` naming ``ObjectAlpha``, the expected shape and the
shape received (like torchvision's kernels, the swap never resizes a mask to fit its image).

Example:
    >>> import torch
    >>> from torch_backswap.alpha import ObjectAlpha
    >>> alpha = ObjectAlpha(torch.zeros(1, 8, 8))
    >>> type(alpha).__name__, tuple(alpha.shape)
    ('ObjectAlpha', (1, 8, 8))
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors

__all__ = ["ObjectAlpha", "ObjectAlphaDataset"]


class ObjectAlpha(tv_tensors.Mask):
    """The foreground alpha of the object to swap (a ``tv_tensors.Mask`` subclass; see the module docs).

    Its ``(H, W)`` must equal the image's; a mismatched alpha is refused with a ``ValueError``, never resized.
    """


class ObjectAlphaDataset(torch.utils.data.Dataset):
    """Wrap a dataset of ``(image, label, ...)`` (or dict) samples so each sample carries its object's alpha.

    For fixed datasets: segment once (``swap.segment(images)`` or a dataset's dense masks), then every sample
    yields its alpha as an :class:`ObjectAlpha` — upstream v2 crops and flips move it with the image, and
    :class:`~torch_backswap.transform.BackgroundSwap` uses it instead of running the segmenter.

    Args:
        dataset: a map-style dataset whose items are ``(image, label, ...)`` tuples or dicts.
        alphas: ``(N, 1, H, W)`` or ``(N, H, W)`` alphas (bool / uint8 / float in ``[0, 1]``), one per item.
        transform: optional v2 transform applied to the whole sample *after* the alpha is attached (put the
            swap and the augmentations here so they see the alpha).

    Items: ``(image, ObjectAlpha, label, ...)`` for tuple samples (the alpha is inserted after the image),
    or the dict with an added ``"alpha"`` key.

    Example:
        >>> import torch
        >>> ds = ObjectAlphaDataset([(torch.zeros(3, 4, 4), 1)], torch.ones(1, 1, 4, 4))
        >>> image, alpha, label = ds[0]
        >>> type(alpha).__name__, tuple(alpha.shape), label
        ('ObjectAlpha', (1, 4, 4), 1)
    """

    def __init__(self, dataset, alphas, transform=None) -> None:
        if not isinstance(alphas, torch.Tensor) or alphas.ndim not in (3, 4) or (alphas.ndim == 4 and alphas.shape[1] != 1):
            raise ValueError(
                f"alphas must be an (N, 1, H, W) or (N, H, W) tensor, got "
                f"{tuple(alphas.shape) if isinstance(alphas, torch.Tensor) else type(alphas).__name__}"
            )
        if len(dataset) != alphas.shape[0]:
            raise ValueError(f"alphas has {alphas.shape[0]} entries for a dataset of {len(dataset)} items")
        self.dataset = dataset
        self.alphas = alphas if alphas.ndim == 4 else alphas[:, None]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        alpha = ObjectAlpha(self.alphas[index])
        if isinstance(sample, dict):
            sample = {**sample, "alpha": alpha}
        elif isinstance(sample, (tuple, list)):
            sample = (sample[0], alpha, *sample[1:])
        else:
            sample = (sample, alpha)
        return self.transform(sample) if self.transform is not None else sample
