"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to
Document Recognition", Proc. IEEE 86(11)).

The paper's layout for a 32x32 input: C1 (6 maps, 5x5) - S2 (2x2 subsampling) - C3 (16 maps,
5x5) - S4 - C5 (120 maps, 5x5, giving 1x1) - F6 (84 units) - output. The paper's choices are
the default: tanh squashing and average-pool subsampling. `variant="relu"` is the modern
form with ReLU and max-pooling.

Differences from the paper, kept on purpose: subsampling has no trainable coefficient and
bias per map, and the output layer is linear (softmax cross-entropy), not Euclidean RBF
units. `c3_table=True` restores the paper's sparse C3 connection table (Table I), where
each C3 map sees only some of the S2 maps (1,516 instead of 2,416 C3 parameters).
Any input size works: S4's output is adaptively pooled to the 5x5 that C5 expects (an
identity at 32x32).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.head import linear_or_identity
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import FeatureInfo, stage

PAPER = Paper(
    "Gradient-Based Learning Applied to Document Recognition", 1998, None,
    "LeCun, Bottou, Bengio, Haffner",
)

# Table I of the paper: the S2 maps (rows) each C3 map (column) is connected to.
_C3_TABLE = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose input-output connections are restricted by a fixed mask."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, connections: torch.Tensor):
        super().__init__(in_chs, out_chs, kernel_size)
        self.register_buffer("mask", connections.float()[:, :, None, None], persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)
        # No gradient hook is needed: the forward multiplies by the mask, so the masked
        # weights get zero gradient and stay zero under any optimiser.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def _c3_connections() -> torch.Tensor:
    rows = [[c == "X" for c in row] for row in _C3_TABLE]
    return torch.tensor(rows).t()  # (16 C3 maps, 6 S2 maps)


class LeNet5(ZooModel):
    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, variant: str = "paper",
                 c3_table: bool = False, drop_rate: float = 0.0):
        super().__init__()
        if variant not in ("paper", "relu"):
            raise ValueError(f"variant must be 'paper' (tanh, avg-pool) or 'relu' (ReLU, max-pool), got {variant!r}")
        act, pool = (nn.Tanh, nn.AvgPool2d) if variant == "paper" else (nn.ReLU, nn.MaxPool2d)
        self.in_chans = in_chans
        self.num_features = 84
        c3 = MaskedConv2d(6, 16, 5, _c3_connections()) if c3_table else nn.Conv2d(6, 16, 5)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5), act(), pool(2),  # C1, S2
            c3, act(), pool(2),  # C3, S4
            nn.AdaptiveAvgPool2d(5),
            nn.Conv2d(16, 120, 5), act(),  # C5
        )
        # Valid 5x5 convolutions (32 -> 28 -> 14 -> 10 -> 5): S2 and S4 subsample by 2 and 4; C5
        # reads an adaptive 5x5 pool and gives 1x1, nominally 32 at the paper's 32x32.
        self.feature_info = FeatureInfo([stage("features.2", 6, 2), stage("features.5", 16, 4),
                                         stage("features.8", 120, 32)])
        self.f6 = nn.Sequential(nn.Flatten(1), nn.Linear(120, 84), act())
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.f6(x))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = linear_or_identity(self.num_features, num_classes)
        self._set_num_classes(num_classes)


_MNIST_STATS = dict(mean=(0.5,), std=(0.5,))


@register_model(family="lenet", paper=PAPER, input_style="cifar", input_size=(1, 32, 32),
                num_classes=10, ref_params=61_706, ref_source="the paper's layout with a full C3", **_MNIST_STATS)
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 as in the paper: tanh and average-pool subsampling."""
    return build_model(LeNet5, dict(variant="paper"), kwargs)


@register_model(family="lenet", paper=PAPER, input_style="cifar", input_size=(1, 32, 32),
                num_classes=10, ref_params=61_706, ref_source="the paper's layout with a full C3", **_MNIST_STATS)
def lenet5_relu(**kwargs) -> LeNet5:
    """LeNet-5 with ReLU and max-pooling, the common modern form."""
    return build_model(LeNet5, dict(variant="relu"), kwargs)
