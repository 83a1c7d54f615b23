"""DenseNet (Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional
Networks", arXiv 1608.06993).

Each layer of a dense block sees the concatenation of all earlier maps in the block and adds
`growth_rate` new ones. DenseNet-B puts a 1x1 bottleneck of `bn_size * growth_rate` channels
before each 3x3 conv; DenseNet-C (`compression` < 1) shrinks the channels in each
transition (BN-ReLU-1x1 conv-2x2 average pool). The ImageNet nets (121/169/201/161, Table 1)
match torchvision's layout, parameter counts and module names (`features.denseblock1...`).
The CIFAR DenseNet-BC nets (section 4) use a 3x3 stem of 2k channels and three dense blocks
of (depth - 4) / 6 bottleneck layers each.
`attn_layer` ("se", ... from `layers.attention`) recalibrates each dense block's output before
its transition: the SE paper's rule for networks without residual units (the whole module is
the transformation the SE block gates, as for Inception modules); not in either paper, so no
variant is registered.
Difference from the paper: `dense_drop_rate` (the paper's dropout after each conv, used
without augmentation) defaults to 0.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.attention import create_attn
from ..layers.conv import LayerFactory, make_act
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("Densely Connected Convolutional Networks", 2017, "1608.06993",
              "Huang, Liu, van der Maaten, Weinberger")


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (bottleneck, DenseNet-B) then BN-ReLU-3x3 producing `growth_rate` maps."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int | None, drop_rate: float,
                 norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__()
        mid = in_chs
        if bn_size:
            mid = bn_size * growth_rate
            self.norm1, self.relu1 = norm_layer(in_chs), make_act(act_layer)
            self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.norm2, self.relu2 = norm_layer(mid), make_act(act_layer)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        if hasattr(self, "conv1"):
            x = self.conv1(self.relu1(self.norm1(x)))
        x = self.conv2(self.relu2(self.norm2(x)))
        return F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0 else x


class DenseBlock(nn.ModuleDict):
    """`num_layers` DenseLayers named `denselayer1...`; returns all maps concatenated."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, **layer_kwargs):
        super().__init__()
        self.out_chs = in_chs + num_layers * growth_rate
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_chs + i * growth_rate, growth_rate, **layer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv to `out_chs`, then 2x2 average pooling."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__()
        self.norm, self.relu = norm_layer(in_chs), make_act(act_layer)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        # ceil_mode keeps odd-sized maps' last row/column instead of dropping it
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True)


class DenseNet(ZooModel):
    """Stem, dense blocks joined by transitions, final BN-ReLU, pool + linear."""

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        stem: str = "imagenet",
        stem_width: int | None = None,
        bn_size: int | None = 4,
        compression: float = 0.5,
        dense_drop_rate: float = 0.0,
        drop_rate: float = 0.0,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
    ):
        super().__init__()
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        self.in_chans = in_chans
        chs = stem_width or 2 * growth_rate
        self.features = nn.Sequential(_stem(stem, in_chans, chs, norm_layer, act_layer))
        layer_kwargs = dict(bn_size=bn_size, drop_rate=dense_drop_rate, norm_layer=norm_layer, act_layer=act_layer)
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(num_layers, chs, growth_rate, **layer_kwargs))
            chs += num_layers * growth_rate
            if attn_layer:  # keys features.attn1...: the torchvision names stay as they are
                self.features.add_module(f"attn{i + 1}", create_attn(attn_layer, chs, **(attn_kwargs or {})))
            if i < len(block_config) - 1:
                out_chs = int(chs * compression)
                self.features.add_module(f"transition{i + 1}", Transition(chs, out_chs, norm_layer, act_layer))
                chs = out_chs
        self.features.add_module(f"norm{len(block_config) + 1}", norm_layer(chs))
        self.features.add_module(f"relu{len(block_config) + 1}", make_act(act_layer))
        self.num_features = chs
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans)
        self._init_head(num_classes, drop_rate)
        init_weights(self, conv_mode="fan_in", linear_std=None)  # torchvision's DenseNet init

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _stem(stem: str, in_chans: int, chs: int, norm_layer: LayerFactory, act_layer: LayerFactory) -> OrderedDict:
    """Stem layers named as torchvision's (`features.conv0`, `norm0`, `relu0`, `pool0`)."""
    if stem == "imagenet":
        return OrderedDict(
            conv0=nn.Conv2d(in_chans, chs, 7, 2, 3, bias=False), norm0=norm_layer(chs), relu0=make_act(act_layer),
            pool0=nn.MaxPool2d(3, 2, 1),
        )
    if stem == "cifar":  # the first dense layer's BN-ReLU follows directly
        return OrderedDict(conv0=nn.Conv2d(in_chans, chs, 3, 1, 1, bias=False))
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")


def cifar_bc_args(depth: int, growth_rate: int) -> dict:
    """DenseNet-BC for CIFAR: three blocks of (depth - 4) / 6 bottleneck layers, compression 0.5."""
    n, rem = divmod(depth - 4, 6)
    if rem:
        raise ValueError(f"CIFAR DenseNet-BC depth must be 6n+4, got {depth}")
    return dict(growth_rate=growth_rate, block_config=(n,) * 3, stem="cifar", bn_size=4, compression=0.5,
                num_classes=10)


_IMAGENET = dict(family="densenet", paper=PAPER, input_style="imagenet", ref_source="torchvision")
_CIFAR = dict(family="densenet", paper=PAPER, input_style="cifar", num_classes=10)


@register_model(**_IMAGENET, ref_params=7_978_856)
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 (k=32)."""
    return build_model(DenseNet, dict(growth_rate=32, block_config=(6, 12, 24, 16)), kwargs)


@register_model(**_IMAGENET, ref_params=14_149_480)
def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169 (k=32)."""
    return build_model(DenseNet, dict(growth_rate=32, block_config=(6, 12, 32, 32)), kwargs)


@register_model(**_IMAGENET, ref_params=20_013_928)
def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201 (k=32)."""
    return build_model(DenseNet, dict(growth_rate=32, block_config=(6, 12, 48, 32)), kwargs)


@register_model(**_IMAGENET, ref_params=28_681_000)
def densenet161(**kwargs) -> DenseNet:
    """DenseNet-161 (k=48, stem of 96)."""
    return build_model(DenseNet, dict(growth_rate=48, block_config=(6, 12, 36, 24), stem_width=96), kwargs)


@register_model(**_CIFAR, ref_params=769_162, ref_source="cnnzoo (the paper's Table 2: 0.8M)")
def densenet_bc100_k12_cifar(**kwargs) -> DenseNet:
    """DenseNet-BC, L=100, k=12."""
    return build_model(DenseNet, cifar_bc_args(100, 12), kwargs)


@register_model(**_CIFAR, ref_params=25_624_430, ref_source="cnnzoo (the paper's Table 2: 25.6M)")
def densenet_bc190_k40_cifar(**kwargs) -> DenseNet:
    """DenseNet-BC, L=190, k=40."""
    return build_model(DenseNet, cifar_bc_args(190, 40), kwargs)
