"""``BackgroundSwapCollate``: collate a list of samples, then swap the whole batch at once (the DataLoader's
``collate_fn`` route of :class:`~torch_backswap.transform.BackgroundSwap`)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torchvision import tv_tensors

from ._checks import describe
from .transform import BackgroundSwap

__all__ = ["BackgroundSwapCollate"]


class BackgroundSwapCollate:
    """``collate_fn`` that collates a list of samples, then swaps the whole batch at once.

    Args:
        swap: the :class:`BackgroundSwap` to apply.
        collate_fn: the base collation (default ``torch.utils.data.default_collate``).
        device: ``"bank"`` (default): move the batch's tensors to the bank's device first (GPU with
            ``num_workers=0``; always CPU in workers); ``None``: leave tensors where they are.

    Picklable, so it works with worker processes started by fork, spawn or forkserver.
    """

    def __init__(self, swap: BackgroundSwap, collate_fn: Callable | None = None, device: str | None = "bank") -> None:
        if not isinstance(swap, BackgroundSwap):
            raise TypeError(f"swap must be a BackgroundSwap, got {describe(swap)}")
        if device not in ("bank", None):
            raise ValueError(f"device must be 'bank' or None, got {device!r}")
        self.swap = swap
        self.collate_fn = collate_fn if collate_fn is not None else torch.utils.data.default_collate
        self.device = device

    def __call__(self, samples: list) -> Any:
        batch = self.collate_fn(samples)
        if samples:
            # default_collate stacks tv_tensors into plain tensors: re-wrap images and masks so the swap sees them
            first, _ = tree_flatten(samples[0])
            flat, spec = tree_flatten(batch)
            if len(first) == len(flat):
                flat = [
                    tv_tensors.wrap(b, like=f)
                    if isinstance(f, (tv_tensors.Mask, tv_tensors.Image)) and isinstance(b, Tensor)
                    and not isinstance(b, tv_tensors.TVTensor)
                    else b
                    for f, b in zip(first, flat)
                ]
                batch = tree_unflatten(flat, spec)
        if self.device == "bank":
            dev = self.swap.runtime.bank(self.swap.bank).device
            if dev.type != "cpu":
                batch = tree_map(lambda t: t.to(dev) if isinstance(t, Tensor) else t, batch)
        return self.swap(batch)

    def __repr__(self) -> str:
        return f"BackgroundSwapCollate({self.swap!r})"
