"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions",
arXiv 1610.02357).

Inception taken to its limit: every Inception module becomes a depthwise-separable
convolution (a 3x3 depthwise convolution followed by a 1x1 pointwise one, with no
non-linearity between them, section 4.7). Figure 5: the entry flow (two 3x3 convolutions,
then three residual blocks of two separable convolutions ending in a 3x3/2 max-pool, with
1x1/2 convolution shortcuts), the middle flow (8 residual blocks of three separable
convolutions at 728 channels), and the exit flow (a 728->1024 residual block, separable
convolutions to 1536 and 2048), global average pooling and a linear layer; batch norm after
every (separable) convolution, 299x299 input. Dropout 0.5 before the classifier, as the paper
used on ImageNet. The count, 22,855,952 params, equals the paper's Table 3 and timm's
`legacy_xception`.

The CIFAR variant starts with two padded stride-1 3x3 convolutions and a stride-1 first
block, so the middle flow runs on an 8x8 grid instead of 19x19.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from ..layers.conv import ConvNormAct, DepthwiseSeparableConv
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("Xception: Deep Learning with Depthwise Separable Convolutions", 2017, "1610.02357", "Chollet")

STEMS = ("imagenet", "cifar")
# (in, out, separable convs, stride, starts with ReLU, widens at the first conv)
ENTRY_FLOW = ((64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True))
MIDDLE_BLOCK = (728, 728, 3, 1, True, True)
EXIT_BLOCK = (728, 1024, 2, 2, True, False)


def _separable(in_chs: int, out_chs: int, act: bool = False) -> nn.Module:
    return DepthwiseSeparableConv(in_chs, out_chs, 3, norm_act_between=False,
                                  act_layer=nn.ReLU if act else None)


class XceptionBlock(nn.Module):
    """ReLU-SepConv-BN repeated, an optional 3x3/stride max-pool, plus a (1x1 conv) shortcut."""

    def __init__(self, in_chs: int, out_chs: int, reps: int, stride: int = 1, start_with_relu: bool = True,
                 grow_first: bool = True):
        super().__init__()
        widths = [out_chs] * reps if grow_first else [in_chs] * (reps - 1) + [out_chs]
        layers, chs = [], in_chs
        for i, width in enumerate(widths):
            if i > 0 or start_with_relu:
                # Not in place on the block input: the shortcut still reads it.
                layers.append(nn.ReLU(inplace=i > 0))
            layers.append(_separable(chs, width))
            chs = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        # Registered before `rep`, as in the Keras/timm port, so their state dicts line up.
        if in_chs != out_chs or stride != 1:
            self.shortcut = ConvNormAct(in_chs, out_chs, 1, stride, act_layer=None)
        else:
            self.shortcut = nn.Identity()
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + self.shortcut(x)


class Xception(ZooModel):
    """Xception: `features` (stem, block1-12, conv3, conv4), global average pool, dropout, linear."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5,
                 middle_blocks: int = 8, stem: str = "imagenet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        cifar = stem == "cifar"
        self.in_chans = in_chans
        conv = partial(ConvNormAct, padding=1 if cifar else 0)
        f = OrderedDict(conv1=conv(in_chans, 32, 3, 1 if cifar else 2), conv2=conv(32, 64, 3))
        blocks = [*ENTRY_FLOW, *(MIDDLE_BLOCK,) * middle_blocks, EXIT_BLOCK]
        strides = {}  # a block's shortcut and max-pool both stride: say it once
        for i, (in_chs, out_chs, reps, stride, relu_first, grow_first) in enumerate(blocks, 1):
            if cifar and i == 1:
                stride = 1
            strides[f"features.block{i}"] = stride
            f[f"block{i}"] = XceptionBlock(in_chs, out_chs, reps, stride, relu_first, grow_first)
        f["conv3"] = _separable(1024, 1536, act=True)
        f["conv4"] = _separable(1536, 2048, act=True)
        self.features = nn.Sequential(f)
        self.num_features = 2048
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans, strides=strides)
        self._init_head(num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model(family="xception", paper=PAPER, input_style="imagenet", input_size=(3, 299, 299),
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), ref_params=22_855_952,
                ref_source="paper Table 3, timm legacy_xception")
def xception(**kwargs) -> Xception:
    """Xception (paper Figure 5), 299x299 input scaled to [-1, 1] as in the paper's Keras release."""
    return build_model(Xception, dict(), kwargs)


@register_model(family="xception", paper=PAPER, input_style="cifar", num_classes=10, ref_params=20_827_442,
                ref_source="cnnzoo (paper flows, stride-1 stem and first block)")
def xception_cifar(**kwargs) -> Xception:
    """Xception for 32x32 inputs: padded stride-1 stem and first block."""
    return build_model(Xception, dict(stem="cifar", num_classes=10), kwargs)
