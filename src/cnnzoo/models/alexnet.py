"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012; no arXiv id).

Five convolutional layers and three fully-connected ones, ReLU throughout, overlapping 3x3/2
max-pooling after conv1, conv2 and conv5, dropout 0.5 on the outputs of the first two
fully-connected layers.

- `alexnet` is the single-tower network users know from torchvision (64-192-384-256-256
  channels, after Krizhevsky's 2014 "One weird trick" paper, arXiv 1404.5997): 61,100,840
  params, no local response normalisation.
- `alexnet_paper` is the 2012 network: 96-256-384-384-256 channels, conv2, conv4 and conv5
  split into two groups (the two GPUs, `groups=2`), local response normalisation after conv1
  and conv2 (k=2, n=5, alpha=1e-4, beta=0.75; PyTorch divides alpha by n, so it gets 5e-4),
  227x227 input (the paper's "224" does not give its 55x55 conv1 maps without padding):
  60,965,224 params.
`init="paper"` applies the paper's initialisation: weights N(0, 0.01), biases 1 in conv2,
conv4, conv5 and the hidden fully-connected layers, 0 elsewhere. The default keeps
PyTorch's initialisation, as torchvision does. Deliberate differences: dropout follows the
hidden layers' ReLU as in the paper (torchvision drops their inputs instead; the count is the
same), and conv5's output is adaptively average-pooled to 6x6 (an identity at 224/227) so
that any input size works. The CIFAR variant is a cnnzoo layout: conv1 5x5 at stride 1, the
same pooling, a 3x3 grid into two 1024-unit hidden layers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..layers.head import FCHead
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("ImageNet Classification with Deep Convolutional Neural Networks", 2012, None,
              "Krizhevsky, Sutskever, Hinton")

INITS = ("default", "paper")


class AlexNet(ZooModel):
    """AlexNet: `features` (conv1-conv5 with ReLU, optional LRN, max-pools) then `head` (FCHead)."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5,
                 widths: Sequence[int] = (64, 192, 384, 256, 256), groups: Sequence[int] = (1, 1, 1, 1, 1),
                 kernels: Sequence[int] = (11, 5, 3, 3, 3), stem_stride: int = 4, stem_padding: int = 2,
                 lrn: bool = False, fc_features: int = 4096, pool_size: int = 6, init: str = "default"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not (len(widths) == len(groups) == len(kernels) == 5):
            raise ValueError("widths, groups and kernels need one entry per conv layer (5)")
        self.in_chans = in_chans
        layers, chs = OrderedDict(), in_chans
        for i, (width, g, k) in enumerate(zip(widths, groups, kernels), 1):
            stride, padding = (stem_stride, stem_padding) if i == 1 else (1, k // 2)
            layers[f"conv{i}"] = nn.Conv2d(chs, width, k, stride, padding, groups=g)
            layers[f"act{i}"] = nn.ReLU(inplace=True)
            if lrn and i <= 2:
                layers[f"lrn{i}"] = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
            if i in (1, 2, 5):
                layers[f"pool{i}"] = nn.MaxPool2d(3, 2)
            chs = width
        self.features = nn.Sequential(layers)
        self.num_classes = num_classes
        self.head = FCHead(chs, num_classes, pool_size, (fc_features, fc_features), drop_rate)
        self.num_features = self.head.in_features
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans)
        if init == "paper":
            self._init_paper()

    def _init_paper(self) -> None:
        """Section 5: N(0, 0.01) weights; bias 1 in conv2/4/5 and hidden FC layers (early ReLU signal)."""
        ones = {self.features.conv2, self.features.conv4, self.features.conv5,
                self.head.pre_logits.fc1, self.head.pre_logits.fc2}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if m in ones else 0.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="alexnet", paper=PAPER, input_style="imagenet", ref_params=61_100_840,
                ref_source="torchvision", min_input_size=(3, 63, 63))
def alexnet(**kwargs) -> AlexNet:
    """Single-tower AlexNet (torchvision's layout)."""
    return build_model(AlexNet, dict(), kwargs)


@register_model(family="alexnet", paper=PAPER, input_style="imagenet", input_size=(3, 227, 227),
                ref_params=60_965_224, ref_source="cnnzoo (paper section 3, Figure 2)",
                notes="groups=2 on conv2/4/5, LRN after conv1/conv2; init='paper' for the paper's initialisation",
                min_input_size=(3, 67, 67))
def alexnet_paper(**kwargs) -> AlexNet:
    """The 2012 two-tower AlexNet: grouped convolutions and local response normalisation."""
    return build_model(AlexNet, dict(widths=(96, 256, 384, 384, 256), groups=(1, 2, 1, 2, 2), stem_padding=0,
                                     lrn=True), kwargs)


@register_model(family="alexnet", paper=PAPER, input_style="cifar", num_classes=10, ref_params=5_871_434,
                ref_source="cnnzoo (single tower, 5x5/1 conv1, 3x3 grid, 1024-unit FC layers)")
def alexnet_cifar(**kwargs) -> AlexNet:
    """Single-tower AlexNet for 32x32 inputs: conv1 5x5 at stride 1, two 1024-unit hidden layers."""
    return build_model(AlexNet, dict(kernels=(5, 5, 3, 3, 3), stem_stride=1, pool_size=3, fc_features=1024,
                                     num_classes=10), kwargs)
