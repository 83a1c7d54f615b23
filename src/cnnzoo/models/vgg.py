"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv 1409.1556).

Stacks of 3x3 convolutions (stride 1, padding 1) with ReLU, five 2x2/2 max-pools, then three
fully-connected layers (4096, 4096, classes) with dropout 0.5 after the first two. The
configurations A, B, D and E of the paper's Table 1 give VGG-11, -13, -16 and -19;
`batch_norm=True` adds batch norm after every convolution (not in the paper, which predates
it; the convs keep their biases, as in torchvision). Parameter counts equal torchvision's.
`init` chooses the initialisation: "default" is torchvision's (He-normal convolutions, N(0, 0.01)
linear layers), "paper" the paper's random initialisation (every weight N(0, 0.01), biases 0;
section 3.1) and "glorot" Glorot & Bengio's, which the paper recommends in its place.
Deliberate difference: the last pool is followed by an adaptive average pool to 7x7 (an
identity at 224x224), as in torchvision, so any input size of at least 32 works.

The CIFAR variants are the common CIFAR layout (kuangliu/pytorch-cifar): the same
convolution stacks, whose five pools take 32x32 to 1x1, then a single linear layer on the
512 features (no hidden FC layers, no dropout).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.conv import ConvNormAct
from ..layers.head import FCHead
from ..layers.init import init_glorot, init_normal, init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper("Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014, "1409.1556",
              "Simonyan, Zisserman")

# Table 1: conv widths per stage; "M" = 2x2/2 max-pool.
CFGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
INITS = {"default": init_weights, "paper": init_normal, "glorot": init_glorot}


class VGG(ZooModel):
    """VGG: `features` (conv stacks and max-pools) then `head` (FCHead)."""

    def __init__(self, *, cfg: str = "D", batch_norm: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.5, fc_features: int = 4096, pool_size: int = 7, init: str = "default"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if cfg not in CFGS:
            raise ValueError(f"cfg must be one of {sorted(CFGS)} (VGG-11/13/16/19), got {cfg!r}")
        self.in_chans = in_chans
        self.features = _make_features(CFGS[cfg], in_chans, batch_norm)
        hidden = (fc_features, fc_features) if fc_features else ()
        self.num_classes = num_classes
        self.head = FCHead(512, num_classes, pool_size, hidden, drop_rate)
        self.num_features = self.head.in_features
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans)
        INITS[init](self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _make_features(cfg: tuple, in_chans: int, batch_norm: bool) -> nn.Sequential:
    layers, chs, stage, index = OrderedDict(), in_chans, 1, 1
    for v in cfg:
        if v == "M":
            layers[f"pool{stage}"] = nn.MaxPool2d(2, 2)
            stage, index = stage + 1, 1
            continue
        layers[f"conv{stage}_{index}"] = ConvNormAct(chs, v, 3, bias=True,
                                                     norm_layer=nn.BatchNorm2d if batch_norm else None)
        chs, index = v, index + 1
    return nn.Sequential(layers)


_TV = dict(family="vgg", paper=PAPER, input_style="imagenet", ref_source="torchvision",
           min_input_size=(3, 32, 32))
_CIFAR = dict(family="vgg", paper=PAPER, input_style="cifar", num_classes=10,
              ref_source="cnnzoo (kuangliu/pytorch-cifar layout: conv stacks + one linear layer)")
_CIFAR_HEAD = dict(fc_features=0, pool_size=1, num_classes=10)


@register_model(ref_params=132_863_336, **_TV)
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A)."""
    return build_model(VGG, dict(cfg="A"), kwargs)


@register_model(ref_params=133_047_848, **_TV)
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B)."""
    return build_model(VGG, dict(cfg="B"), kwargs)


@register_model(ref_params=138_357_544, **_TV)
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D)."""
    return build_model(VGG, dict(cfg="D"), kwargs)


@register_model(ref_params=143_667_240, **_TV)
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E)."""
    return build_model(VGG, dict(cfg="E"), kwargs)


@register_model(ref_params=132_868_840, **_TV)
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch norm."""
    return build_model(VGG, dict(cfg="A", batch_norm=True), kwargs)


@register_model(ref_params=133_053_736, **_TV)
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch norm."""
    return build_model(VGG, dict(cfg="B", batch_norm=True), kwargs)


@register_model(ref_params=138_365_992, **_TV)
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch norm."""
    return build_model(VGG, dict(cfg="D", batch_norm=True), kwargs)


@register_model(ref_params=143_678_248, **_TV)
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch norm."""
    return build_model(VGG, dict(cfg="E", batch_norm=True), kwargs)


@register_model(ref_params=9_225_610, **_CIFAR)
def vgg11_cifar(**kwargs) -> VGG:
    """VGG-11 for 32x32 inputs: configuration A and one linear layer."""
    return build_model(VGG, dict(cfg="A", **_CIFAR_HEAD), kwargs)


@register_model(ref_params=9_410_122, **_CIFAR)
def vgg13_cifar(**kwargs) -> VGG:
    """VGG-13 for 32x32 inputs: configuration B and one linear layer."""
    return build_model(VGG, dict(cfg="B", **_CIFAR_HEAD), kwargs)


@register_model(ref_params=14_719_818, **_CIFAR)
def vgg16_cifar(**kwargs) -> VGG:
    """VGG-16 for 32x32 inputs: configuration D and one linear layer."""
    return build_model(VGG, dict(cfg="D", **_CIFAR_HEAD), kwargs)


@register_model(ref_params=20_029_514, **_CIFAR)
def vgg19_cifar(**kwargs) -> VGG:
    """VGG-19 for 32x32 inputs: configuration E and one linear layer."""
    return build_model(VGG, dict(cfg="E", **_CIFAR_HEAD), kwargs)


@register_model(ref_params=9_231_114, **_CIFAR)
def vgg11_bn_cifar(**kwargs) -> VGG:
    """VGG-11 with batch norm for 32x32 inputs."""
    return build_model(VGG, dict(cfg="A", batch_norm=True, **_CIFAR_HEAD), kwargs)


@register_model(ref_params=9_416_010, **_CIFAR)
def vgg13_bn_cifar(**kwargs) -> VGG:
    """VGG-13 with batch norm for 32x32 inputs."""
    return build_model(VGG, dict(cfg="B", batch_norm=True, **_CIFAR_HEAD), kwargs)


@register_model(ref_params=14_728_266, **_CIFAR)
def vgg16_bn_cifar(**kwargs) -> VGG:
    """VGG-16 with batch norm for 32x32 inputs (the usual CIFAR VGG)."""
    return build_model(VGG, dict(cfg="D", batch_norm=True, **_CIFAR_HEAD), kwargs)


@register_model(ref_params=20_040_522, **_CIFAR)
def vgg19_bn_cifar(**kwargs) -> VGG:
    """VGG-19 with batch norm for 32x32 inputs."""
    return build_model(VGG, dict(cfg="E", batch_norm=True, **_CIFAR_HEAD), kwargs)
