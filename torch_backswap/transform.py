"""``BackgroundSwap``: a torchvision v2 transform that pastes each image's object onto a new background.

Per sample, inside any ``Compose`` (PIL, tensor or ``tv_tensors.Image`` in; the same type out)::

    swap = BackgroundSwap(bank, segmenter)
    train_tf = v2.Compose([swap, v2.RandomResizedCrop(224, scale=(0.7, 1.0)), v2.RandomHorizontalFlip(), ...])

Per batch, like ``v2.CutMix`` (labels found by ``labels_getter`` and returned unchanged)::

    images, labels = swap(images, labels)                              # (B, C, H, W) uint8 or float
    loader = DataLoader(ds, batch_size=64, collate_fn=BackgroundSwapCollate(swap))   # collate, then one batched swap

What is the object
------------------
The object's alpha is an :class:`~torch_backswap.alpha.ObjectAlpha` in the sample (e.g. from
:class:`~torch_backswap.alpha.ObjectAlphaDataset` for a fixed dataset), or else the segmenter's tight mask.
Every other ``tv_tensors.Mask`` and ``BoundingBoxes`` in the sample moves with the object, whichever gave its
alpha (see :func:`~torch_backswap.functional.move_masks` / :func:`~torch_backswap.functional.move_boxes`); labels
and every other item pass through untouched. A sample that is not swapped (``p``, no object found, an object
smaller than ``min_foreground``) comes back bit-identical, every part of it.

The swapped image is the sample's first image-like item in ``tree_flatten`` order (a PIL image or a
``tv_tensors.Image``, else the first plain tensor: torchvision's rule for which items are images), as ``v2.CutMix``
and ``query_chw`` pick one; a second image or a ``tv_tensors.Video`` in the sample passes through unchanged. A
sample whose only image-like item is a ``Video`` raises ``TypeError`` (swap its frames as a batch of images).

How one call runs
-----------------
:meth:`make_params` returns plain data, no pixels: the call's random choices sampled once
(:func:`~torch_backswap.functional.sample_params`), the object's alpha (the sample's ``ObjectAlpha``, or the cut-out)
and the planned :class:`~torch_backswap.functional.SwapRecord` (:func:`~torch_backswap.functional.plan_swap`: which
samples swap, the matrices). :meth:`transform` then does each input's pixel work in its own kind, as ``v2.CutMix`` and
kornia's ``transform_input`` do: the image is composited (:func:`~torch_backswap.functional.paste_objects`), the
object alpha and other masks are moved (``move_alpha`` / ``move_masks``), boxes are moved (``move_boxes``).
:attr:`last_record` holds the call's per-sample provenance; :meth:`swap_batch` takes ``params=`` to replay a call.
``forward`` only adds the label lookup in front of torchvision's skeleton, exactly as ``v2.CutMix`` does.

Devices, workers and randomness: see :mod:`torch_backswap._runtime`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from ._checks import check_fraction, check_images, check_instance, describe, value_range_of
from ._image import from_unit, to_unit_rgb
from ._kinds import (
    alpha_to_batch,
    batch_to_image,
    boxes_like,
    image_to_batch,
    mask_like,
    object_rows,
    restore_channels,
    swap_inputs,
)
from ._runtime import SwapRuntime, parse_device
from ._sample_labels import bank_classes_of, check_swap_strategy, default_labels_getter, find_labels
from .alpha import ObjectAlpha
from .bank import Bank, as_bank
from .cutout import CutOut
from .edge_refiner import DEFAULT_EDGE_REFINER
from .functional import (
    Compositing,
    SwapParams,
    SwapRecord,
    gather_backgrounds,
    move_alpha,
    paste_objects,
    plan_swap,
    sample_params,
)
from .jitter import JitterGenerator

__all__ = ["BackgroundSwap", "BackgroundSwapCollate", "default_labels_getter"]

class BackgroundSwap(v2.Transform):
    """Swap the background of images for inpainted backgrounds from a :class:`BackgroundBank`.

    The image swapped is the sample's first image-like item; further images and ``tv_tensors.Video`` items pass
    through unchanged (module docs, *What is the object*). Like torchvision's random transforms, an input of which
    nothing is swapped (``p`` not hit, no object, every object under ``min_foreground``) is returned as-is, the same
    object, not a copy: an in-place step after the swap then writes to the caller's tensor, exactly as after
    ``v2.RandomHorizontalFlip`` that did not flip. A swapped image is always a new tensor (or PIL image) that
    shares no memory with the input.

    Args:
        bank: a :class:`~torch_backswap.bank.BackgroundBank`, a :class:`~torch_backswap.streaming.StreamingBackgroundBank`
            (anything with ``sample_indices`` and ``gather``) or a path to a saved one.
        cut_out: the object's cut-out when a sample carries no :class:`ObjectAlpha`: a
            :class:`~torch_backswap.cutout.CutOut` (segmenter, refiner, thresholds: one route), or a bare segmenter
            (any callable ``images -> (B, S, S) logits``, taken as ``CutOut(segmenter)``, the paper's route).
        p: probability per sample of swapping (the others are returned unchanged).
        strategy: background sampling: ``"class_balanced"`` (paper), ``"uniform"`` or ``"other_class"``
            (needs labels).
        jitter: the object's jitter ranges, a :class:`~torch_backswap.jitter.JitterGenerator` (default: the
            paper's 0.5–1.5, ±30°, ±32 px at 224 px).
        compositing: how objects are pasted, a :class:`~torch_backswap.functional.Compositing`
            (``min_foreground``, ``feather_px``, ``harmonize``, ``interpolation``).
        value_range: ``(low, high)`` of float images (default ``(0, 1)``; uint8 is always 0..255). Float
            images outside the range raise ``ValueError`` instead of being blended as garbage.
        labels_getter: ``"default"`` (:func:`default_labels_getter`), a callable ``sample -> labels``, or
            ``None`` (never look for labels; refused with ``strategy="other_class"``). Labels may be ints, lists,
            NumPy arrays, ``(B,)`` tensors or ``(B, K)`` one-hot / soft labels (the class is the argmax); they are
            returned unchanged. Found labels must be one per image and classes of the bank, else ``ValueError``.
        seed: the swap's own random stream (see :mod:`torch_backswap._runtime`); ``None`` uses the global RNG.
        generator: explicit CPU ``torch.Generator`` for the main process (overrides ``seed`` there).

    Example:
        >>> import torch
        >>> from torch_backswap import BackgroundBank, BackgroundSwap, ObjectAlpha
        >>> bank = BackgroundBank(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]))
        >>> swap = BackgroundSwap(bank, seed=0)
        >>> image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
        >>> alpha = torch.zeros(1, 32, 32); alpha[:, 8:24, 8:24] = 1
        >>> out, moved = swap(image, ObjectAlpha(alpha))
        >>> out.shape, out.dtype, int(out[:, 0, 0].sum()), type(moved).__name__
        (torch.Size([3, 32, 32]), torch.uint8, 0, 'ObjectAlpha')
        >>> swap.last_record.swapped.tolist()
        [True]
    """

    def __init__(
        self,
        bank: Bank | str | os.PathLike,
        cut_out: CutOut | nn.Module | Callable[[Tensor], Tensor] | None = None,
        *,
        p: float = 1.0,
        strategy: str = "class_balanced",
        jitter: JitterGenerator | None = None,
        compositing: Compositing | None = None,
        value_range: tuple[float, float] | None = None,
        labels_getter: str | Callable[[Any], Any] | None = "default",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bank = as_bank(bank)
        self.p = check_fraction("p", p)
        self.strategy = check_swap_strategy(strategy, labels_getter, bank.present_classes)
        check_instance("jitter", jitter, JitterGenerator)
        check_instance("compositing", compositing, Compositing)
        if cut_out is not None and not isinstance(cut_out, CutOut):
            cut_out = CutOut(cut_out)  # a bare segmenter: the paper's route
        self.bank = bank
        self.cut_out = cut_out
        self.jitter = jitter if jitter is not None else JitterGenerator()
        self.compositing = compositing if compositing is not None else Compositing()
        self.value_range = value_range_of("value_range", value_range)
        self.labels_getter = labels_getter
        self.seed = seed
        self.runtime = SwapRuntime(cut_out, seed, generator)
        self.last_record: SwapRecord | None = None

    @classmethod
    def from_pretrained(
        cls, segmenter_name_or_path: str | os.PathLike, bank: Bank | str | os.PathLike, *,
        refiner: str | os.PathLike | None = DEFAULT_EDGE_REFINER, **kwargs: Any,
    ) -> "BackgroundSwap":
        """``BackgroundSwap(bank, CutOut.from_pretrained(segmenter_name_or_path, refiner=refiner), ...)``: the measured
        best cut-out route by default (:meth:`~torch_backswap.cutout.CutOut.from_pretrained`). ``revision``,
        ``cache_dir``, ``local_files_only``, ``tight_threshold``, ``feather`` and ``flip_average`` go to the
        :class:`~torch_backswap.cutout.CutOut`, the other ``kwargs`` to :class:`BackgroundSwap`."""
        keys = ("revision", "cache_dir", "local_files_only", "tight_threshold", "feather", "flip_average")
        cut_kwargs = {k: kwargs.pop(k) for k in keys if k in kwargs}
        return cls(bank, CutOut.from_pretrained(segmenter_name_or_path, refiner=refiner, **cut_kwargs), **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> "BackgroundSwap":
        """Move the cut-out and the bank (a CPU copy of the cut-out stays for DataLoader workers)."""
        device = parse_device(*args, **kwargs)
        self.runtime.moved(self.cut_out, device)
        super().to(*args, **kwargs)
        if device is not None:
            self.bank = self.bank.to(device)
        return self

    def share_memory(self) -> "BackgroundSwap":
        """Put the bank's CPU tensors in shared memory so DataLoader workers read one copy."""
        self.bank.share_memory_()
        super().share_memory()
        return self

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        modules = dict(state.get("_modules", {}))
        if modules.get("cut_out") is not None:
            modules["cut_out"] = self.runtime.cpu_cut_out  # a pickled swap is a CPU swap
        state["_modules"] = modules
        state["last_record"] = None
        return state

    def forward(self, *inputs: Any) -> Any:
        """torchvision's ``Transform.forward`` with one step in front, as in ``v2.CutMix``: find the labels."""
        sample = inputs if len(inputs) > 1 else inputs[0]
        labels, explicit = find_labels(sample, self.labels_getter)
        flat, spec = tree_flatten(sample)
        self.check_inputs(flat)
        needs = self._needs_transform_list(flat)
        params = self.make_params([x for x, n in zip(flat, needs) if n], labels=labels, labels_explicit=explicit)
        return tree_unflatten([self.transform(x, params) if n else x for x, n in zip(flat, needs)], spec)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for item in flat_inputs:
            keypoints = getattr(tv_tensors, "KeyPoints", None)
            if keypoints is not None and isinstance(item, keypoints):
                raise TypeError("BackgroundSwap cannot keep tv_tensors.KeyPoints consistent yet; drop them before the swap")

    def make_params(
        self, flat_inputs: list[Any], labels: Any = None, labels_explicit: bool = True, params: SwapParams | None = None
    ) -> dict:
        """Plain data, no pixels composited: the call's :class:`SwapParams` (sampled once, or ``params`` to replay),
        the object's alpha (the sample's :class:`ObjectAlpha` or the segmenter's cut-out) and the planned
        :class:`SwapRecord` (:func:`~torch_backswap.functional.plan_swap`; also kept as :attr:`last_record`).

        ``labels`` are the sample's labels (found by ``labels_getter``).
        """
        image, x, single, given = swap_inputs(flat_inputs, self.value_range)
        plan = self._plan(x, labels, given, params, single=single, labels_explicit=labels_explicit)
        return {**plan, "image": image, "single": single}

    def transform(self, inpt: Any, params: dict) -> Any:
        """The pixel work for one input of the sample, in its own kind: the image composited
        (:func:`~torch_backswap.functional.paste_objects`, the pixel half of
        :func:`~torch_backswap.functional.swap_backgrounds`), the ``ObjectAlpha`` and other masks moved with the
        object (:func:`~torch_backswap.functional.move_alpha` / ``move_masks``), boxes moved (``move_boxes``)."""
        record: SwapRecord = params["record"]
        if inpt is params["image"]:
            if not bool(record.swapped.any()):
                return inpt
            x, _ = image_to_batch(inpt, self.value_range, check_values=False)  # make_params checked its values
            return batch_to_image(inpt, self._paste(x, params), record)
        if isinstance(inpt, ObjectAlpha):  # as before issue 26: the compact alpha (mask_to_alpha), moved where swapped
            moved = move_alpha(params["given"], record, interpolation=self.compositing.interpolation)
            return tv_tensors.wrap(moved.reshape(inpt.shape), like=inpt)
        if isinstance(inpt, tv_tensors.Mask):
            moved = None
            if bool(record.swapped.any()):
                rows = object_rows(params["given"], params["cut_out"], params["params"].apply)
                moved = move_alpha(rows, record, interpolation=self.compositing.interpolation)
            return mask_like(inpt, moved, record, params["single"])
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return boxes_like(inpt, record)
        return inpt

    def swap_batch(self, images: Tensor, labels: Any = None, *, alphas: Tensor | None = None,
                   params: SwapParams | None = None, return_record: bool = False) -> Tensor | tuple[Tensor, SwapRecord]:
        """Swap a batch of images directly (the fast path for a precomputed alpha tensor).

        Args:
            images: ``(B, C, H, W)`` uint8 or float (C = 1, 3 or 4).
            labels: ``(B,)`` / ``(B, K)`` labels in any form :func:`~torch_backswap._checks.check_labels` takes
                (needed by ``strategy="other_class"``).
            alphas: ``(B, 1, H, W)`` or ``(B, H, W)`` object alphas (bool / uint8 / float); default: segment. Another
                resolution of the images' aspect ratio is resized (bilinear); another aspect ratio raises.
            params: :class:`SwapParams` of an earlier call to replay it (e.g. ``swap.last_record.params``).
            return_record: also return the :class:`SwapRecord`.

        Returns:
            Images of the input's dtype, shape and device (and the record).
        """
        x = check_images(images, "images", value_range=self.value_range, min_size=2)
        given = None
        if alphas is not None:
            given = alpha_to_batch(alphas, x.shape[0], tuple(x.shape[-2:]), single=False, name="alphas", resize=True)
        plan = self._plan(x, labels, given, params, single=False, labels_explicit=True)
        out = restore_channels(self._paste(x, plan), x, plan["record"])
        return (out, plan["record"]) if return_record else out

    def segment(self, images: Tensor) -> Tensor:
        """The tight, feathered object alpha the swap would use: float ``(B, 1, H, W)`` in ``[0, 1]`` of
        ``(B, C, H, W)`` images (segment a fixed dataset once, then pass it as :class:`ObjectAlpha`)."""
        x = check_images(images, "images", value_range=self.value_range, min_size=2)
        return self._segment(to_unit_rgb(x, x.device, self.value_range))

    def _segment(self, rgb: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The cut-out alpha of ``(k, 3, H, W)`` images: the :class:`CutOut` (its CPU copy inside workers); float32,
        or ``dtype=torch.uint8``: the swap's compact alpha (computed at the grid's resolution)."""
        return self.runtime.cut_out(self.cut_out)(rgb, dtype=dtype)

    def _plan(
        self, x: Tensor, labels: Any, given: Tensor | None, params: SwapParams | None, *, single: bool,
        labels_explicit: bool,
    ) -> dict:
        """The data of one call on checked ``(B, C, H, W)`` images ``x``: ``params``, ``alpha`` (the applied rows,
        ready to paste), ``record``, ``given`` (the ObjectAlpha batch) or ``cut_out`` (the segmenter's alpha:
        ``B`` rows, or one per applied sample)."""
        b, _, h, w = x.shape
        bank = self.runtime.bank(self.bank)
        lab = bank_classes_of(labels, b, single=single, explicit=labels_explicit, strategy=self.strategy, bank=bank)
        device = bank.device
        gen = self.runtime.generator_for_call()
        if params is None:
            params = sample_params(b, bank, lab, p=self.p, strategy=self.strategy, generator=gen, **self.jitter.ranges())
        elif len(params) != b:
            raise ValueError(f"params has {len(params)} rows for a batch of {b} images")
        chosen = params.apply.nonzero().flatten().to(device)
        cut_out = None
        if given is not None:
            alpha = given.to(device)
        elif not chosen.numel():
            alpha = torch.zeros(0, 1, h, w, device=device)
        else:
            rgb = to_unit_rgb(x, device, self.value_range)
            # segment only the samples that swap: one row each
            alpha = cut_out = self._segment(rgb if int(chosen.numel()) == b else rgb.index_select(0, chosen),
                                            torch.uint8 if rgb.dtype == torch.uint8 else None)
        applied = params.bank_indices[params.apply]
        comp = self.compositing
        alpha, record = plan_swap(alpha, params, min_foreground=comp.min_foreground, feather_px=comp.feather_px,
                                  background_labels=bank.labels[applied.to(bank.labels.device)], device=device)
        self.last_record = record
        return {"params": params, "alpha": alpha, "record": record, "given": given, "cut_out": cut_out}

    def _paste(self, x: Tensor, plan: dict) -> Tensor:
        """The planned swap's pixels: checked images ``x`` → swapped RGB ``(B, 3, H, W)`` in ``x``'s range."""
        bank = self.runtime.bank(self.bank)
        rgb = to_unit_rgb(x, bank.device, self.value_range)
        backgrounds = gather_backgrounds(bank, plan["params"], tuple(x.shape[-2:]))
        out = paste_objects(rgb, plan["alpha"], backgrounds, plan["record"], inplace=True,  # gathered: ours to write
                            **{k: getattr(self.compositing, k) for k in ("harmonize", "interpolation", "backend")})
        return from_unit(out, self.value_range)

    def extra_repr(self) -> str:
        return (f"bank={self.bank!r}, p={self.p}, strategy={self.strategy!r}, jitter={self.jitter}, "
                f"compositing={self.compositing}, seed={self.seed}")


class BackgroundSwapCollate:
    """``collate_fn`` that collates a list of samples, then swaps the whole batch at once.

    Args:
        swap: the :class:`BackgroundSwap` to apply.
        collate_fn: the base collation (default ``torch.utils.data.default_collate``).
        device: ``"bank"`` (default): move the batch's tensors to the bank's device first (GPU with
            ``num_workers=0``; always CPU in workers); ``None``: leave tensors where they are.

    Picklable, so it works with worker processes started by fork, spawn or forkserver.
    """

    def __init__(self, swap: "BackgroundSwap", collate_fn: Callable | None = None, device: str | None = "bank") -> None:
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
