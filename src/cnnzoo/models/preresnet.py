"""Pre-activation ResNet / ResNet v2 (He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep
Residual Networks", arXiv 1603.05027).

The ResNet class with full pre-activation units (BN-ReLU before each conv, nothing after the
addition, Fig. 4e), plus the paper's two special cases: the first unit's activation sits
right after conv1, before the split into two paths (here: the stem's BN-ReLU, and the first
unit skips its own), and the last unit is followed by an extra BN-ReLU before pooling.
Projection shortcuts (1x1 conv, no BN) read the pre-activated input, as in the authors' code.

CIFAR: `preresnet{20,32,44,56,110,1202}_cifar` use basic units (6n+2 layers, 16-32-64
channels); `preresnet164_cifar` and `preresnet1001_cifar` bottleneck units (9n+2 layers,
outputs 64-128-256), as in the paper's CIFAR experiments. ImageNet: `preresnet18..152` with the
ResNet stem and stage layout.
Shortcuts are 1x1 projections where the shape changes (option B, as in the authors'
pre-activation code) for every variant; `shortcut="A"` gives parameter-free zero-padding.
"""

from __future__ import annotations

from torch import nn

from ..layers.conv import make_act
from ..layers.residual import PreActBasicBlock, PreActBottleneck, create_shortcut, get_block
from ..registry import Paper, build_model, register_model
from .resnet import CIFAR_WIDTHS, ResNet, imagenet_args

PAPER = Paper("Identity Mappings in Deep Residual Networks", 2016, "1603.05027", "He, Zhang, Ren, Sun")

_PREACT_BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}
_SRC = "cnnzoo (the paper's CIFAR layout, projection shortcuts)"
_IN_SRC = "cnnzoo (torchvision ResNet layout with pre-activation units)"


class PreResNet(ResNet):
    """ResNet with pre-activation units; takes every ResNet option ("basic"/"bottleneck" mean
    their pre-activation forms)."""

    @staticmethod
    def _resolve_block(block: str | type[nn.Module]) -> type[nn.Module]:
        if isinstance(block, str) and block in _PREACT_BLOCKS:
            return _PREACT_BLOCKS[block]
        return get_block(block)

    def _make_final_norm(self, channels: int) -> nn.Module:
        return nn.Sequential(self.norm_layer(channels), make_act(self.act_layer))

    def _make_block(self, stage: int, index: int, in_chs: int, planes: int, *, stride: int, **kwargs) -> nn.Module:
        out_chs = planes * self.block.expansion
        downsample = create_shortcut(self.shortcut, in_chs, out_chs, stride, norm_layer=None)
        return self.block(in_chs, planes, stride, downsample, norm_layer=self.norm_layer, act_layer=self.act_layer,
                          preact=(stage, index) != (0, 0), **kwargs)


def cifar_args(depth: int, bottleneck: bool = False) -> dict:
    """6n+2 layers of basic units or 9n+2 of bottleneck units, 16-32-64 planes, 3x3 stem of 16."""
    per_block = 9 if bottleneck else 6
    n, rem = divmod(depth - 2, per_block)
    if rem:
        raise ValueError(f"CIFAR PreResNet depth must be {per_block}n+2, got {depth}")
    return dict(block="bottleneck" if bottleneck else "basic", layers=(n,) * 3, widths=CIFAR_WIDTHS,
                stem="cifar", stem_width=16, shortcut="B", num_classes=10)


_CIFAR = dict(family="preresnet", paper=PAPER, input_style="cifar", num_classes=10, ref_source=_SRC)
_IMAGENET = dict(family="preresnet", paper=PAPER, input_style="imagenet", ref_source=_IN_SRC)


@register_model(**_CIFAR, ref_params=272_282)
def preresnet20_cifar(**kwargs) -> PreResNet:
    """PreResNet-20: 3 stages of 3 basic pre-activation units."""
    return build_model(PreResNet, cifar_args(20), kwargs)


@register_model(**_CIFAR, ref_params=466_714)
def preresnet32_cifar(**kwargs) -> PreResNet:
    """PreResNet-32: 3 stages of 5 basic pre-activation units."""
    return build_model(PreResNet, cifar_args(32), kwargs)


@register_model(**_CIFAR, ref_params=661_146)
def preresnet44_cifar(**kwargs) -> PreResNet:
    """PreResNet-44: 3 stages of 7 basic pre-activation units."""
    return build_model(PreResNet, cifar_args(44), kwargs)


@register_model(**_CIFAR, ref_params=855_578)
def preresnet56_cifar(**kwargs) -> PreResNet:
    """PreResNet-56: 3 stages of 9 basic pre-activation units."""
    return build_model(PreResNet, cifar_args(56), kwargs)


@register_model(**_CIFAR, ref_params=1_730_522)
def preresnet110_cifar(**kwargs) -> PreResNet:
    """PreResNet-110: 3 stages of 18 basic units."""
    return build_model(PreResNet, cifar_args(110), kwargs)


@register_model(**_CIFAR, ref_params=1_703_258)
def preresnet164_cifar(**kwargs) -> PreResNet:
    """PreResNet-164: 3 stages of 18 bottleneck units, about 1.7M parameters."""
    return build_model(PreResNet, cifar_args(164, bottleneck=True), kwargs)


@register_model(**_CIFAR, ref_params=10_327_706)
def preresnet1001_cifar(**kwargs) -> PreResNet:
    """PreResNet-1001: 3 stages of 111 bottleneck units, 10.3M parameters (the paper says 10.2M)."""
    return build_model(PreResNet, cifar_args(1001, bottleneck=True), kwargs)


@register_model(**_CIFAR, ref_params=19_423_834)
def preresnet1202_cifar(**kwargs) -> PreResNet:
    """PreResNet-1202: 3 stages of 200 basic units."""
    return build_model(PreResNet, cifar_args(1202), kwargs)


@register_model(**_IMAGENET, ref_params=11_687_720)
def preresnet18(**kwargs) -> PreResNet:
    """PreResNet-18: ResNet-18's layout with pre-activation basic units."""
    return build_model(PreResNet, imagenet_args(18), kwargs)


@register_model(**_IMAGENET, ref_params=21_795_880)
def preresnet34(**kwargs) -> PreResNet:
    """PreResNet-34: ResNet-34's layout with pre-activation basic units."""
    return build_model(PreResNet, imagenet_args(34), kwargs)


@register_model(**_IMAGENET, ref_params=25_549_352)
def preresnet50(**kwargs) -> PreResNet:
    """PreResNet-50: ResNet-50's layout with pre-activation bottleneck units."""
    return build_model(PreResNet, imagenet_args(50), kwargs)


@register_model(**_IMAGENET, ref_params=44_541_480)
def preresnet101(**kwargs) -> PreResNet:
    """PreResNet-101: ResNet-101's layout with pre-activation bottleneck units."""
    return build_model(PreResNet, imagenet_args(101), kwargs)


@register_model(**_IMAGENET, ref_params=60_185_128)
def preresnet152(**kwargs) -> PreResNet:
    """PreResNet-152: ResNet-152's layout with pre-activation bottleneck units."""
    return build_model(PreResNet, imagenet_args(152), kwargs)
