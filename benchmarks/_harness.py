"""Research-only steps the benchmarks share, kept out of the installed package.

* :func:`fit_last_layer_dfr` — Deep Feature Reweighting (the ``dfr`` baseline of ``benchmarks.robustness``);
* :func:`fit_class_bias` — the post-hoc decision-threshold recalibration on val (the "calibrated" tables);
* :func:`segment_images` — the paper's cut-out and loose hole of a whole split, for a bank built from given holes;
* :func:`cut_out_batches` — a :class:`~torch_backswap.cutout.CutOut` over a whole split, in batches.

The classifiers, their training loop and the StampBirds steps of the demo are product code:
:mod:`torch_backswap.classifiers` and :mod:`torch_backswap.demo`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_backswap.classifiers import predict_logits
from torch_backswap.cutout import CutOut
from torch_backswap.metrics import group_accuracies
from torch_backswap.segmenter import LOOSE_THRESHOLD, TIGHT_THRESHOLD, PatchSegmenter, probability_to_mask

__all__ = ["cut_out_batches", "fit_class_bias", "fit_last_layer_dfr", "segment_images"]


def _balanced_accuracy(preds: Tensor, labels: Tensor) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    recalls = group_accuracies(preds, labels, labels)
    return sum(recalls.values()) / len(recalls)


def fit_class_bias(
    model: nn.Module, images: Tensor, labels: Tensor, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> Tensor:
    """Shift ``model.fc.bias`` so that predictions on a labelled split have the best class-balanced accuracy.

    A post-hoc recalibration of the decision threshold on held-out data (class labels only, no group labels):
    a model trained on few background photos often leans towards one class on photos it has never seen, and
    the validation split — held-out photos like the test split's — tells by how much. Two classes: the
    offset of the logit margin is the midpoint of the best interval between sorted validation margins
    (among equally good intervals, the one nearest zero, i.e. the smallest change). More classes: coordinate
    ascent over per-class offsets from the same candidates.

    Args:
        model: a classifier with a linear ``fc`` head (:class:`~torch_backswap.classifiers.SmallCNN`, the
            torchvision wrappers).
        images: uint8 ``(N, 3, H, W)``; labels: long ``(N,)``.

    Returns:
        the float32 ``(K,)`` offsets added to ``model.fc.bias`` (the model is changed in place).
    """
    logits = predict_logits(model, images, batch_size, device)
    k = logits.shape[1]
    labels = labels.cpu()
    offsets = torch.zeros(k)
    if k == 2:
        m = logits[:, 1] - logits[:, 0]
        margin = m.sort().values
        cands = torch.cat([margin[:1] - 1.0, (margin[1:] + margin[:-1]) / 2, margin[-1:] + 1.0])
        cands = torch.cat([torch.zeros(1), cands])  # threshold 0 first: no change wins ties against equals
        scores = torch.tensor([_balanced_accuracy((m > t).long(), labels) for t in cands.tolist()])
        best = scores.max()
        ties = cands[scores >= best - 1e-12]
        threshold = float(ties[ties.abs().argmin()])
        offsets[1] = -threshold
    else:
        for _ in range(3):
            for c in range(k):
                others = logits + offsets
                rest = torch.cat([others[:, :c], others[:, c + 1 :]], 1).max(1).values
                gap = (rest - logits[:, c]).sort().values
                cands = torch.cat([offsets[c : c + 1], (gap[1:] + gap[:-1]) / 2])
                scores = []
                for t in cands.tolist():
                    trial = offsets.clone()
                    trial[c] = t
                    scores.append(_balanced_accuracy((logits + trial).argmax(1), labels))
                offsets[c] = cands[int(torch.tensor(scores).argmax())]
    with torch.no_grad():
        model.fc.bias.add_(offsets.to(model.fc.bias.device, model.fc.bias.dtype))
    return offsets


def fit_last_layer_dfr(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    groups: Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Deep Feature Reweighting: refit ``model.fc`` on a group-balanced subset of ``(images, labels)``.

    The features stay frozen; the subset takes the same number of samples from every group present
    (the size of the smallest group). Returns ``model`` with its ``fc`` replaced.
    """
    generator = torch.Generator().manual_seed(seed)
    present = torch.unique(groups)
    per_group = min(int((groups == g).sum()) for g in present)
    chosen = torch.cat(
        [torch.nonzero(groups == g).flatten()[torch.randperm(int((groups == g).sum()), generator=generator)[:per_group]]
         for g in present]
    )
    model.eval().to(device)
    with torch.no_grad():
        feats = torch.cat([model.features(images[chosen[i : i + 256]].to(device)) for i in range(0, len(chosen), 256)])
    feats_mean, feats_std = feats.mean(0, keepdim=True), feats.std(0, keepdim=True).clamp_min(1e-6)
    x = (feats - feats_mean) / feats_std
    y = labels[chosen].to(device)
    head = nn.Linear(x.shape[1], model.fc.out_features).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # Fold the standardisation into one linear layer so the model keeps its plain ``fc``.
    fc = nn.Linear(x.shape[1], head.out_features).to(device)
    with torch.no_grad():
        fc.weight.copy_(head.weight / feats_std)
        fc.bias.copy_(head.bias - (head.weight * feats_mean / feats_std).sum(1))
    model.fc = fc
    return model


@torch.no_grad()
def segment_images(
    segmenter: PatchSegmenter,
    images: Tensor,
    batch_size: int = 256,
    feather: float = 0.1,
    tight_threshold: float = TIGHT_THRESHOLD,
    loose_threshold: float = LOOSE_THRESHOLD,
) -> tuple[Tensor, Tensor, Tensor]:
    """Foreground probability, tight alpha (the cut-out: :class:`~torch_backswap.cutout.CutOut` at p >
    ``tight_threshold``, soft over ``feather``) and loose hole (p > ``loose_threshold``); the defaults are the
    paper's 0.67 and 0.1.

    All ``(N, 1, H, W)``; the feather matches :class:`BackgroundSwap`'s default.

    Probability and tight alpha are float32 in [0, 1]; the loose hole is bool.
    """
    cut_out = CutOut(segmenter, tight_threshold=tight_threshold, feather=feather)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    prob = torch.cat([cut_out.probability(x) for x in batches])
    tight = torch.cat([cut_out(x) for x in batches])
    return prob, tight, probability_to_mask(prob, loose_threshold) > 0.5


@torch.no_grad()
def cut_out_batches(cut_out: CutOut, images: Tensor, batch_size: int = 256) -> Tensor:
    """``cut_out``'s alpha ``(N, 1, H, W)`` float32 of ``images``, ``batch_size`` images at a time."""
    return torch.cat([cut_out(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
