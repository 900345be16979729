"""``BackgroundSwap``: a torchvision v2 transform that pastes each image's object onto a new background.

Per sample (segmenter → tight mask → one jitter → blend onto a bank background)::

    swap = BackgroundSwap(bank, segmenter)                       # or BackgroundSwap.from_pretrained(name, bank=bank)
    train_tf = v2.Compose([swap, v2.RandomResizedCrop(224, scale=(0.7, 1.0)), v2.RandomHorizontalFlip(), ...])

Per batch, in the style of ``CutMix`` / ``MixUp`` (labels pass through unchanged)::

    images, labels = swap(images, labels)                        # (B, C, H, W) uint8 or float
    loader = DataLoader(ds, batch_size=64, collate_fn=swap.collate_fn)   # collate, then one batched swap

Where the work happens
----------------------
* Main process: on the bank's device. With a GPU bank, the fastest pattern is ``num_workers`` decoding on
  CPU and the swap applied to the batch **after** ``.to(device)`` (``images, labels = swap(images.cuda(),
  labels)``), or ``collate_fn=swap.collate_fn`` with ``num_workers=0``.
* DataLoader worker processes: always CPU, from the bank's CPU tensors (``bank.share_memory_()`` shares
  one copy across workers) and a CPU copy of the segmenter made in the main process — CUDA is never
  touched in a worker. If no CPU copy of a CUDA segmenter exists, one clear ``RuntimeError`` says how to
  set it up.

Randomness
----------
``seed=None`` (default) draws from torch's global RNG, which DataLoader already seeds differently per
worker; with ``seed=int`` (or ``generator=``) the swap owns its stream: the same seed gives the same
outputs, each worker derives its stream from ``(seed, worker seed)`` (different per worker and epoch,
reproducible under ``torch.manual_seed``) and each distributed rank from ``(seed, rank)``.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Sequence

import PIL.Image
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .bank import STRATEGIES, BackgroundBank
from .segmenter import segmenter_input
from .composite import REFERENCE_SIZE, composite, jitter_affine, sample_jitter, soft_alpha

__all__ = ["BackgroundSwap", "BackgroundSwapCollate"]

_LABEL_KEYS = ("label", "labels", "target", "targets", "y")
_INDEX_KEYS = ("index", "idx")


def _module_device(module: Any) -> torch.device | None:
    if isinstance(module, nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return None


def _cpu_copy(module: Any) -> Any:
    """A CPU version of ``module`` (itself when it already is one or is not a Module)."""
    dev = _module_device(module)
    if dev is None or dev.type == "cpu":
        return module
    return copy.deepcopy(module).cpu()


def _mask_to_alpha(mask: Tensor, *, compact: bool = False) -> Tensor:
    """Given foreground masks (bool, uint8 0/1 or 0/255, float [0, 1]) → alpha, same shape.

    ``compact=False``: float alpha in [0, 1]. ``compact=True``: the same alpha without the float copy where
    the composite kernels read the mask as it is — bool stays bool, uint8 0/255 stays uint8 (read as
    ``value / 255``), uint8 0/1 becomes bool; floats are checked and clamped as before. Both give the
    same composite, bit for bit (the kernels convert exactly as this function does).
    """
    m = mask.as_subclass(Tensor)
    if m.dtype == torch.bool:
        return m if compact else m.float()
    if m.dtype == torch.uint8:
        scaled = m.numel() > 0 and int(m.amax()) > 1
        if compact:
            return m if scaled else m > 0
        return m.float() / (255.0 if scaled else 1.0)
    if m.dtype.is_floating_point:
        if not bool(torch.isfinite(m).all()):
            raise ValueError("masks contain NaN or inf values")
        return m.float().clamp(0.0, 1.0)
    return m > 0 if compact else (m > 0).float()


def _drop_specks(alpha: Tensor, min_fraction: float) -> Tensor:
    """Zero the alpha of samples whose foreground (alpha > 0.5) covers less than ``min_fraction`` of the image.

    Works on every compact alpha dtype (bool, uint8 0..255, float); returns a new tensor only when a
    sample is dropped.
    """
    if alpha.dtype == torch.bool:
        solid = alpha
    elif alpha.dtype == torch.uint8:
        solid = alpha > 127
    else:
        solid = alpha > 0.5
    small = solid.flatten(1).float().mean(1) < min_fraction
    if not bool(small.any()):
        return alpha
    alpha = alpha.clone()
    alpha[small] = 0
    return alpha


def _float_alpha(alpha: Tensor) -> Tensor:
    """A compact alpha of :func:`_mask_to_alpha` (bool / uint8 0..255 / float) → float32 in [0, 1]."""
    if alpha.dtype == torch.uint8:
        return alpha.float() / 255.0
    return alpha.float()


def _as_batch_masks(
    masks: Tensor, b: int, size: tuple[int, int], name: str = "masks", *, compact: bool = False
) -> Tensor:
    m = masks.as_subclass(Tensor) if isinstance(masks, Tensor) else torch.as_tensor(masks)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] == b and b != 1 else m[None] if m.shape[0] == 1 else m[:, None]
    if m.ndim != 4 or m.shape[0] != b or m.shape[1] != 1:
        raise ValueError(f"{name} must be (B, 1, H, W) (or (B, H, W)) with B={b}, got shape {tuple(masks.shape)}")
    alpha = _mask_to_alpha(m, compact=compact)
    if tuple(alpha.shape[-2:]) != tuple(size):
        alpha = torch.nn.functional.interpolate(_float_alpha(alpha), size=size, mode="bilinear", align_corners=False)
    return alpha


class BackgroundSwap(v2.Transform):
    """Swap the background of images for inpainted backgrounds from a :class:`BackgroundBank`.

    Args:
        bank: a :class:`~torch_backswap.bank.BackgroundBank` (or a path to a saved one).
        segmenter: a :class:`~torch_backswap.segmenter.PatchSegmenter` or any callable
            ``images (B, 3, H, W) uint8|float -> (B, S, S) logits``. Optional when masks are given (a
            ``tv_tensors.Mask`` in the sample, ``masks=`` cache, or ``swap_batch(masks=...)``).
        p: probability per sample of swapping (others are returned unchanged).
        strategy: background sampling, ``"class_balanced"`` (paper), ``"uniform"`` or ``"other_class"``
            (needs labels in the sample).
        tight_threshold: foreground probability of the tight mask (paper: 0.67).
        feather: ramp width in probability units around ``tight_threshold`` (soft edges).
        feather_px: extra inward Gaussian feathering of the alpha in pixels (useful for hard given masks).
        scale, degrees, translate_px, reference_size: foreground jitter, see
            :func:`~torch_backswap.composite.sample_jitter` (paper: 0.5–1.5, ±30°, ±32 px at 224 px,
            scaled with the image size; the object is kept inside the frame).
        harmonize: colour harmonisation strength in [0, 1] (0 = off).
        interpolation: ``"bilinear"`` or ``"nearest"`` resampling of the foreground.
        seed: own random stream (see module docs); ``None`` uses the global RNG.
        generator: explicit ``torch.Generator`` for the main process (overrides ``seed`` there).
        min_foreground: samples whose cut-out (alpha > 0.5) covers less than this fraction of the image are
            returned unchanged: a speck of a missed object pasted on a new background would be an image
            without its object that still carries the object's label (default 0.01; 0 disables).
        masks: optional mask cache for fixed datasets, ``(N, 1, H, W)`` (bool / uint8 / float), looked up
            by the sample's ``"index"`` key (dict samples) or ``swap_batch(indices=...)``. Only valid when
            no geometric transform runs before the swap.

    Inputs: a single image (PIL, ``(C, H, W)`` tensor, ``tv_tensors.Image``; uint8 or float in [0, 1];
    C = 1 gray, 3 RGB, 4 RGBA) or a batch ``(B, C, H, W)``, alone or inside a tuple / dict sample. The
    output has the input's type, dtype, shape, mode and device; other items pass through untouched,
    except a ``tv_tensors.Mask`` of the foreground, which is used as the alpha and returned moved with the
    object. Gray images come back gray (luma), RGBA comes back with an opaque alpha channel. An image in
    which no foreground is found is returned unchanged. NaN values raise ``ValueError``.
    """

    def __init__(
        self,
        bank: BackgroundBank | str | os.PathLike,
        segmenter: nn.Module | Callable[[Tensor], Tensor] | None = None,
        *,
        p: float = 1.0,
        strategy: str = "class_balanced",
        tight_threshold: float | None = None,
        feather: float = 0.1,
        feather_px: float = 0.0,
        scale: float | tuple[float, float] = (0.5, 1.5),
        degrees: float | tuple[float, float] = 30.0,
        translate_px: float = 32.0,
        reference_size: int = REFERENCE_SIZE,
        harmonize: float = 0.0,
        interpolation: str = "bilinear",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        masks: Tensor | None = None,
        min_foreground: float = 0.01,
    ) -> None:
        super().__init__()
        from .segmenter import TIGHT_THRESHOLD

        if isinstance(bank, (str, os.PathLike)):
            bank = BackgroundBank.load(bank)
        if not isinstance(bank, BackgroundBank):
            raise TypeError(f"bank must be a BackgroundBank or a path to one, got {type(bank).__name__}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "other_class" and len(bank.present_classes) < 2:
            raise ValueError(
                f"strategy='other_class' needs a bank with at least 2 classes, but the bank only has class "
                f"{bank.present_classes}"
            )
        tight = TIGHT_THRESHOLD if tight_threshold is None else float(tight_threshold)
        if not 0.0 <= tight <= 1.0:
            raise ValueError(f"tight_threshold must be in [0, 1], got {tight_threshold!r}")
        if feather < 0 or feather_px < 0:
            raise ValueError(f"feather and feather_px must be >= 0, got {feather!r}, {feather_px!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        if not 0.0 <= float(harmonize) <= 1.0:
            raise ValueError(f"harmonize must be in [0, 1], got {harmonize!r}")
        if not 0.0 <= float(min_foreground) < 1.0:
            raise ValueError(f"min_foreground must be in [0, 1), got {min_foreground!r}")
        if segmenter is not None and not callable(segmenter):
            raise TypeError(f"segmenter must be callable (images -> (B, S, S) logits), got {type(segmenter).__name__}")
        sample_jitter(1, scale=scale, degrees=degrees, translate_px=translate_px, reference_size=reference_size)
        self.bank = bank
        self.segmenter = segmenter
        self._cpu_segmenter = [_cpu_copy(segmenter)]  # list: not registered as a submodule
        self.p = float(p)
        self.strategy = strategy
        self.tight_threshold = tight
        self.feather = float(feather)
        self.feather_px = float(feather_px)
        self.min_foreground = float(min_foreground)
        self.scale = scale
        self.degrees = degrees
        self.translate_px = float(translate_px)
        self.reference_size = int(reference_size)
        self.harmonize = float(harmonize)
        self.interpolation = interpolation
        self.seed = seed
        self.generator = generator
        self.masks = None if masks is None else masks.as_subclass(Tensor).detach().cpu()
        self._gen: torch.Generator | None = None
        self._gen_key: tuple | None = None

    # ------------------------------------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        segmenter_name_or_path: str | os.PathLike,
        bank: BackgroundBank | str | os.PathLike,
        **kwargs: Any,
    ) -> "BackgroundSwap":
        """Load a pretrained :class:`PatchSegmenter` (local dir → Hub → bundled) and wrap it with ``bank``.

        ``kwargs`` go to :class:`BackgroundSwap` (``revision``, ``cache_dir``, ``local_files_only`` go to
        ``PatchSegmenter.from_pretrained``).
        """
        from .segmenter import PatchSegmenter

        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
        segmenter = PatchSegmenter.from_pretrained(segmenter_name_or_path, **hub_kwargs)
        return cls(bank, segmenter.eval(), **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> "BackgroundSwap":
        """Move the segmenter and the bank (keeping CPU copies for DataLoader workers). Returns self."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != "cpu" and isinstance(self.segmenter, nn.Module):
            cpu_seg = self._cpu_segmenter[0]
            if cpu_seg is self.segmenter:  # about to move: keep a separate CPU copy for workers
                cpu_seg = copy.deepcopy(cpu_seg)
            self._cpu_segmenter = [_cpu_copy(cpu_seg)]
        super().to(*args, **kwargs)
        if device is not None:
            self.bank = self.bank.to(device)
        return self

    def share_memory(self) -> "BackgroundSwap":
        """Put the bank's (and the mask cache's) CPU tensors in shared memory for DataLoader workers."""
        self.bank.share_memory_()
        if self.masks is not None:
            self.masks.share_memory_()
        super().share_memory()
        return self

    def cache_masks(self, images: Tensor, *, batch_size: int = 64, progress: bool = True) -> Tensor:
        """Segment a fixed dataset once and keep the alphas as the mask cache (uint8 ``(N, 1, H, W)``).

        ``images``: ``(N, C, H, W)`` uint8/float. Samples then need an ``"index"`` key (dict samples) or
        ``swap_batch(indices=...)``. Returns the cache.
        """
        from tqdm.auto import tqdm

        from .bank import to_uint8_rgb

        out = []
        for i in tqdm(range(0, images.shape[0], batch_size), desc="caching masks", disable=not progress):
            x = to_uint8_rgb(images[i : i + batch_size])
            alpha = self._segment(x.to(self._compute_device()), self._active_segmenter())
            out.append((alpha * 255.0).add_(0.5).to(torch.uint8).cpu())
        self.masks = torch.cat(out)
        return self.masks

    @property
    def collate_fn(self) -> "BackgroundSwapCollate":
        """A ``collate_fn``: ``default_collate`` then one batched swap on the bank's device."""
        return BackgroundSwapCollate(self)

    # ------------------------------------------------------------------------------------------------
    # processes, devices, randomness
    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _worker():
        return torch.utils.data.get_worker_info()

    def _active_bank(self) -> BackgroundBank:
        return self.bank.cpu() if self._worker() is not None else self.bank

    def _compute_device(self) -> torch.device:
        return self._active_bank().device

    def _active_segmenter(self):
        if self._worker() is None:
            return self.segmenter
        seg = self._cpu_segmenter[0] if self._cpu_segmenter else None
        dev = _module_device(seg)
        if dev is not None and dev.type != "cpu":
            info = self._worker()
            raise RuntimeError(
                f"BackgroundSwap runs in DataLoader worker {info.id}, but its segmenter is on {dev} and no CPU copy "
                "exists; worker processes must not use CUDA. Either create the swap with a CPU segmenter and move it "
                "with swap.to(device) (which keeps a CPU copy for workers), or apply the swap to batches in the main "
                "process after .to(device): `images, labels = swap(images.to(device), labels)` or "
                "DataLoader(..., collate_fn=swap.collate_fn, num_workers=0)."
            )
        return seg

    def _generator_for_call(self) -> torch.Generator | None:
        info = self._worker()
        if info is None:
            if self.generator is not None:
                return self.generator
            if self.seed is None:
                return None
            rank = 0
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank = torch.distributed.get_rank()
            key = ("main", os.getpid(), rank)
            seed = (int(self.seed) + 1_000_003 * rank) % (2**63)
        else:
            if self.seed is None and self.generator is None:
                return None  # DataLoader seeds each worker's global RNG differently
            base = int(self.seed) if self.seed is not None else int(self.generator.initial_seed())
            key = ("worker", os.getpid(), info.id, info.seed)
            seed = (base * 6364136223846793005 + int(info.seed)) % (2**63)
        if self._gen_key != key:
            self._gen = torch.Generator().manual_seed(seed)
            self._gen_key = key
        return self._gen

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_gen"] = None
        state["_gen_key"] = None
        modules = dict(state.get("_modules", {}))
        if modules.get("segmenter") is not None:
            modules["segmenter"] = self._cpu_segmenter[0]  # a pickled swap is a CPU swap
            state["_modules"] = modules
        return state

    # ------------------------------------------------------------------------------------------------
    # the batched core
    # ------------------------------------------------------------------------------------------------

    def _segment(self, x: Tensor, segmenter) -> Tensor:
        """Tight, feathered alpha ``(B, 1, H, W)`` float from the segmenter's logits."""
        from .segmenter import logits_to_probability, probability_to_mask

        if segmenter is None:
            raise ValueError(
                "BackgroundSwap has no segmenter and no mask for this sample: pass segmenter=..., a tv_tensors.Mask "
                "in the sample, or a masks= cache with an 'index' key"
            )
        seg_dev = _module_device(segmenter)
        # shrink uint8 CPU batches to the segmenter's input size first (it never sees the full frame)
        xin = segmenter_input(x, segmenter)
        xin = xin if seg_dev is None or seg_dev == xin.device else xin.to(seg_dev)
        was_training = getattr(segmenter, "training", False)
        if was_training:
            segmenter.eval()
        try:
            with torch.no_grad():
                logits = segmenter(xin)
        finally:
            if was_training:
                segmenter.train()
        if not isinstance(logits, Tensor) or logits.ndim not in (3, 4):
            raise ValueError(f"the segmenter must return (B, S, S) logits, got {getattr(logits, 'shape', type(logits))}")
        prob = logits_to_probability(logits.to(x.device), tuple(x.shape[-2:]))
        return probability_to_mask(prob, self.tight_threshold, self.feather)

    def swap_batch(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int] | None = None,
        *,
        masks: Tensor | None = None,
        indices: Tensor | Sequence[int] | None = None,
        return_masks: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Swap backgrounds of an RGB batch (the functional core of the transform).

        Args:
            images: ``(B, 3, H, W)`` uint8 or float in [0, 1] (any device; computed on the bank's device
                in the main process, on CPU in workers; returned on the images' device).
            labels: ``(B,)`` or ``(B, K)`` foreground labels (needed by ``strategy="other_class"``).
            masks: given foreground masks ``(B, 1, H, W)`` / ``(B, H, W)`` (skips the segmenter).
            indices: ``(B,)`` dataset indices into the ``masks=`` cache.
            return_masks: also return the warped foreground alpha ``(B, 1, H, W)`` float (where the object
                now is; the input alpha for samples left unchanged).

        Returns:
            Images of the input's dtype, shape and device (and the alphas with ``return_masks``).
        """
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        x_in = images.as_subclass(Tensor)
        if x_in.dtype.is_floating_point and bool(torch.isnan(x_in).any()):
            raise ValueError("BackgroundSwap got an image with NaN values; fix the input pipeline (NaN cannot be composited)")
        b, _, h, w = x_in.shape
        in_device = x_in.device
        bank = self._active_bank()
        device = bank.device
        gen = self._generator_for_call()
        x = x_in.to(device)

        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape[0] != b:
                raise ValueError(f"labels must have {b} entries (one per image), got shape {tuple(labels.shape)}")
        elif self.strategy == "other_class":
            raise ValueError("strategy='other_class' needs labels: pass them with the images (e.g. swap(images, labels))")

        # which samples to swap
        if self.p >= 1.0:
            chosen = None
        else:
            apply = torch.rand(b, generator=gen) < self.p
            chosen = apply.nonzero().flatten()
        if masks is None and indices is not None:
            if self.masks is None:
                raise ValueError("indices were given but the swap has no masks= cache")
            idx = torch.as_tensor(indices).long().cpu()
            masks = self.masks.index_select(0, idx)
        sub = x if chosen is None else x.index_select(0, chosen.to(device))
        n = sub.shape[0]
        if masks is not None:
            alpha_all = _as_batch_masks(masks, b, (h, w), compact=True).to(device)
            alpha = alpha_all if chosen is None else alpha_all.index_select(0, chosen.to(device))
        else:
            alpha_all = None
            alpha = self._segment(sub, self._active_segmenter()) if n else sub.new_zeros(0, 1, h, w, dtype=torch.float32)
        if self.feather_px > 0 and n:
            alpha = soft_alpha(alpha, self.feather_px)
        if self.min_foreground > 0 and n:
            alpha = _drop_specks(alpha, self.min_foreground)
        sub_labels = None if labels is None else (labels if chosen is None else labels[chosen])
        backgrounds = bank.sample(n, sub_labels, self.strategy, gen, size=(h, w))
        params = sample_jitter(
            n,
            scale=self.scale,
            degrees=self.degrees,
            translate_px=self.translate_px,
            reference_size=self.reference_size,
            generator=gen,
        )
        out_sub = sub
        matrices = None
        if n:
            matrices = jitter_affine(params, (h, w), alpha)
            out_sub = composite(
                sub, alpha, backgrounds, matrices, harmonize=self.harmonize, mode=self.interpolation, inplace=True
            )
        if chosen is None:
            out = out_sub
        else:
            out = x.clone()
            if n:
                out.index_copy_(0, chosen.to(device), out_sub)
        out = out.to(in_device)
        if not return_masks:
            return out
        # where the object is now: warp the alpha with the same matrices
        if alpha_all is None:
            alpha_all = torch.zeros(b, 1, h, w, device=device)
            if n:
                alpha_all = alpha_all.index_copy(0, chosen.to(device), alpha) if chosen is not None else alpha
        moved = _float_alpha(alpha_all).clone()
        if n:
            from kornia.geometry.transform import warp_affine

            warped = warp_affine(_float_alpha(alpha), matrices, (h, w), mode=self.interpolation, align_corners=True)
            if chosen is None:
                moved = warped
            else:
                moved.index_copy_(0, chosen.to(device), warped)
        return out, moved.to(in_device)

    # ------------------------------------------------------------------------------------------------
    # torchvision plumbing
    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _find_labels(sample: Any) -> Any:
        if isinstance(sample, dict):
            for key in _LABEL_KEYS:
                if key in sample:
                    return sample[key]
            return None
        if isinstance(sample, (tuple, list)) and len(sample) >= 2:
            lab = sample[1]
            if isinstance(lab, (int, bool)) or (isinstance(lab, Tensor) and not isinstance(lab, tv_tensors.TVTensor) and lab.ndim <= 2):
                return lab
        return None

    @staticmethod
    def _find_index(sample: Any) -> Any:
        if isinstance(sample, dict):
            for key in _INDEX_KEYS:
                if key in sample:
                    return sample[key]
        return None

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat, spec = tree_flatten(sample)
        needs = self._needs_transform_list(flat)
        image_pos = None
        mask_pos = None
        for i, (item, need) in enumerate(zip(flat, needs)):
            if isinstance(item, tv_tensors.Mask):
                if mask_pos is None:
                    mask_pos = i
                continue
            if not need or image_pos is not None:
                continue
            if isinstance(item, (PIL.Image.Image, tv_tensors.Image)) or (
                isinstance(item, Tensor) and not isinstance(item, tv_tensors.TVTensor)
            ):
                image_pos = i
        if image_pos is None:
            raise TypeError(
                "BackgroundSwap found no image in its input; pass a PIL image, a (C, H, W) / (B, C, H, W) tensor or a "
                f"tv_tensors.Image (got {[type(x).__name__ for x in flat]})"
            )
        image = flat[image_pos]
        labels = self._find_labels(sample)
        index = self._find_index(sample)
        mask = flat[mask_pos] if mask_pos is not None else None
        new_image, new_mask = self._transform_image(image, labels, mask, index)
        flat = list(flat)
        flat[image_pos] = new_image
        if mask_pos is not None:
            flat[mask_pos] = new_mask
        return tree_unflatten(flat, spec)

    def _transform_image(self, image: Any, labels: Any, mask: Any, index: Any) -> tuple[Any, Any]:
        pil_mode = None
        if isinstance(image, PIL.Image.Image):
            pil_mode = image.mode
            if pil_mode in ("RGB", "L", "RGBA"):
                t = TF.pil_to_tensor(image)
            else:
                t = TF.pil_to_tensor(image.convert("RGBA" if "A" in pil_mode else "RGB"))
            single = True
        elif isinstance(image, Tensor):
            t = image.as_subclass(Tensor)
            if t.ndim == 2:
                t = t[None]
            if t.ndim not in (3, 4):
                raise ValueError(f"image tensors must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
            single = t.ndim == 3
        else:  # pragma: no cover - guarded by forward
            raise TypeError(f"unsupported image type {type(image).__name__}")
        x = t[None] if single else t
        c = x.shape[1]
        if c not in (1, 3, 4):
            raise ValueError(f"images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c} (shape {tuple(image.shape)})")
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
        if x.dtype.is_floating_point and bool(torch.isnan(x).any()):
            raise ValueError("BackgroundSwap got an image with NaN values; fix the input pipeline (NaN cannot be composited)")
        b = x.shape[0]
        rgb = x.expand(-1, 3, -1, -1) if c == 1 else (x[:, :3] if c == 4 else x)
        rgb = rgb.contiguous()

        lab = None
        if labels is not None:
            lab = torch.as_tensor(labels)
            if single:
                lab = lab.reshape(1, *lab.shape[-1:]) if lab.ndim == 1 and lab.numel() > 1 else lab.reshape(1)
        elif self.strategy == "other_class":
            raise ValueError(
                "strategy='other_class' needs the sample's label: pass (image, label) samples, a dict with a 'label' "
                "key, or swap(images, labels) for batches"
            )
        idx = None
        if index is not None and mask is None and self.masks is not None:
            idx = torch.as_tensor(index).reshape(-1)
        m = None
        if mask is not None:
            m = mask.as_subclass(Tensor)
            if single:
                m = m[None]
        if mask is not None:
            out, moved = self.swap_batch(rgb, lab, masks=m, indices=idx, return_masks=True)
        else:
            out, moved = self.swap_batch(rgb, lab, indices=idx), None

        # back to the input's channels, type and mode
        if c == 1:
            out = TF.rgb_to_grayscale(out, num_output_channels=1)
        elif c == 4:
            opaque = torch.full_like(x[:, 3:], 255 if x.dtype == torch.uint8 else 1.0)
            out = torch.cat([out, opaque], dim=1)
        if single:
            out = out[0]
            if isinstance(image, Tensor) and image.ndim == 2:
                out = out[0]
        new_mask = None
        if mask is not None:
            mm = moved if not single else moved[0]
            mm = mm.reshape(mask.shape)
            if mask.dtype == torch.bool:
                mm = mm > 0.5
            elif mask.dtype == torch.uint8:
                scale = 255.0 if bool((mask.as_subclass(Tensor) > 1).any()) else 1.0
                mm = (mm * scale).add_(0.5).to(torch.uint8) if scale > 1 else (mm > 0.5).to(torch.uint8)
            elif not mask.dtype.is_floating_point:
                mm = (mm > 0.5).to(mask.dtype)
            else:
                mm = mm.to(mask.dtype)
            new_mask = tv_tensors.wrap(mm, like=mask)
        if pil_mode is not None:
            pil = TF.to_pil_image(out)
            return (pil if pil.mode == pil_mode else pil.convert(pil_mode)), new_mask
        if isinstance(image, tv_tensors.TVTensor):
            return tv_tensors.wrap(out, like=image), new_mask
        return out, new_mask

    def extra_repr(self) -> str:
        seg = type(self.segmenter).__name__ if self.segmenter is not None else None
        return (
            f"bank={self.bank!r}, segmenter={seg}, p={self.p}, strategy={self.strategy!r}, "
            f"tight_threshold={self.tight_threshold}, feather={self.feather}, scale={self.scale}, "
            f"degrees={self.degrees}, translate_px={self.translate_px}, harmonize={self.harmonize}, seed={self.seed}"
        )


class BackgroundSwapCollate:
    """``collate_fn`` that collates a list of samples, then swaps the whole batch at once.

    Args:
        swap: the :class:`BackgroundSwap` to apply.
        collate_fn: the base collation (default ``torch.utils.data.default_collate``).
        device: ``"bank"`` (default): move the batch's tensors to the bank's device first, so the swap and
            the result live there (GPU with ``num_workers=0``; always CPU in workers); ``None``: leave
            tensors where they are. Note ``pin_memory=True`` cannot pin tensors that are already on a GPU.

    Picklable, so it works with worker processes started by fork, spawn or forkserver.
    """

    def __init__(self, swap: BackgroundSwap, collate_fn: Callable | None = None, device: str | None = "bank") -> None:
        if not isinstance(swap, BackgroundSwap):
            raise TypeError(f"swap must be a BackgroundSwap, got {type(swap).__name__}")
        if device not in ("bank", None):
            raise ValueError(f"device must be 'bank' or None, got {device!r}")
        self.swap = swap
        self.collate_fn = collate_fn if collate_fn is not None else torch.utils.data.default_collate
        self.device = device

    def __call__(self, samples: list) -> Any:
        batch = self.collate_fn(samples)
        if samples:
            # default_collate stacks tv_tensors into plain tensors: re-wrap images and masks so the swap
            # sees them (a collated tv_tensors.Mask is used as the alpha, like in the per-sample path)
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
            dev = self.swap._compute_device()
            if dev.type != "cpu":
                batch = tree_map(lambda t: t.to(dev) if isinstance(t, Tensor) else t, batch)
        return self.swap(batch)

    def __repr__(self) -> str:
        return f"BackgroundSwapCollate({self.swap!r})"
