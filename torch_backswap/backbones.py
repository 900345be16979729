"""Patch-segmenter backbones and heads: images → ``(B, S, S)`` cell logits (``PatchSegmenter.net``).

* ``"tiny"`` (:class:`TinyPatchNet`) – a small fully-convolutional CNN built here: three stride-2 stages,
  two dilated residual blocks and a global-context gate, then a 1×1 conv head – one logit per cell.
* ``"mobilenet_v3_small"``, ``"efficientnet_b0"``, ``"resnet18"`` – torchvision feature extractors
  (:func:`torchvision_features`) with the paper's pooled MLP head (:class:`PooledPatchHead`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BACKBONES", "PooledPatchHead", "TinyPatchNet", "torchvision_features"]

#: Supported backbone names.
BACKBONES = ("tiny", "mobilenet_v3_small", "efficientnet_b0", "resnet18")



def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _DilatedResidual(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv(x))


class _GlobalContext(nn.Module):
    """Squeeze-and-excitation style gate: every cell sees a summary of the whole image."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 4, 8)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


class TinyPatchNet(nn.Module):
    """Stride-8 fully-convolutional CNN; ``width`` = channels of the middle stage."""

    def __init__(self, grid_size: int, width: int, dropout: float) -> None:
        super().__init__()
        c1, c2, c3 = max(width // 2, 8), width, 2 * width
        self.grid_size = grid_size
        self.features = nn.Sequential(
            _conv_bn_relu(3, c1, stride=2),
            _conv_bn_relu(c1, c2, stride=2),
            _conv_bn_relu(c2, c2),
            _conv_bn_relu(c2, c3, stride=2),
            _DilatedResidual(c3, 2),
            _DilatedResidual(c3, 4),
            _GlobalContext(c3),
        )
        self.head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(c3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        if features.shape[-2:] != (self.grid_size, self.grid_size):
            features = F.adaptive_avg_pool2d(features, (self.grid_size, self.grid_size))
        return self.head(features)[:, 0]


class PooledPatchHead(nn.Module):
    """The paper's head: pool → Dropout → Linear(C, 2S²) → GELU → Linear(2S², S²) → (B, S, S)."""

    def __init__(self, in_features: int, grid_size: int, dropout: float) -> None:
        super().__init__()
        cells = grid_size * grid_size
        self.grid_size = grid_size
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_features, 2 * cells), nn.GELU(), nn.Linear(2 * cells, cells))

    def forward(self, features: Tensor) -> Tensor:
        pooled = features.mean((2, 3))
        return self.mlp(pooled).view(-1, self.grid_size, self.grid_size)


def torchvision_features(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    from torchvision import models

    if name == "mobilenet_v3_small":
        weights = models.MobileNet_V3_Small_Weights.IMAGENET1K_V1 if pretrained else None
        net = models.mobilenet_v3_small(weights=weights)
        return net.features, 576
    if name == "efficientnet_b0":
        weights = models.EfficientNet_B0_Weights.IMAGENET1K_V1 if pretrained else None
        net = models.efficientnet_b0(weights=weights)
        return net.features, 1280
    if name == "resnet18":
        weights = models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
        net = models.resnet18(weights=weights)
        body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                             net.layer4)
        return body, 512
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
