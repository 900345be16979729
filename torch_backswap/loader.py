"""``DevicePrefetcher`` / ``DeviceSwapLoader``: keep your DataLoader, run a function of each batch on the accelerator.

:class:`DevicePrefetcher` is generic (timm's ``PrefetchLoader``): each batch is moved to the device and handed to any
``fn(batch)``; it knows nothing of the swap. :class:`DeviceSwapLoader` is the prefetcher whose ``fn`` swaps the
batch's backgrounds with a :class:`~torch_backswap.transform.BackgroundSwap` (this module never imports it).

CPU workers only decode and crop; each batch they produce is moved to the device (``non_blocking`` from
pinned memory) and swapped there, in the main process, while the previous step is still running::

    loader = DataLoader(ds, batch_size=256, num_workers=8, pin_memory=True)
    for images, labels in DeviceSwapLoader(loader, swap, "cuda"):     # images: (B, 3, H, W) on cuda, swapped
        loss = criterion(model(images), labels)

On CUDA the copy and the swap of batch ``k + 1`` are queued on a side stream before batch ``k`` is handed
out, so they overlap with the training step of batch ``k`` (``prefetch`` batches ahead). The consumer's
stream waits on an event recorded after each batch's work (``wait_event``), and every tensor of a handed
out batch is marked with ``record_stream`` so the caching allocator does not hand its memory to the side
stream again while the consumer may still read it. On
any other device (CPU included) it is a plain loop: move, swap, yield.

Batches may be ``(images, labels, ...)`` tuples / lists or dicts (images under ``"image"``, ``"images"``,
``"img"`` or ``"pixel_values"``, or the key given as ``image=``); every other entry is moved to the device
and passed through unchanged. Images are ``(B, 3, H, W)`` uint8 or float in ``[0, 1]``; they come back in
the same dtype, on the device. An object alpha carried in the batch (``alpha=`` key or index, e.g. an
``ObjectAlpha`` collated to a ``(B, 1, H, W)`` tensor) is used as the alpha instead of the segmenter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map
from torchvision import tv_tensors

from ._sample_labels import default_labels_getter
from .alpha import ObjectAlpha

__all__ = ["DevicePrefetcher", "DeviceSwapLoader"]

_IMAGE_KEYS = ("image", "images", "img", "pixel_values")


class DevicePrefetcher:
    """Wrap an iterable of batches so each batch arrives on ``device``, passed through ``fn`` there.

    Args:
        loader: any re-iterable of batches (usually a ``torch.utils.data.DataLoader``; use
            ``pin_memory=True`` so the host-to-device copy is asynchronous).
        fn: any callable ``batch -> batch`` run on the moved batch (default: none).
        device: where the batches go and ``fn`` runs (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``).
        non_blocking: asynchronous host-to-device copies (effective from pinned memory).
        prefetch: batches moved and processed ahead of the one being consumed (CUDA only; >= 0; 0 still
            runs ``fn`` on the side stream but only when the batch is asked for).

    ``len()`` is the wrapped loader's length; each ``iter()`` starts a new epoch of the wrapped loader.
    """

    def __init__(
        self,
        loader: Any,
        fn: Callable[[Any], Any] | None,
        device: torch.device | str,
        *,
        non_blocking: bool = True,
        prefetch: int = 1,
    ) -> None:
        if not hasattr(loader, "__iter__"):
            raise TypeError(f"loader must be an iterable of batches (e.g. a DataLoader), got {type(loader).__name__}")
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be a callable batch -> batch or None, got {type(fn).__name__}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be a torch.device or a string like 'cuda' or 'cpu', got {device!r}") from err
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        self.loader = loader
        self.fn = fn
        self.non_blocking = bool(non_blocking)
        self.prefetch = prefetch

    def __len__(self) -> int:
        return len(self.loader)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(loader={self.loader!r}, device={str(self.device)!r}, "
                f"prefetch={self.prefetch})")

    def _move(self, batch: Any) -> Any:
        return tree_map(lambda t: t.to(self.device, non_blocking=self.non_blocking) if isinstance(t, Tensor) else t,
                        batch)

    def _process(self, batch: Any) -> Any:
        moved = self._move(batch)
        return moved if self.fn is None else self.fn(moved)

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self._process(batch)
            return
        yield from self._iter_cuda()

    def _iter_cuda(self) -> Iterator[Any]:
        side = torch.cuda.Stream(self.device)
        pending: deque = deque()
        batches = iter(self.loader)

        def launch() -> bool:
            try:
                batch = next(batches)
            except StopIteration:
                return False
            with torch.cuda.stream(side):
                out = self._process(batch)
                done = torch.cuda.Event()
                done.record(side)
            pending.append((out, done))
            return True

        for _ in range(max(1, self.prefetch)):
            if not launch():
                break
        while pending:
            out, done = pending.popleft()
            current = torch.cuda.current_stream(self.device)
            current.wait_event(done)
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor) and t.device.type == "cuda":
                    t.record_stream(current)
            if self.prefetch > 0:
                launch()  # queued now, runs on the side stream during the consumer's step
            yield out
            if self.prefetch == 0:
                launch()


class SwapBatch:
    """``fn(batch)`` of :class:`DeviceSwapLoader`: find the images (and alpha, labels) of a collated batch, swap
    them with ``swap`` and return a batch of the same structure (see the module docs)."""

    def __init__(self, swap: Callable[[Any], Any], image: str | int | None = None,
                 alpha: str | int | None = None) -> None:
        self.swap = swap
        self.image = image
        self.alpha = alpha

    def _image_slot(self, batch: Any) -> str | int:
        if self.image is not None:
            return self.image
        if isinstance(batch, dict):
            for key in _IMAGE_KEYS:
                if key in batch:
                    return key
            raise KeyError(f"DeviceSwapLoader found no image in a dict batch with keys {sorted(map(str, batch))}; "
                           f"name the key with image=..., or use one of {_IMAGE_KEYS}")
        return 0

    def __call__(self, batch: Any) -> Any:
        """Swap the images of one (already moved) batch; returns a batch of the same structure."""
        if isinstance(batch, Tensor):
            return self.swap(batch)
        if not isinstance(batch, (dict, list, tuple)):
            raise TypeError(f"batches must be a tensor, a tuple / list or a dict, got {type(batch).__name__}")
        slot = self._image_slot(batch)
        try:
            images = batch[slot]
        except (KeyError, IndexError) as err:
            raise KeyError(f"DeviceSwapLoader: the batch has no entry {slot!r} for the images") from err
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ValueError(f"batch[{slot!r}] must be a (B, C, H, W) image tensor, got "
                             f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
        # hand the swap a dict it cannot misread: the images as an Image, the labels, the alpha as ObjectAlpha
        sample: dict[str, Any] = {"image": tv_tensors.Image(images)}
        if self.alpha is not None:
            try:
                sample["alpha"] = ObjectAlpha(batch[self.alpha])
            except (KeyError, IndexError) as err:
                raise KeyError(f"DeviceSwapLoader: alpha={self.alpha!r} names no entry of the batch") from err
        if isinstance(batch, dict):
            labels = default_labels_getter(batch)
        else:  # the getter's rule on (images, [alpha], rest...): the first plain item after them
            rest = [x for i, x in enumerate(batch) if i not in (slot, self.alpha)]
            labels = default_labels_getter((sample["image"], *rest))
        if isinstance(labels, Tensor):
            sample["label"] = labels
        out = self.swap(sample)
        result = dict(batch) if isinstance(batch, dict) else list(batch)
        result[slot] = out["image"].as_subclass(Tensor)
        if self.alpha is not None:  # the alpha now marks where the object was pasted
            result[self.alpha] = out["alpha"].as_subclass(Tensor)
        if isinstance(batch, tuple):
            return tuple(result)
        return result


class DeviceSwapLoader(DevicePrefetcher):
    """Wrap an iterable of batches so each batch arrives on ``device`` with its backgrounds swapped: a
    :class:`DevicePrefetcher` whose ``fn`` is :class:`SwapBatch`.

    Args:
        loader: any re-iterable of batches (usually a ``torch.utils.data.DataLoader``; use
            ``pin_memory=True`` so the host-to-device copy is asynchronous).
        swap: a :class:`~torch_backswap.transform.BackgroundSwap`. It is moved to ``device`` once here
            (``swap.to(device)`` keeps a CPU copy of its segmenter for DataLoader workers).
        device: where the batches go and the swap runs (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a
            ``torch.device``).
        non_blocking, prefetch: see :class:`DevicePrefetcher`.
        image: the batch entry holding the images: a dict key or a sequence index. Default: the first
            of ``"image", "images", "img", "pixel_values"`` present in a dict, index 0 of a sequence.
        alpha: optional dict key or sequence index of the object's alpha ``(B, 1, H, W)`` in the batch
            (bool, uint8 or float in ``[0, 1]``); without it the swap's segmenter (or mask cache) decides.
    """

    def __init__(
        self,
        loader: Any,
        swap: Any,
        device: torch.device | str,
        *,
        non_blocking: bool = True,
        prefetch: int = 1,
        image: str | int | None = None,
        alpha: str | int | None = None,
    ) -> None:
        if not (callable(swap) and callable(getattr(swap, "swap_batch", None)) and callable(getattr(swap, "to", None))):
            raise TypeError(f"swap must be a BackgroundSwap, got {type(swap).__name__}")
        super().__init__(loader, None, device, non_blocking=non_blocking, prefetch=prefetch)
        self.swap = swap.to(self.device)
        self.fn = SwapBatch(self.swap, image, alpha)
        self.image = image
        self.alpha = alpha
