"""``BackgroundSwap``: a torchvision v2 transform that pastes each image's object onto a new background.

Per sample, inside any ``Compose`` (PIL, tensor or ``tv_tensors.Image`` in; the same type out)::

    swap = BackgroundSwap(bank, segmenter)
    train_tf = v2.Compose([swap, v2.RandomResizedCrop(224, scale=(0.7, 1.0)), v2.RandomHorizontalFlip(), ...])

Per batch, like ``v2.CutMix`` (labels found by ``labels_getter`` and returned unchanged)::

    images, labels = swap(images, labels)                              # (B, C, H, W) uint8 or float
    loader = DataLoader(ds, batch_size=64, collate_fn=swap.collate_fn)   # collate, then one batched swap

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
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from ._checks import check_choice, check_fraction, check_images, describe, value_range_of
from ._image import to_rgb
from ._kinds import (
    alpha_to_batch,
    batch_to_image,
    boxes_like,
    image_to_batch,
    is_image,
    mask_like,
    restore_channels,
)
from ._runtime import SwapRuntime, parse_device
from ._sample_labels import check_bank_classes, class_indices, default_labels_getter, find_labels
from .alpha import ObjectAlpha
from .bank import STRATEGIES, BackgroundBank
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
        **legacy: deprecated: the 0.2 knobs (``segmenter``, ``tight_threshold``, ``feather``, ``refine``,
            ``flip_average``, ``scale``, ``degrees``, ``translate_px``, ``reference_size``, ``min_foreground``,
            ``feather_px``, ``harmonize``, ``interpolation``), folded into the objects above with a
            ``DeprecationWarning``.

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
        bank: BackgroundBank | str | os.PathLike,
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
        **legacy: Any,
    ) -> None:
        super().__init__()
        if legacy:
            cut_out, jitter, compositing = _from_legacy_knobs(cut_out, jitter, compositing, legacy)
        if isinstance(bank, (str, os.PathLike)):
            bank = BackgroundBank.load(bank)
        if not (hasattr(bank, "sample_indices") and hasattr(bank, "gather")):
            raise TypeError(f"bank must be a BackgroundBank or a path to one, got {describe(bank)}")
        self.p = check_fraction("p", p)
        self.strategy = check_choice("strategy", strategy, STRATEGIES)
        if strategy == "other_class" and len(bank.present_classes) < 2:
            raise ValueError(
                f"strategy='other_class' needs a bank with at least 2 classes, but the bank only has class "
                f"{bank.present_classes}"
            )
        if labels_getter is not None and labels_getter != "default" and not callable(labels_getter):
            raise ValueError(f"labels_getter must be 'default', a callable or None, got {labels_getter!r}")
        if labels_getter is None and strategy == "other_class":
            raise ValueError("strategy='other_class' needs the samples' labels, but labels_getter=None never looks for "
                             "them; pass labels_getter='default' (the default) or a callable sample -> labels")
        for name, value, kind in (("jitter", jitter, JitterGenerator), ("compositing", compositing, Compositing)):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} or None, got {describe(value)}")
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
        cls, segmenter_name_or_path: str | os.PathLike, bank: BackgroundBank | str | os.PathLike, *,
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

    def on_device(self, loader: Any, device: torch.device | str = "cuda", **kwargs: Any) -> Any:
        """Iterate ``loader``'s batches on ``device``, swapped there in the main process (one line on a GPU):
        a :class:`~torch_backswap.loader.DeviceSwapLoader` (``kwargs``: ``non_blocking``, ``prefetch``, ...)."""
        from .loader import DeviceSwapLoader

        return DeviceSwapLoader(loader, self, device, **kwargs)

    @property
    def collate_fn(self) -> "BackgroundSwapCollate":
        """A ``collate_fn``: ``default_collate``, then one batched swap on the bank's device."""
        return BackgroundSwapCollate(self)

    def __getattr__(self, name: str) -> Any:
        """Read the collaborators' settings as before issue 26 (``swap.feather_px``, ``swap.scale``,
        ``swap.tight_threshold``, ...): nn.Module's lookup first, then the compositing, jitter and cut-out."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            d = self.__dict__
            for part in (d.get("compositing"), d.get("jitter"), d.get("_modules", {}).get("cut_out")):
                if part is not None and not name.startswith("_") and hasattr(part, name):
                    return getattr(part, name)
            raise

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        modules = dict(state.get("_modules", {}))
        if modules.get("cut_out") is not None:
            modules["cut_out"] = self.runtime.cpu_segmenter  # a pickled swap is a CPU swap
        state["_modules"] = modules
        state["last_record"] = None
        return state

    # ------------------------------------------------------------------------------------------------
    # the torchvision skeleton
    # ------------------------------------------------------------------------------------------------

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
        images = [x for x in flat_inputs if is_image(x)]
        if not images and any(isinstance(x, tv_tensors.Video) for x in flat_inputs):
            raise TypeError(
                "BackgroundSwap swaps images, and this sample's only image-like item is a tv_tensors.Video; swap its "
                "frames as a batch of images, e.g. swap(tv_tensors.Image(video.flatten(0, -4)))"
            )
        if not images:
            raise TypeError(
                "BackgroundSwap found no image in its input; pass a PIL image, a (C, H, W) / (B, C, H, W) tensor or "
                f"a tv_tensors.Image (got {[type(x).__name__ for x in flat_inputs]})"
            )
        image = images[0]  # the first image-like item; further images and videos pass through unchanged
        alphas = [x for x in flat_inputs if isinstance(x, ObjectAlpha)]
        if len(alphas) > 1:
            raise ValueError(f"a sample may carry one ObjectAlpha, got {len(alphas)}")
        x, single = image_to_batch(image, self.value_range)
        if any(isinstance(i, tv_tensors.BoundingBoxes) for i in flat_inputs) and not single:
            raise ValueError("BoundingBoxes can be moved with the object only for single images, got a batch of images")
        given = alpha_to_batch(alphas[0], x.shape[0], tuple(x.shape[-2:]), single) if alphas else None
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
                moved = move_alpha(self._object_rows(params), record, interpolation=self.compositing.interpolation)
            return mask_like(inpt, moved, record, params["single"])
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return boxes_like(inpt, record)
        return inpt

    # ------------------------------------------------------------------------------------------------
    # batches
    # ------------------------------------------------------------------------------------------------

    def swap_batch(
        self,
        images: Tensor,
        labels: Any = None,
        *,
        alphas: Tensor | None = None,
        params: SwapParams | None = None,
        return_record: bool = False,
    ) -> Tensor | tuple[Tensor, SwapRecord]:
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
        return self._segment(to_rgb(x).contiguous())

    # ------------------------------------------------------------------------------------------------
    # internals
    # ------------------------------------------------------------------------------------------------

    def _segment(self, rgb: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The cut-out alpha of ``(k, 3, H, W)`` images: the :class:`CutOut` (its CPU copy inside workers); float32,
        or ``dtype=torch.uint8``: the swap's compact alpha (computed at the grid's resolution)."""
        cut_out = self.runtime.segmenter(self.cut_out)
        if cut_out is None:
            raise ValueError(
                "BackgroundSwap has no segmenter and the sample carries no ObjectAlpha: pass a CutOut or a segmenter "
                "as cut_out, or put the object's alpha in the sample as torch_backswap.ObjectAlpha (see "
                "ObjectAlphaDataset)"
            )
        return cut_out(rgb, dtype=dtype)

    def _rgb(self, x: Tensor, device: torch.device) -> Tensor:
        """Checked ``(B, C, H, W)`` images → RGB on ``device``, floats mapped from ``value_range`` to ``[0, 1]``."""
        rgb = to_rgb(x).to(device)
        if self.value_range is not None and rgb.dtype.is_floating_point:
            lo, hi = self.value_range
            rgb = (rgb - lo) / (hi - lo)
        return rgb.contiguous()

    def _plan(
        self, x: Tensor, labels: Any, given: Tensor | None, params: SwapParams | None, *, single: bool,
        labels_explicit: bool,
    ) -> dict:
        """The data of one call on checked ``(B, C, H, W)`` images ``x``: ``params``, ``alpha`` (the applied rows,
        ready to paste), ``record``, ``given`` (the ObjectAlpha batch) or ``cut_out`` (the segmenter's alpha:
        ``B`` rows, or one per applied sample)."""
        b, _, h, w = x.shape
        lab = class_indices(labels, b, single, labels_explicit or self.strategy == "other_class")
        if lab is None and self.strategy == "other_class":
            raise ValueError(
                "strategy='other_class' needs the samples' labels: pass (image, label) samples, a dict with a 'label' "
                "key, swap(images, labels) for batches, or a labels_getter"
            )
        bank = self.runtime.bank(self.bank)
        if lab is not None:
            check_bank_classes(lab, bank, found_by_default=not labels_explicit)
        device = bank.device
        gen = self.runtime.generator_for_call()
        if params is None:
            params = sample_params(
                b, bank, lab, p=self.p, strategy=self.strategy, generator=gen, **self.jitter.ranges()
            )
        elif len(params) != b:
            raise ValueError(f"params has {len(params)} rows for a batch of {b} images")
        chosen = params.apply.nonzero().flatten().to(device)
        cut_out = None
        if given is not None:
            alpha = given.to(device)
        elif not chosen.numel():
            alpha = torch.zeros(0, 1, h, w, device=device)
        else:
            rgb = self._rgb(x, device)
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
        rgb = self._rgb(x, bank.device)
        backgrounds = gather_backgrounds(bank, plan["params"], tuple(x.shape[-2:]))
        out = paste_objects(rgb, plan["alpha"], backgrounds, plan["record"], harmonize=self.compositing.harmonize,
                            interpolation=self.compositing.interpolation, inplace=True)  # gathered: ours to write
        if self.value_range is not None and out.dtype.is_floating_point:
            lo, hi = self.value_range
            out = out * (hi - lo) + lo
        return out

    @staticmethod
    def _object_rows(plan: dict) -> Tensor:
        """The object's alpha the other masks move with, one row per sample: the ObjectAlpha's, else the cut-out's
        (rows of samples not swapped are never read)."""
        if plan["given"] is not None:
            return plan["given"]
        used, apply = plan["cut_out"], plan["params"].apply
        if used.shape[0] != apply.shape[0]:
            rows = apply.nonzero().flatten().to(used.device)
            used = used.new_zeros(apply.shape[0], *used.shape[1:]).index_copy_(0, rows, used)
        return used

    def extra_repr(self) -> str:
        return (f"bank={self.bank!r}, p={self.p}, strategy={self.strategy!r}, jitter={self.jitter}, "
                f"compositing={self.compositing}, seed={self.seed}")


_LEGACY_GROUPS = {
    "cut_out": ("tight_threshold", "feather", "refine", "flip_average"),
    "jitter": ("scale", "degrees", "translate_px", "reference_size"),
    "compositing": ("min_foreground", "feather_px", "harmonize", "interpolation"),
}


def _from_legacy_knobs(cut_out: Any, jitter: Any, compositing: Any, legacy: dict) -> tuple[Any, Any, Any]:
    """The 0.2 constructor's knobs → ``(cut_out, jitter, compositing)``, with a ``DeprecationWarning``."""
    known = {k for keys in _LEGACY_GROUPS.values() for k in keys} | {"segmenter"}
    unknown = sorted(set(legacy) - known)
    if unknown:
        raise TypeError(f"BackgroundSwap got unexpected keyword argument(s) {unknown}")
    warnings.warn(f"BackgroundSwap({', '.join(f'{k}=' for k in legacy)}) is deprecated: pass cut_out=CutOut(...), "
                  "jitter=JitterGenerator(...) and compositing=Compositing(...)", DeprecationWarning, stacklevel=3)
    if "segmenter" in legacy:
        if cut_out is not None:
            raise TypeError("pass the segmenter once: as cut_out (positional) or as segmenter=, not both")
        cut_out = legacy.pop("segmenter")
    groups = {g: {k: legacy[k] for k in keys if k in legacy} for g, keys in _LEGACY_GROUPS.items()}
    given = {"cut_out": isinstance(cut_out, CutOut), "jitter": jitter is not None, "compositing": compositing is not None}
    for group, knobs in groups.items():
        if knobs and given[group]:
            raise TypeError(f"pass {sorted(knobs)} inside {group}=, not beside it")
    if groups["cut_out"]:
        knobs = groups["cut_out"]
        cut_out = CutOut(cut_out, knobs.pop("refine", None), **knobs)
    if groups["jitter"]:
        jitter = JitterGenerator(**groups["jitter"])
    if groups["compositing"]:
        compositing = Compositing(**groups["compositing"])
    return cut_out, jitter, compositing


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
