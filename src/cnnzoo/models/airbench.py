"""The airbench CIFAR-10 network (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
arXiv 2404.00498; its public code is github.com/KellerJordan/cifar10-airbench), written from the
paper's description.

A 2x2 patch-whitening convolution (3 -> 24 channels, no padding, with bias), GELU, then three
conv groups of widths 64, 256, 256. A group is conv3x3 -> 2x2 max-pool -> BN -> GELU -> conv3x3
-> BN -> GELU; its convolutions have no bias and start as a partial identity (Dirac init of the
first `in_channels` filters, the rest as usual), and its batch norms keep their scale at 1
(`ShiftOnlyBatchNorm2d`). The head is a global max-pool (airbench's 3x3 pool at 32 px), a linear
layer without bias and a fixed multiplication of the logits by 1/9.

What the rest of airbench94 adds lives in the engine, usable with any model: patch whitening of
the first convolution from the training data (`model.whiten_images`), the larger learning rate
of the batch-norm shifts (`optim.norm_lr_scale`), Nesterov SGD in per-1024-example units
(`optim.name: sgd_scaled`), label smoothing, the triangular schedule, lookahead, translation
with alternating flips and flip-and-translate test-time augmentation; the `cifar10_speedrun`
recipe puts them together.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..layers.head import linear_or_identity
from ..layers.norm import ShiftOnlyBatchNorm2d
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024, "2404.00498", "Jordan")


def partial_identity_(conv: nn.Conv2d) -> None:
    """Dirac-initialise the first min(out, in) filters: the conv starts by passing its input through."""
    with torch.no_grad():
        n = min(conv.out_channels, conv.in_channels)
        nn.init.dirac_(conv.weight[:n])


class ConvGroup(nn.Sequential):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, the convs partially identity-initialised."""

    def __init__(self, in_chs: int, out_chs: int, bn_momentum: float):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
            pool=nn.MaxPool2d(2),
            norm1=ShiftOnlyBatchNorm2d(out_chs, momentum=bn_momentum),
            act1=nn.GELU(),
            conv2=nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False),
            norm2=ShiftOnlyBatchNorm2d(out_chs, momentum=bn_momentum),
            act2=nn.GELU(),
        ))
        partial_identity_(self.conv1)
        partial_identity_(self.conv2)


class ScaledLinearHead(nn.Module):
    """Global max-pool -> flatten -> linear (no bias) -> x `scale`, with `fc`, `in_features`, `reset`."""

    def __init__(self, in_features: int, num_classes: int, scale: float):
        super().__init__()
        self.in_features, self.scale = in_features, scale
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = self._linear(num_classes)

    def _linear(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.in_features, num_classes, bias=False) if num_classes > 0 else \
            linear_or_identity(self.in_features, 0)

    def reset(self, num_classes: int) -> None:
        self.fc = self._linear(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.global_pool(x))
        return x if pre_logits else self.fc(x) * self.scale


class AirbenchNet(ZooModel):
    """`whiten` (k x k conv, 2 x in_chans x k^2 filters, GELU) then `groups`, then `head`."""

    def __init__(self, *, widths: Sequence[int] = (64, 256, 256), whiten_kernel: int = 2, bn_momentum: float = 0.4,
                 logit_scale: float = 1 / 9, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.in_chans = in_chans
        whiten_width = 2 * in_chans * whiten_kernel ** 2
        self.whiten = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, whiten_width, whiten_kernel, bias=True),
                                                act=nn.GELU()))
        groups, chs = OrderedDict(), whiten_width
        for i, width in enumerate(widths, 1):
            groups[f"group{i}"] = ConvGroup(chs, width, bn_momentum)
            chs = width
        self.groups = nn.Sequential(groups)
        self.num_features = chs
        self.num_classes = num_classes
        self.head = ScaledLinearHead(chs, num_classes, logit_scale)
        self.feature_info = chain_stages([("whiten", self.whiten), *children_path(self.groups, "groups.")], in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.groups(self.whiten(x))


@register_model(family="airbench", paper=PAPER, input_style="cifar", num_classes=10, min_input_size=(3, 16, 16),
                ref_params=1_972_792, ref_source="cnnzoo (airbench94's network, arXiv 2404.00498)")
def airbench_cifar(**kwargs) -> AirbenchNet:
    """airbench94's network: widths 64/256/256, 2x2 whitening conv, GELU, shift-only BN, logits x 1/9."""
    return build_model(AirbenchNet, {}, kwargs)
