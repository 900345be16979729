"""Background reliance without group labels: the BG-gap of a classifier, measured by re-compositing.

:func:`background_gap` cuts each test image's object out (its alpha: given, carried by the dataset as an
:class:`~torch_backswap.alpha.ObjectAlpha`, or predicted by a segmenter), pastes it **without jitter** onto
backgrounds from a :class:`~torch_backswap.bank.BackgroundBank` of its *own* class and of *other* classes,
and compares the classifier's accuracy on the two. A model that recognises the object scores the same on
both; a model that reads the background loses accuracy on other-class backgrounds. This is the
Mixed-Same vs Mixed-Rand "BG-gap" of the ImageNet-9 Backgrounds Challenge (Xiao et al., 2020), for any
dataset a user has a bank for; :func:`imagenet9_bg_gap` runs the official protocol on the released folders.

The confidence interval is over test samples: each sample contributes the difference of its own-class and
other-class accuracy (averaged over ``draws`` backgrounds of each kind); ``ci="t"`` gives the paired
Student-t interval of the mean difference, ``ci="bootstrap"`` the percentile interval of a paired bootstrap
over samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors

from torch_backswap._image import float_alpha, mask_to_alpha
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.bank import BackgroundBank
from torch_backswap.composite import composite
from torch_backswap.cutout import CutOut
from torch_backswap.segmenter import eval_mode

__all__ = ["BackgroundGap", "background_gap", "diagnose_folder", "imagenet9_bg_gap", "mean_interval", "t_quantile"]

CI_METHODS = ("t", "bootstrap")


# ----------------------------------------------------------------------------------------------------------
# statistics


def _t_cdf(x: float, df: int) -> float:
    """Student-t CDF for ``x >= 0`` by Simpson integration of the density (no SciPy needed)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    steps = 4000
    t = torch.linspace(0.0, x, steps + 1, dtype=torch.float64)
    weights = torch.ones(steps + 1, dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    density = torch.exp(log_c - (df + 1) / 2 * torch.log1p(t * t / df))
    return 0.5 + float((weights * density).sum()) * (x / steps) / 3


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``df >= 1`` degrees of freedom (to ~1e-6)."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p!r}")
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a positive int, got {df!r}")
    if df > 1000:  # Cornish-Fisher expansion around the normal quantile: error < 1e-7 here (the plain normal
        # quantile was 0.002 low at df 1000, so the quantile jumped down there)
        z = float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_interval(values: Tensor, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``(mean, low, high)`` of a 1-D sample (NaN bounds for n < 2)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("values must not be empty")
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(values.std(unbiased=True)) / math.sqrt(n)
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------------------------------------
# result


@dataclass
class BackgroundGap:
    """Accuracy on own-class vs other-class backgrounds and their gap with a confidence interval.

    Attributes:
        own_accuracy: accuracy with the object on backgrounds of its own class (Mixed-Same).
        other_accuracy: accuracy on backgrounds of other classes (Mixed-Rand / Mixed-Next).
        gap: ``own_accuracy - other_accuracy`` (the BG-gap; > 0 means the model uses the background).
        ci_low, ci_high: the interval of ``gap`` at ``confidence``.
        method: how the interval was formed (a sentence).
        n: samples scored; skipped: samples left out (empty object alpha).
        original_accuracy: accuracy on the unmodified images (``None`` when not measured).
        own_correct, other_correct: float ``(n,)`` per-sample accuracy over the draws.
    """

    own_accuracy: float
    other_accuracy: float
    gap: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str
    n: int
    skipped: int = 0
    original_accuracy: float | None = None
    own_correct: Tensor | None = field(default=None, repr=False)
    other_correct: Tensor | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-sample tensors)."""
        keys = ("own_accuracy", "other_accuracy", "gap", "ci_low", "ci_high", "confidence", "method", "n",
                "skipped", "original_accuracy")
        return {k: getattr(self, k) for k in keys}

    def __str__(self) -> str:
        orig = "" if self.original_accuracy is None else f"original {self.original_accuracy:.3f}, "
        return (f"{orig}own-class backgrounds {self.own_accuracy:.3f}, other-class {self.other_accuracy:.3f}; "
                f"BG-gap {self.gap:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] "
                f"({self.confidence:.0%} {self.method}, n={self.n})")


def _interval(own: Tensor, other: Tensor, ci: str, confidence: float, n_bootstrap: int, seed: int,
              paired: bool = True) -> tuple[float, float, str]:
    if paired:
        diff = own.double() - other.double()
        if ci == "t":
            _, low, high = mean_interval(diff, confidence)
            return low, high, "paired t-interval over samples"
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(len(diff), (n_bootstrap, len(diff)), generator=g)
        boots = diff[idx].mean(1)
    else:
        a, b = own.double(), other.double()
        if ci == "t":  # Welch interval of a difference of means
            va, vb = a.var(unbiased=True) / len(a), b.var(unbiased=True) / len(b)
            se = float((va + vb).sqrt())
            dof = float((va + vb) ** 2 / (va**2 / max(len(a) - 1, 1) + vb**2 / max(len(b) - 1, 1))) if se > 0 else 1e9
            half = t_quantile(0.5 + confidence / 2, max(1, min(int(dof), 10**6))) * se
            gap = float(a.mean() - b.mean())
            return gap - half, gap + half, "Welch t-interval (unpaired: the two folders hold different files)"
        g = torch.Generator().manual_seed(seed)
        ia = torch.randint(len(a), (n_bootstrap, len(a)), generator=g)
        ib = torch.randint(len(b), (n_bootstrap, len(b)), generator=g)
        boots = a[ia].mean(1) - b[ib].mean(1)
    q = torch.tensor([(1 - confidence) / 2, 0.5 + confidence / 2], dtype=torch.float64)
    low, high = torch.quantile(boots, q).tolist()
    kind = "paired" if paired else "unpaired"
    return low, high, f"{kind} percentile bootstrap over samples ({n_bootstrap} resamples)"


# ----------------------------------------------------------------------------------------------------------
# inputs


def _pil_or_tensor_to_uint8(image: Any) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    if isinstance(image, Tensor):
        x = image.as_subclass(Tensor)
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        x = TF.pil_to_tensor(image.convert("RGB"))
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"each image must be (3,H,W) or (1,H,W), got shape {tuple(x.shape)}")
    return x.expand(3, -1, -1).contiguous()


def _alpha_float(alpha: Tensor) -> Tensor:
    """Any object mask (bool, uint8 0/1 or 0..255, float) → float32 alpha in ``[0, 1]`` (one converter: ``_image``)."""
    return float_alpha(mask_to_alpha(alpha))


def _collect(data: Any, alphas: Tensor | None, labels: Tensor | Sequence[int] | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    """(images uint8 (N,3,H,W), labels int64 (N,), alphas float (N,1,H,W) or None) from any input form."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        images, labels = data
    elif isinstance(data, Tensor):
        images = data
    elif isinstance(getattr(data, "images", None), Tensor) and getattr(data, "labels", None) is not None:
        images = data.images  # in-memory datasets such as StampBirds
        labels = data.labels if labels is None else labels
        if alphas is None and isinstance(getattr(data, "alpha", None), Tensor):
            alphas = data.alpha
    else:
        imgs, labs, alps = [], [], []
        for i in range(len(data)):
            item = data[i]
            image = label = alpha = None
            if isinstance(item, dict):
                for key, value in item.items():
                    if isinstance(value, ObjectAlpha):
                        alpha = value
                    elif isinstance(value, tv_tensors.Image) or key == "image":
                        image = value
                label = item.get("label", item.get("target"))
            elif isinstance(item, (tuple, list)):
                image, label = item[0], item[1]
                alpha = next((v for v in item[2:] if isinstance(v, ObjectAlpha)), None)
            else:
                raise TypeError(f"data[{i}] must be (image, label, ...) or a dict, got {type(item).__name__}")
            if image is None:
                raise ValueError(f"data[{i}] has no image (a tv_tensors.Image or the key 'image')")
            x = _pil_or_tensor_to_uint8(image)
            if imgs and x.shape != imgs[0].shape:
                raise ValueError(f"data[{i}] has shape {tuple(x.shape)} but data[0] has {tuple(imgs[0].shape)}; "
                                 "give the dataset a transform that resizes every image to one size")
            imgs.append(x)
            labs.append(int(label) if label is not None else -1)
            if alpha is not None:
                alps.append(_alpha_float(alpha).reshape(1, *x.shape[-2:]))
        if not imgs:
            raise ValueError("data is empty")
        images = torch.stack(imgs)
        if labels is None:
            if min(labs) < 0:
                raise ValueError("data items carry no label; pass labels=")
            labels = torch.tensor(labs)
        if alphas is None and alps:
            if len(alps) != len(imgs):
                raise ValueError(f"only {len(alps)} of {len(imgs)} items carry an ObjectAlpha")
            alphas = torch.stack(alps)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N,3,H,W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
    images = images.as_subclass(Tensor)
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if labels is None:
        raise ValueError("labels are needed: pass (images, labels), a dataset yielding labels, or labels=")
    labels = torch.as_tensor(labels).long().flatten()
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if alphas is not None:
        alphas = _alpha_float(alphas)
        if alphas.ndim == 3:
            alphas = alphas[:, None]
        if alphas.shape != (images.shape[0], 1, *images.shape[-2:]):
            raise ValueError(f"alphas must be (N,1,H,W) = {(images.shape[0], 1, *images.shape[-2:])}, "
                             f"got {tuple(alphas.shape)}")
    return images, labels, alphas


def _predict(model: Callable, images: Tensor, preprocess: Callable | None, predict_map: Callable | None,
             batch_size: int, device: torch.device) -> Tensor:
    out = []
    with eval_mode(model):  # eval mode, no gradients, the caller's mode restored
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            x = preprocess(x) if preprocess is not None else x.float().div_(255.0)
            logits = model(x)
            pred = predict_map(logits) if predict_map is not None else logits.argmax(1)
            out.append(pred.cpu().long())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _own_class_indices(bank_labels: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """One bank index per sample, uniformly among the bank's backgrounds of the sample's own class."""
    idx = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique().tolist():
        pool = torch.nonzero(bank_labels == c).flatten()
        sel = torch.nonzero(labels == c).flatten()
        if len(pool) == 0:
            raise ValueError(f"the bank has no background of class {c} (bank classes "
                             f"{bank_labels.unique().tolist()}); build it from images of every test class")
        idx[sel] = pool[torch.randint(len(pool), (len(sel),), generator=generator)]
    return idx


# ----------------------------------------------------------------------------------------------------------
# the diagnostic


def background_gap(
    model: Callable[[Tensor], Tensor],
    data: Any,
    bank: BackgroundBank,
    *,
    alphas: Tensor | None = None,
    segmenter: Any = None,
    labels: Tensor | Sequence[int] | None = None,
    draws: int = 1,
    other: str = "other_class",
    ci: str = "t",
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    min_foreground: float = 0.002,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    predict_map: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> BackgroundGap:
    """The BG-gap of ``model``: accuracy with each object on own-class minus other-class bank backgrounds.

    Args:
        model: callable ``(B,3,H,W) float in [0,1] -> (B,K) logits`` (after ``preprocess`` if given).
        data: the test images: ``(images, labels)`` tensors (uint8 ``(N,3,H,W)`` or float in [0,1]), an
            in-memory dataset with ``images``/``labels`` (and ``alpha``) attributes such as StampBirds, or
            any map-style dataset yielding ``(image, label)`` or dicts whose object alpha is an
            :class:`~torch_backswap.alpha.ObjectAlpha` (PIL or tensor images, all of one size).
        bank: backgrounds with their source-class labels (``bank.labels``), e.g. built from training images.
            Resized to the images' size when it differs.
        alphas: ``(N,1,H,W)`` object alpha (float in [0,1], bool or uint8). Default: the dataset's
            ObjectAlpha, else the cut-out of ``segmenter``.
        segmenter: used when no alpha is available: a :class:`~torch_backswap.cutout.CutOut` (the swap's one
            route: e.g. ``CutOut.from_pretrained()`` for the edge-refined cut-out), or a bare segmenter, taken as
            ``CutOut(segmenter, feather=0.0)`` (the paper's bilinear tight mask at p > 0.67, hard edges).
        labels: ``(N,)`` class labels when ``data`` does not carry them.
        draws: backgrounds of each kind per sample (more draws: tighter interval).
        other: ``"other_class"`` (a class uniformly among the others, then a background of it).
        ci: ``"t"`` (paired Student-t over samples) or ``"bootstrap"`` (paired percentile bootstrap).
        confidence: interval level in (0, 1).
        min_foreground: samples whose alpha covers less than this fraction of the image are skipped
            (there is no object to move); their count is reported as ``skipped``.
        preprocess: maps the uint8 batch (on ``device``) to the model's input; default: float in [0, 1].
        predict_map: maps logits to class indices (default ``argmax``), e.g. ImageNet-1k → 9 classes.
        seed: seeds the background draws (and the bootstrap).

    Returns:
        A :class:`BackgroundGap`. The objects are pasted at their own position with identity matrices
        (no jitter), so only the background changes.
    """
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    if other != "other_class":
        raise ValueError(f"other must be 'other_class', got {other!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    if not isinstance(bank, BackgroundBank):
        raise TypeError(f"bank must be a BackgroundBank, got {type(bank).__name__}")
    device = torch.device(device)
    images, labels, alphas = _collect(data, alphas, labels)
    if alphas is None:
        if segmenter is None:
            raise ValueError("no object alpha: the data carries no ObjectAlpha, so pass alphas= or segmenter=")
        cut_out = segmenter if isinstance(segmenter, CutOut) else CutOut(segmenter, feather=0.0)
        chunks = []
        for start in range(0, len(images), batch_size):
            chunks.append(cut_out(images[start : start + batch_size].to(device)).cpu().float())
        alphas = torch.cat(chunks)
    keep = alphas.flatten(1).mean(1) >= min_foreground
    skipped = int((~keep).sum())
    images, labels, alphas = images[keep], labels[keep], alphas[keep]
    n = len(images)
    if n == 0:
        raise ValueError(f"every sample's alpha covers < {min_foreground} of the image; nothing to diagnose")

    backgrounds = bank.backgrounds.cpu() if bank.backgrounds.device.type != "cpu" else bank.backgrounds
    bank_labels = bank.labels.cpu()
    if tuple(backgrounds.shape[-2:]) != tuple(images.shape[-2:]):
        from torchvision.transforms.v2 import functional as TF

        backgrounds = TF.resize(backgrounds, list(images.shape[-2:]), antialias=True)
    generator = torch.Generator().manual_seed(seed)
    eye = torch.eye(2, 3)
    own_hits = torch.zeros(n)
    other_hits = torch.zeros(n)
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * draws * n, desc="background gap", unit="img", disable=not progress, leave=False)
    for _ in range(draws):
        own_idx = _own_class_indices(bank_labels, labels, generator)
        other_idx = bank.sample_indices(n, labels, strategy="other_class", generator=generator).cpu()
        for idx, hits in ((own_idx, own_hits), (other_idx, other_hits)):
            for start in range(0, n, batch_size):
                sl = slice(start, start + batch_size)
                b = len(images[sl])
                mixed = composite(images[sl], alphas[sl], backgrounds[idx[sl]], eye.expand(b, 2, 3))
                pred = _predict(model, mixed, preprocess, predict_map, batch_size, device)
                hits[sl] += (pred == labels[sl]).float()
                bar.update(b)
    bar.close()
    own, oth = own_hits / draws, other_hits / draws
    original = _predict(model, images, preprocess, predict_map, batch_size, device)
    low, high, method = _interval(own, oth, ci, float(confidence), n_bootstrap, seed)
    return BackgroundGap(
        own_accuracy=float(own.mean()), other_accuracy=float(oth.mean()), gap=float((own - oth).mean()),
        ci_low=low, ci_high=high, confidence=float(confidence), method=method, n=n, skipped=skipped,
        original_accuracy=float((original == labels).float().mean()), own_correct=own, other_correct=oth,
    )


def imagenet9_bg_gap(
    model: Callable[[Tensor], Tensor],
    root: str,
    *,
    same: str = "mixed_same",
    other: str = "mixed_rand",
    size: int = 224,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    predict_map: Callable[[Tensor], Tensor] | None = None,
    ci: str = "t",
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> BackgroundGap:
    """The official ImageNet-9 BG-gap: accuracy on ``mixed_same`` minus ``mixed_rand`` (Xiao et al., 2020).

    Reads ``<root>/bg_challenge/<variant>/val/<class>/*`` (or ``<root>/<variant>/val/...``) with
    :class:`~torch_backswap.datasets.ImageNet9`, resizing to ``size``. When both folders hold the same
    relative file names the interval is paired (per image); otherwise it is the unpaired Welch interval.
    ``predict_map`` maps logits to the 9 classes (needed for 1000-class ImageNet models).
    """
    from torchvision.transforms import v2

    from torch_backswap.datasets.imagenet9 import ImageNet9

    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    to_tensor = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])
    results = []
    for variant in (same, other):
        ds = ImageNet9(root, variant=variant, transform=to_tensor)
        correct = torch.zeros(len(ds))
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(ds), batch_size), desc=variant, disable=not progress, leave=False):
            stop = min(start + batch_size, len(ds))
            batch = [ds[i] for i in range(start, stop)]
            x = torch.stack([b[0] for b in batch])
            y = torch.tensor([b[1] for b in batch])
            pred = _predict(model, x, preprocess, predict_map, batch_size, torch.device(device))
            correct[start:stop] = (pred == y).float()
        results.append((ds, correct))
    (ds_same, c_same), (ds_other, c_other) = results
    paired = ds_same.relative_paths == ds_other.relative_paths
    low, high, method = _interval(c_same, c_other, ci, float(confidence), n_bootstrap, seed, paired=paired)
    return BackgroundGap(
        own_accuracy=float(c_same.mean()), other_accuracy=float(c_other.mean()),
        gap=float(c_same.mean() - c_other.mean()), ci_low=low, ci_high=high, confidence=float(confidence),
        method=method + f"; official {same} vs {other}", n=len(c_same),
        own_correct=c_same, other_correct=c_other,
    )


def diagnose_folder(
    model: Callable[[Tensor], Tensor],
    image_dir: str,
    bank: BackgroundBank,
    *,
    segmenter: Any,
    size: int = 224,
    **kwargs: Any,
) -> BackgroundGap:
    """:func:`background_gap` on an ``ImageFolder`` (one sub-folder per class), alphas from ``segmenter``.

    The folder's class order (sorted names) must be the bank's: when the bank stores class names they are
    checked against the folder's. ``kwargs`` go to :func:`background_gap`.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    dataset = ImageFolder(image_dir, transform=v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)]))
    if bank.classes is not None and list(bank.classes) != list(dataset.classes):
        raise ValueError(f"the bank's classes {bank.classes} are not the folder's {dataset.classes} (sorted sub-folders "
                         f"of {image_dir!r}); build the bank from the same class folders")
    return background_gap(model, dataset, bank, segmenter=segmenter, **kwargs)
