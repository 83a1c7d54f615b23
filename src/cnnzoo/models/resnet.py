"""ResNet (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition",
arXiv 1512.03385) and ResNeXt (Xie, Girshick, Dollar, Tu & He 2017, "Aggregated Residual
Transformations for Deep Neural Networks", arXiv 1611.05431).

One configurable class; each variant is data. The ImageNet nets (section 3.4, Table 1) use a
7x7/2 stem and max-pool, four stages of 64-128-256-512 planes and projection shortcuts where
the shape changes (option B); their parameter counts equal torchvision's. The CIFAR nets of
section 4.2 use a 3x3 stem, three stages of 16-32-64 channels with n blocks each (6n+2
layers) and zero-padding shortcuts (option A). `resnet18_cifar`... keep the ImageNet widths
with a 3x3 stem and no max-pool. ResNeXt is the bottleneck net with grouped 3x3 convolutions
(the paper's form (c)).

Deliberate differences: bottlenecks stride on the 3x3 convolution (torchvision's v1.5);
`stride_in_1x1=True` (the `resnet50_v1`... variants) strides the first 1x1 as the paper's
Caffe models do, which gives the published receptive fields (483/1027/1507 pixels for
ResNet-50/101/152) and the paper's 3.8/7.6/11.3 billion multiply-adds. `shortcut`, `attn_layer` (SE/CBAM/GE/SK inside blocks, BAM between stages) and stochastic
depth (`drop_path_rate`) are options the paper does not have.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..layers.attention import attn_placement, create_attn
from ..layers.conv import LayerFactory, make_act
from ..layers.drop import drop_path_rates
from ..layers.init import init_weights
from ..layers.residual import BasicBlock, create_shortcut, get_block
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import FeatureInfo, output_stride_plan
from .features import stage as stage_info

PAPER = Paper("Deep Residual Learning for Image Recognition", 2016, "1512.03385", "He, Zhang, Ren, Sun")
RESNEXT_PAPER = Paper("Aggregated Residual Transformations for Deep Neural Networks", 2017, "1611.05431",
                      "Xie, Girshick, Dollar, Tu, He")

STEMS = ("imagenet", "cifar")
PLACEMENTS = ("block", "stage")


class ResNet(ZooModel):
    """A stem, then stages `layer1`..`layerN` of residual blocks, then pool + linear (`head.fc`).

    `block`: a block class or "basic"/"bottleneck"; `layers`: blocks per stage; `widths`:
    planes per stage (the first stage keeps the resolution, each later one halves it).
    `attn_layer`: an attention name from `layers.attention`, placed where its paper puts it
    (override with `attn_placement="block"|"stage"`). `block_args`: extra options for every block.
    `stride_in_1x1`: bottlenecks stride on their first 1x1 (the paper's "v1") rather than on
    the 3x3 (torchvision's "v1.5", the default); the same weights fit either.
    `output_stride` 8 or 16 replaces the later stages' strides by dilation (a dense backbone for
    segmentation, as in DeepLab); the parameters are unchanged.
    """

    def __init__(
        self,
        *,
        block: str | type[nn.Module] = BasicBlock,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_width: int = 64,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
        attn_placement: str | None = None,
        block_args: dict | None = None,
        stride_in_1x1: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        zero_init_last: bool = False,
        output_stride: int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
    ):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        self.block = self._resolve_block(block)
        block_args = _with_stride_in_1x1(self.block, block_args, stride_in_1x1)
        self.in_chans = in_chans
        self.shortcut = shortcut
        self.norm_layer, self.act_layer = norm_layer, act_layer
        placement = _resolve_placement(attn_layer, attn_placement)
        block_attn = attn_layer if placement in ("block", "conv") else None
        self._make_stem(stem, stem_width, in_chans)

        dprs = iter(drop_path_rates(drop_path_rate, sum(layers)))
        in_chs, self.stage_names = stem_width, []
        # Each stage after the first halves the resolution, unless output_stride turns that
        # stride into dilation (the stage's first block keeps the previous stage's dilation).
        stem_stride = 4 if stem == "imagenet" else 1
        plan = list(output_stride_plan([1] + [2] * (len(layers) - 1), output_stride, stem_stride))
        features, reduction, prev_dilation = [stage_info("act1", stem_width, stem_stride // 2 or 1)], stem_stride, 1
        for i, (depth, planes) in enumerate(zip(layers, widths)):
            stage = OrderedDict()
            stage_stride, dilation = plan[i]
            for j in range(depth):
                stage[str(j)] = self._make_block(
                    i, j, in_chs, planes, stride=stage_stride if j == 0 else 1,
                    dilation=prev_dilation if j == 0 else dilation, groups=groups, base_width=base_width,
                    attn_layer=block_attn, attn_kwargs=attn_kwargs, drop_path=next(dprs), **(block_args or {}))
                in_chs = planes * self.block.expansion
            prev_dilation, reduction = dilation, reduction * stage_stride
            features.append(stage_info(f"layer{i + 1}", in_chs, reduction))
            if placement == "stage" and i < len(layers) - 1:
                stage["attn"] = create_attn(attn_layer, in_chs, **(attn_kwargs or {}))
            self.add_module(f"layer{i + 1}", nn.Sequential(stage))
            self.stage_names.append(f"layer{i + 1}")
        self.num_features = in_chs
        self.final_norm = self._make_final_norm(in_chs)
        if not isinstance(self.final_norm, nn.Identity):  # pre-activation nets: the normalised map
            features[-1] = stage_info("final_norm", in_chs, reduction)
        self.feature_info = FeatureInfo(features)
        self._init_head(num_classes, drop_rate)
        self._init_weights(zero_init_last)

    @staticmethod
    def _resolve_block(block: str | type[nn.Module]) -> type[nn.Module]:
        return get_block(block)

    def _make_final_norm(self, channels: int) -> nn.Module:
        return nn.Identity()  # post-activation blocks end normalised and activated already

    def _make_stem(self, stem: str, stem_width: int, in_chans: int) -> None:
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:  # CIFAR: 32x32 inputs are too small to downsample 4x at the start
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = self.norm_layer(stem_width)
        self.act1 = make_act(self.act_layer)

    def _make_block(self, stage: int, index: int, in_chs: int, planes: int, *, stride: int,
                    **kwargs) -> nn.Module:
        out_chs = planes * self.block.expansion
        downsample = create_shortcut(self.shortcut, in_chs, out_chs, stride, self.norm_layer)
        return self.block(in_chs, planes, stride, downsample, norm_layer=self.norm_layer,
                          act_layer=self.act_layer, **kwargs)

    def _init_weights(self, zero_init_last: bool) -> None:
        # torchvision's ResNet init, but attention convs keep their default biases and the
        # classifier its default weights.
        init_weights(self, zero_conv_bias=False, linear_std=None)
        if zero_init_last:  # each block starts as an identity (Goyal et al. 2017)
            for m in self.modules():
                if m is not self and callable(getattr(m, "zero_init_last", None)):
                    m.zero_init_last()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_norm(x)


def _with_stride_in_1x1(block: type[nn.Module], block_args: dict | None, stride_in_1x1: bool) -> dict | None:
    if not stride_in_1x1:
        return block_args
    if "stride_in_1x1" not in inspect.signature(block.__init__).parameters:
        raise ValueError(f"stride_in_1x1 applies to bottleneck blocks; {block.__name__} has no 1x1 to stride")
    return {**(block_args or {}), "stride_in_1x1": True}


def _resolve_placement(attn_layer: str | None, override: str | None) -> str | None:
    default = attn_placement(attn_layer)
    if override is None or default is None:
        return default
    if override not in PLACEMENTS:
        raise ValueError(f"attn_placement must be one of {PLACEMENTS}, got {override!r}")
    if default == "conv":
        raise ValueError(f"attn_layer {attn_layer!r} replaces the block's conv; it has no other placement")
    return override


# ----------------------------------------------------------------------------------------------
# Variants. CIFAR counts are at 10 classes, ImageNet counts at 1000.

IMAGENET_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                   101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
CIFAR_WIDTHS = (16, 32, 64)
_A_SRC = "cnnzoo (the paper's section 4.2 layout; matches akamaster/pytorch_resnet_cifar10)"
_KL_SRC = "cnnzoo (matches kuangliu/pytorch-cifar)"
_CIFAR = dict(family="resnet", paper=PAPER, input_style="cifar", num_classes=10)
_IMAGENET = dict(family="resnet", paper=PAPER, input_style="imagenet", ref_source="torchvision")


def cifar_args(depth: int, **extra) -> dict:
    """The paper's 6n+2-layer CIFAR net: 3x3 stem, 16-32-64 channels, option-A shortcuts."""
    n, rem = divmod(depth - 2, 6)
    if rem:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return dict(block="basic", layers=(n,) * 3, widths=CIFAR_WIDTHS, stem="cifar", stem_width=16,
                shortcut="A", num_classes=10, **extra)


def imagenet_args(depth: int, **extra) -> dict:
    block, layers = IMAGENET_DEPTHS[depth]
    return dict(block=block, layers=layers, **extra)


def wide_cifar_args(depth: int, **extra) -> dict:
    """ImageNet-width ResNets on CIFAR: 3x3 stem of 64, no max-pool (the kuangliu/pytorch-cifar layout)."""
    return dict(imagenet_args(depth), stem="cifar", stem_width=64, num_classes=10, **extra)


@register_model(**_CIFAR, ref_params=269_722, ref_source=_A_SRC)
def resnet20_cifar(**kwargs) -> ResNet:
    """ResNet-20 for CIFAR (section 4.2): 3 stages of 3 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(20), kwargs)


@register_model(**_CIFAR, ref_params=464_154, ref_source=_A_SRC)
def resnet32_cifar(**kwargs) -> ResNet:
    """ResNet-32 for CIFAR (section 4.2): 3 stages of 5 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(32), kwargs)


@register_model(**_CIFAR, ref_params=658_586, ref_source=_A_SRC)
def resnet44_cifar(**kwargs) -> ResNet:
    """ResNet-44 for CIFAR (section 4.2): 3 stages of 7 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(44), kwargs)


@register_model(**_CIFAR, ref_params=853_018, ref_source=_A_SRC)
def resnet56_cifar(**kwargs) -> ResNet:
    """ResNet-56 for CIFAR (section 4.2): 3 stages of 9 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(56), kwargs)


@register_model(**_CIFAR, ref_params=1_727_962, ref_source=_A_SRC)
def resnet110_cifar(**kwargs) -> ResNet:
    """ResNet-110 for CIFAR (section 4.2): 3 stages of 18 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(110), kwargs)


@register_model(**_CIFAR, ref_params=19_421_274, ref_source=_A_SRC)
def resnet1202_cifar(**kwargs) -> ResNet:
    """ResNet-1202 for CIFAR (section 4.2): 3 stages of 200 basic blocks, option-A shortcuts."""
    return build_model(ResNet, cifar_args(1202), kwargs)


@register_model(**_CIFAR, ref_params=11_173_962, ref_source=_KL_SRC)
def resnet18_cifar(**kwargs) -> ResNet:
    """ResNet-18 at ImageNet widths on CIFAR: 3x3 stem of 64, no max-pool, option B."""
    return build_model(ResNet, wide_cifar_args(18), kwargs)


@register_model(**_CIFAR, ref_params=21_282_122, ref_source=_KL_SRC)
def resnet34_cifar(**kwargs) -> ResNet:
    """ResNet-34 at ImageNet widths on CIFAR: 3x3 stem of 64, no max-pool, option B."""
    return build_model(ResNet, wide_cifar_args(34), kwargs)


@register_model(**_CIFAR, ref_params=23_520_842, ref_source=_KL_SRC)
def resnet50_cifar(**kwargs) -> ResNet:
    """ResNet-50 at ImageNet widths on CIFAR: 3x3 stem of 64, no max-pool, option B."""
    return build_model(ResNet, wide_cifar_args(50), kwargs)


@register_model(**_CIFAR, ref_params=42_512_970, ref_source=_KL_SRC)
def resnet101_cifar(**kwargs) -> ResNet:
    """ResNet-101 at ImageNet widths on CIFAR: 3x3 stem of 64, no max-pool, option B."""
    return build_model(ResNet, wide_cifar_args(101), kwargs)


@register_model(**_CIFAR, ref_params=58_156_618, ref_source=_KL_SRC)
def resnet152_cifar(**kwargs) -> ResNet:
    """ResNet-152 at ImageNet widths on CIFAR: 3x3 stem of 64, no max-pool, option B."""
    return build_model(ResNet, wide_cifar_args(152), kwargs)


@register_model(**_IMAGENET, ref_params=11_689_512)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (Table 1), torchvision's layout."""
    return build_model(ResNet, imagenet_args(18), kwargs)


@register_model(**_IMAGENET, ref_params=21_797_672)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (Table 1), torchvision's layout."""
    return build_model(ResNet, imagenet_args(34), kwargs)


@register_model(**_IMAGENET, ref_params=25_557_032)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (Table 1), torchvision's layout."""
    return build_model(ResNet, imagenet_args(50), kwargs)


@register_model(**_IMAGENET, ref_params=44_549_160)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (Table 1), torchvision's layout."""
    return build_model(ResNet, imagenet_args(101), kwargs)


@register_model(**_IMAGENET, ref_params=60_192_808)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (Table 1), torchvision's layout."""
    return build_model(ResNet, imagenet_args(152), kwargs)


_V1 = dict(_IMAGENET, ref_source="torchvision (the same weights; the stride moves, not a parameter)")


@register_model(**_V1, ref_params=25_557_032)
def resnet50_v1(**kwargs) -> ResNet:
    """ResNet-50 as the paper's Caffe model: stride on the first 1x1 of each bottleneck (RF 483, 3.8 GMACs)."""
    return build_model(ResNet, imagenet_args(50, stride_in_1x1=True), kwargs)


@register_model(**_V1, ref_params=44_549_160)
def resnet101_v1(**kwargs) -> ResNet:
    """ResNet-101 as the paper's Caffe model: stride on the first 1x1 (RF 1027, 7.6 GMACs)."""
    return build_model(ResNet, imagenet_args(101, stride_in_1x1=True), kwargs)


@register_model(**_V1, ref_params=60_192_808)
def resnet152_v1(**kwargs) -> ResNet:
    """ResNet-152 as the paper's Caffe model: stride on the first 1x1 (RF 1507, 11.3 GMACs)."""
    return build_model(ResNet, imagenet_args(152, stride_in_1x1=True), kwargs)


def resnext29_args(groups: int, base_width: int, **extra) -> dict:
    """ResNeXt-29 for CIFAR (section 5.3): 3x3 stem of 64, 3 stages of 3 bottlenecks, outputs 256-512-1024."""
    return dict(block="bottleneck", layers=(3, 3, 3), widths=(64, 128, 256), stem="cifar", stem_width=64,
                groups=groups, base_width=base_width, num_classes=10, **extra)


_RX_CIFAR = dict(family="resnext", paper=RESNEXT_PAPER, input_style="cifar", num_classes=10)


@register_model(**_RX_CIFAR, ref_params=34_426_698, ref_source="the paper's CIFAR table (34.4M)")
def resnext29_8x64d_cifar(**kwargs) -> ResNet:
    """ResNeXt-29, cardinality 8, bottleneck width 64d."""
    return build_model(ResNet, resnext29_args(8, 64), kwargs)


@register_model(**_RX_CIFAR, ref_params=68_155_210, ref_source="the paper's CIFAR table (68.1M)")
def resnext29_16x64d_cifar(**kwargs) -> ResNet:
    """ResNeXt-29, cardinality 16, bottleneck width 64d."""
    return build_model(ResNet, resnext29_args(16, 64), kwargs)


@register_model(**_RX_CIFAR, ref_params=4_775_754, ref_source="cnnzoo (the paper's ResNeXt-29 layout)")
def resnext29_32x4d_cifar(**kwargs) -> ResNet:
    """ResNeXt-29, cardinality 32, bottleneck width 4d (the paper's template at 32x4d)."""
    return build_model(ResNet, resnext29_args(32, 4), kwargs)


@register_model(family="resnext", paper=RESNEXT_PAPER, input_style="imagenet", ref_params=25_028_904,
                ref_source="torchvision")
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 (32x4d), Table 1 of the paper."""
    return build_model(ResNet, imagenet_args(50, groups=32, base_width=4), kwargs)


@register_model(family="resnext", paper=RESNEXT_PAPER, input_style="imagenet", ref_params=88_791_336,
                ref_source="torchvision")
def resnext101_32x8d(**kwargs) -> ResNet:
    """ResNeXt-101 (32x8d)."""
    return build_model(ResNet, imagenet_args(101, groups=32, base_width=8), kwargs)
