"""The small image classifiers of ``backswap demo`` and ``backswap diagnose``, and their train / evaluate loop.

:func:`build_classifier` names the architectures ``backswap diagnose --model`` loads and the demo trains
(:class:`SmallCNN`, torchvision ResNets); :func:`train_classifier` and :func:`evaluate_groups` are the demo's
training and scoring. The post-hoc fits the benchmarks add (DFR, class-bias recalibration) live with them in
``benchmarks/_harness.py``, outside the package.

Everything works on in-memory uint8 image tensors ``(N, 3, H, W)``: the StampBirds splits and the
background-swapped batches are small enough for that, and it keeps the loop free of file I/O. The
augmentation hook ``batch_fn(images, labels, indices) -> images`` is where
:class:`~torch_backswap.transform.BackgroundSwap` (or any other batch transform) plugs in; it runs on
uint8 batches before the standard train transform (random resized crop 0.7–1.0, horizontal flip).

Training objectives: plain ERM (optionally with group-balanced ``group_dro`` reweighting), label
smoothing 0.1 as in the paper, model selection on validation accuracy (worst-group accuracy when
the validation set carries group labels and ``select_on="worst_group"``).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_backswap.metrics import group_accuracies
from torch_backswap.segmenter import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SmallCNN",
    "build_classifier",
    "standard_augment",
    "randaugment_batch",
    "train_classifier",
    "predict",
    "evaluate_groups",
    "predict_logits",
]


BatchFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _to_normalized_float(images: Tensor) -> Tensor:
    """uint8 ``(B,3,H,W)`` or float in [0, 1] → float32 normalised with ImageNet statistics."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    else:
        images = images.float()
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class SmallCNN(nn.Module):
    """A small CNN that trains from scratch on a CPU in a minute or two at 64².

    Four conv-BN-ReLU stages (``width``, 2·width, 4·width, 4·width channels; 2× max-pool after the first
    three), global average pooling and a linear head — about 50 MMAC per 64² image at ``width=32``.

    Input: ``(B, 3, H, W)`` uint8 or float in [0, 1] (normalised inside). Output: ``(B, num_classes)`` logits.
    ``features(x)`` gives the ``(B, 4 * width)`` penultimate embedding.
    """

    def __init__(self, num_classes: int = 2, width: int = 32) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                       nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.body = nn.Sequential(
            *stage(3, width, True), *stage(width, 2 * width, True), *stage(2 * width, 4 * width, True),
            *stage(4 * width, 4 * width, False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def features(self, images: Tensor) -> Tensor:
        x = self.body(_to_normalized_float(images))
        return torch.flatten(self.pool(x), 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.features(images))


class _TorchvisionClassifier(nn.Module):
    """A torchvision ResNet with normalisation inside and a ``features`` / ``fc`` split like :class:`SmallCNN`."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        in_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.fc = nn.Linear(in_features, num_classes)

    def features(self, images: Tensor) -> Tensor:
        return self.net(_to_normalized_float(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.features(images))


def build_classifier(name: str = "small_cnn", num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """``"small_cnn"`` (from scratch, CPU friendly) or ``"resnet18"`` / ``"resnet50"`` (torchvision).

    ``pretrained=True`` loads torchvision's ImageNet weights (needs internet the first time).
    """
    if name == "small_cnn":
        if pretrained:
            raise ValueError("pretrained=True is not available for name='small_cnn'")
        return SmallCNN(num_classes)
    if name in ("resnet18", "resnet50"):
        import torchvision

        weights = "DEFAULT" if pretrained else None
        net = getattr(torchvision.models, name)(weights=weights)
        return _TorchvisionClassifier(net, num_classes)
    raise ValueError(f"name must be one of 'small_cnn', 'resnet18', 'resnet50', got {name!r}")


def standard_augment(images: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.7, 1.0)) -> Tensor:
    """The paper's train transform on a uint8 batch: per-sample RandomResizedCrop(scale) + horizontal flip.

    ``(B, 3, H, W)`` uint8 → float32 in [0, 1] of the same shape. One affine grid per sample
    (square crops, area fraction in ``scale``), so the whole batch is one ``grid_sample`` call.
    """
    b, _, h, w = images.shape
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=generator)
    side = area.sqrt()
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - side)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - side)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = side * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = side
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device), [b, 3, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def randaugment_batch(images: Tensor, generator: torch.Generator, num_ops: int = 2, magnitude: int = 9) -> Tensor:
    """torchvision ``RandAugment`` applied per sample to a uint8 batch (the ``erm_aug`` baseline)."""
    from torchvision.transforms import v2

    aug = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # RandAugment draws from the global generator; scope it to this call
    try:
        out = torch.stack([aug(img) for img in images])
    finally:
        torch.set_rng_state(state)
    return out


def predict_logits(
    model: nn.Module, images: Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
) -> Tensor:
    """Class logits ``(N, K)`` float32 (on the CPU) for uint8 images ``(N, 3, H, W)``, model in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(model(images[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def predict(model: nn.Module, images: Tensor, batch_size: int = 256, device: str | torch.device = "cpu") -> Tensor:
    """Class predictions ``(N,)`` long for uint8 images ``(N, 3, H, W)``."""
    logits = predict_logits(model, images, batch_size, device)
    return logits.argmax(1) if len(logits) else torch.empty(0, dtype=torch.long)


def evaluate_groups(
    model: nn.Module, images: Tensor, labels: Tensor, groups: Tensor, device: str | torch.device = "cpu"
) -> dict:
    """Average, worst-group and per-group accuracy of ``model`` on a labelled, grouped split."""
    preds = predict(model, images, device=device)
    per_group = group_accuracies(preds, labels, groups)
    return {
        "average": float((preds == labels).float().mean()),
        "worst_group": min(per_group.values()),
        "groups": per_group,
    }


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-3,
    label_smoothing: float = 0.1,
    batch_fn: Optional[BatchFn] = None,
    randaugment: bool = False,
    groups: Optional[Tensor] = None,
    group_dro: bool = False,
    group_dro_eta: float = 0.01,
    val: Optional[Sequence[Tensor]] = None,
    select_on: str = "average",
    on_epoch_end: Optional[Callable[[nn.Module], None]] = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> list[dict]:
    """Train ``model`` in place; returns the per-epoch history and keeps the best epoch's weights.

    Args:
        images: ``(N, 3, H, W)`` uint8 training images. labels: ``(N,)`` long.
        batch_fn: optional ``(uint8 images, labels, indices) -> uint8 images`` applied to each batch
            before the standard augmentation (the background swap goes here).
        randaugment: add per-sample RandAugment (the ``erm_aug`` baseline).
        groups: ``(N,)`` long group ids, required for ``group_dro``.
        val: optional ``(images, labels, groups)``; the epoch with the best ``select_on``
            (``"average"`` or ``"worst_group"``) validation accuracy is kept.
        on_epoch_end: optional ``model -> None`` called after each epoch (after the validation above), e.g. to
            score the epoch on another validation split; it must leave the model's weights alone.
    """
    if select_on not in ("average", "worst_group"):
        raise ValueError(f"select_on must be 'average' or 'worst_group', got {select_on!r}")
    if group_dro and groups is None:
        raise ValueError("group_dro=True needs groups (the training group ids), got groups=None")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    num_groups = int(groups.max()) + 1 if groups is not None else 0
    dro_weights = torch.ones(num_groups, device=device) / max(num_groups, 1)
    history: list[dict] = []
    best_score, best_state = -1.0, None
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total_loss, seen, start = 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x, y = images[idx], labels[idx]
            if batch_fn is not None:
                x = batch_fn(x, y, idx)
            if randaugment:
                x = randaugment_batch(x, generator)
            x = standard_augment(x.to(device), generator)
            y = y.to(device)
            logits = model(x)
            if group_dro:
                g = groups[idx].to(device)
                per_sample = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
                group_loss = torch.zeros(num_groups, device=device).index_add_(0, g, per_sample)
                counts = torch.bincount(g, minlength=num_groups).clamp_min(1)
                group_loss = group_loss / counts
                with torch.no_grad():
                    dro_weights = dro_weights * torch.exp(group_dro_eta * group_loss.detach())
                    dro_weights = dro_weights / dro_weights.sum()
                loss = (dro_weights * group_loss).sum()
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total_loss / seen:.3f}")
        record = {"epoch": epoch + 1, "loss": total_loss / seen, "seconds": time.perf_counter() - start}
        if val is not None:
            result = evaluate_groups(model, val[0], val[1], val[2], device=device)
            record.update(val_average=result["average"], val_worst_group=result["worst_group"])
            score = result[select_on]
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(model.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(model)
        history.append(record)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
