"""Network in Network (Lin, Chen & Yan 2013, "Network In Network", arXiv 1312.4400).

Stacked "mlpconv" blocks: a spatial convolution followed by 1x1 convolutions (a small MLP
slid over the image), each with ReLU. The last block outputs one map per class, and global
average pooling of those maps gives the class scores: there are no fully-connected layers.
The layouts are those of the authors' released Caffe models: for CIFAR-10, three blocks of
192-160-96 / 192-192-192 / 192-192-classes channels (5x5, 5x5, 3x3 spatial convs), 3x3/2
max- then average-pooling and dropout 0.5 after the first two blocks (966,986 params); for
ImageNet, four blocks of 96 / 256 / 384 / 1024 channels (11x11/4, 5x5, 3x3, 3x3), 3x3/2
max-pooling and dropout before the last block (7,595,176 params). Pools round up (Caffe's
ceil mode), giving the released models' 16-8 (CIFAR) and 27-13-6 (ImageNet) grids.
As in those models the class maps pass a ReLU before averaging (`class_map_act=False`
drops it); with `num_classes=0` the model returns the pooled maps of the last hidden layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("Network In Network", 2013, "1312.4400", "Lin, Chen, Yan")

# Per block: spatial (kernel, stride, padding), widths (spatial conv, then the 1x1 convs),
# pooling after the block ("max", "avg" or None), dropout after it. The classifier's 1x1
# conv is the last block's final layer and not listed.
CIFAR_BLOCKS = (
    ((5, 1, 2), (192, 160, 96), "max", True),
    ((5, 1, 2), (192, 192, 192), "avg", True),
    ((3, 1, 1), (192, 192), None, False),
)
IMAGENET_BLOCKS = (
    ((11, 4, 0), (96, 96, 96), "max", False),
    ((5, 1, 2), (256, 256, 256), "max", False),
    ((3, 1, 1), (384, 384, 384), "max", True),
    ((3, 1, 1), (1024, 1024), None, False),
)
BLOCKS = {"cifar": CIFAR_BLOCKS, "imagenet": IMAGENET_BLOCKS}


def mlpconv(in_chs: int, kernel: tuple[int, int, int], widths: Sequence[int]) -> nn.Sequential:
    """A spatial conv then 1x1 convs, each followed by ReLU."""
    k, stride, padding = kernel
    layers, chs = [], in_chs
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(chs, width, k, stride, padding) if i == 0 else nn.Conv2d(chs, width, 1),
                   nn.ReLU(inplace=True)]
        chs = width
    return nn.Sequential(*layers)


class ClassMapHead(nn.Module):
    """1x1 conv to one map per class, (ReLU), global average pool. `fc` is the 1x1 conv."""

    def __init__(self, in_features: int, num_classes: int, act: bool = True):
        super().__init__()
        self.in_features = in_features
        self.act = nn.ReLU() if act else nn.Identity()
        self.fc = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Conv2d(self.in_features, num_classes, 1) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = self._classifier(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or isinstance(self.fc, nn.Identity):
            return x.mean((2, 3))
        return self.act(self.fc(x)).mean((2, 3))


class NIN(ZooModel):
    """Network in Network: `features` (mlpconv blocks, pools, dropout) then `head` (ClassMapHead)."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5,
                 layout: str = "cifar", class_map_act: bool = True):
        super().__init__()
        if layout not in BLOCKS:
            raise ValueError(f"layout must be one of {tuple(BLOCKS)}, got {layout!r}")
        self.in_chans = in_chans
        layers, chs = OrderedDict(), in_chans
        for i, (kernel, widths, pool, drop) in enumerate(BLOCKS[layout], 1):
            layers[f"block{i}"] = mlpconv(chs, kernel, widths)
            chs = widths[-1]
            if pool:
                pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                layers[f"pool{i}"] = pool_cls(3, 2, ceil_mode=True)
            if drop and drop_rate > 0:
                layers[f"drop{i}"] = nn.Dropout(drop_rate)
        self.features = nn.Sequential(layers)
        self.num_features = chs
        self.num_classes = num_classes
        self.head = ClassMapHead(chs, num_classes, class_map_act)
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans)
        # He-normal for the ReLU convs (the net has no normalisation to rescue a poor scale),
        # then small class maps so the first logits are near zero.
        init_weights(self, conv_mode="fan_in")
        if isinstance(self.head.fc, nn.Conv2d):
            nn.init.normal_(self.head.fc.weight, 0.0, 0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="nin", paper=PAPER, input_style="imagenet", ref_params=7_595_176,
                ref_source="cnnzoo (the authors' released ImageNet model)",
                min_input_size=(3, 39, 39))
def nin(**kwargs) -> NIN:
    """NIN for ImageNet: four mlpconv blocks (the released Caffe model's layout)."""
    return build_model(NIN, dict(layout="imagenet", num_classes=1000), kwargs)


@register_model(family="nin", paper=PAPER, input_style="cifar", num_classes=10, ref_params=966_986,
                ref_source="cnnzoo (the authors' released CIFAR-10 model)")
def nin_cifar(**kwargs) -> NIN:
    """NIN for CIFAR-10: three mlpconv blocks, global average pooling of the class maps."""
    return build_model(NIN, dict(layout="cifar", num_classes=10), kwargs)
