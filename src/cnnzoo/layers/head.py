"""Classifier heads shared by the families: pool-dropout-linear, and the FC stack of AlexNet/VGG."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Global pool -> flatten -> dropout -> linear. Works at any input resolution."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0, pool_type: str = "avg"):
        super().__init__()
        if pool_type not in ("avg", "max", ""):
            raise ValueError(f"pool_type must be 'avg', 'max' or '' (none), got {pool_type!r}")
        self.in_features = in_features
        if pool_type == "avg":
            self.global_pool = nn.AdaptiveAvgPool2d(1)
        elif pool_type == "max":
            self.global_pool = nn.AdaptiveMaxPool2d(1)
        else:
            self.global_pool = nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = linear_or_identity(in_features, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = linear_or_identity(self.in_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.fc(x)


def linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    """The classifier layer; with 0 classes an Identity, so the model returns its features."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


class FCHead(nn.Module):
    """Adaptive average pool to `pool_size`, flatten, (Linear-ReLU-Dropout) per hidden width, `fc`.

    The classifier of AlexNet and VGG. With no hidden widths it is pool + linear. Like
    `ClassifierHead` it has `fc`, `in_features` (the width `fc` reads) and `reset`.
    """

    def __init__(self, in_chs: int, num_classes: int, pool_size: int, hidden: Sequence[int] = (4096, 4096),
                 drop_rate: float = 0.5):
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten(1)
        layers, width = OrderedDict(), in_chs * pool_size * pool_size
        for i, out in enumerate(hidden, 1):
            layers[f"fc{i}"] = nn.Linear(width, out)
            layers[f"act{i}"] = nn.ReLU(inplace=True)
            layers[f"drop{i}"] = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            width = out
        self.pre_logits = nn.Sequential(layers)
        self.in_features = width
        self.fc = linear_or_identity(width, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = linear_or_identity(self.in_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.fc(x)
