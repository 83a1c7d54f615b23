"""MobileNet V3 (Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le &
Adam 2019, "Searching for MobileNetV3", arXiv 1905.02244).

The Large and Small networks of Tables 1 and 2: MobileNet V2's inverted residual blocks
("bneck") with the kernel size, expansion width, squeeze-excite and activation of each block
found by platform-aware search. Squeeze-excite squeezes to a quarter of the expanded width
(rounded to a multiple of 8) and gates with the hard sigmoid relu6(x + 3) / 6; the later
layers use hard-swish x * relu6(x + 3) / 6, a cheap stand-in for swish. The head is the
paper's "efficient last stage": a 1x1 convolution to 960 (Large) or 576 (Small) maps with
hard-swish, global pooling, then a 1x1 layer to 1280 / 1024 features with hard-swish (applied
after pooling, so it costs little), dropout and the classifier.

This is the torchvision layout (BN eps 1e-3, momentum 0.01, as the TensorFlow models); the
width multiplier scales every channel count including the 1280 / 1024 head, rounded to
multiples of 8. CIFAR variants keep the tables but drop the stride of the stem and of the
first strided block, so a 32x32 image ends at 4x4.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from ..layers import ConvNormAct, SqueezeExcite, make_divisible
from ..layers.drop import drop_path_rates
from ..layers.head import linear_or_identity
from ..layers.inverted_residual import InvertedResidual
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper(
    "Searching for MobileNetV3", 2019, "1905.02244",
    "Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam",
)


class Bneck(NamedTuple):
    """One row of Table 1/2: kernel, expanded width, output width, SE, activation, stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    act: str  # "RE" (ReLU) or "HS" (hard-swish), the paper's NL column
    stride: int


LARGE = (
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),
    Bneck(5, 672, 160, True, "HS", 2),
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),
)
SMALL = (
    Bneck(3, 16, 16, True, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 2),
    Bneck(3, 88, 24, False, "RE", 1),
    Bneck(5, 96, 40, True, "HS", 2),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 120, 48, True, "HS", 1),
    Bneck(5, 144, 48, True, "HS", 1),
    Bneck(5, 288, 96, True, "HS", 2),
    Bneck(5, 576, 96, True, "HS", 1),
    Bneck(5, 576, 96, True, "HS", 1),
)
_ACTS = {"RE": nn.ReLU, "HS": nn.Hardswish}
_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


def cifar_table(table: tuple[Bneck, ...]) -> tuple[Bneck, ...]:
    """The table with its first strided block at stride 1 (for 32x32 inputs)."""
    first = next(i for i, row in enumerate(table) if row.stride == 2)
    return table[:first] + (table[first]._replace(stride=1),) + table[first + 1:]


def _se_layer(channels: int) -> nn.Module:
    return SqueezeExcite(channels, rd_channels=make_divisible(channels // 4, 8), gate_layer=nn.Hardsigmoid)


class MobileNetV3(ZooModel):
    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        table: tuple[Bneck, ...] = LARGE,
        head_chs: int = 1280,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.in_chans = in_chans
        self.width_mult = width_mult
        scale = partial(_scaled, width_mult=width_mult)
        chs = scale(16)
        self.stem = ConvNormAct(in_chans, chs, 3, stride=stem_stride, norm_layer=_NORM, act_layer=nn.Hardswish)
        dpr = iter(drop_path_rates(drop_path_rate, len(table)))
        blocks = []
        for row in table:
            blocks.append(InvertedResidual(
                chs, scale(row.out), mid_chs=scale(row.exp), kernel_size=row.kernel, stride=row.stride,
                act_layer=_ACTS[row.act], norm_layer=_NORM, attn_layer=_se_layer if row.se else None,
                drop_path_rate=next(dpr),
            ))
            chs = scale(row.out)
        self.blocks = nn.Sequential(*blocks)
        self.head_in_chs = 6 * chs  # the paper's last 1x1 expands 6x like a bottleneck
        self.conv_last = ConvNormAct(chs, self.head_in_chs, 1, norm_layer=_NORM, act_layer=nn.Hardswish)
        self.feature_info = chain_stages(
            [("stem", self.stem), *children_path(self.blocks, "blocks."), ("conv_last", self.conv_last)], in_chans)
        self.num_features = scale(head_chs)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Linear(self.head_in_chs, self.num_features)
        self.head_act = nn.Hardswish()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.head_act(self.conv_head(self.global_pool(x).flatten(1))))
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = linear_or_identity(self.num_features, num_classes)
        self._set_num_classes(num_classes)


def _scaled(chs: int, width_mult: float) -> int:
    return make_divisible(chs * width_mult, 8)


_v3 = partial(register_model, family="mobilenet_v3", paper=PAPER)


@_v3(input_style="imagenet", ref_params=5_483_032, ref_source="torchvision", details=dict(width_mult=1.0))
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNet V3-Large 1.0 (Table 1)."""
    return build_model(MobileNetV3, dict(table=LARGE, head_chs=1280), kwargs)


@_v3(input_style="imagenet", ref_params=2_542_856, ref_source="torchvision", details=dict(width_mult=1.0))
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNet V3-Small 1.0 (Table 2)."""
    return build_model(MobileNetV3, dict(table=SMALL, head_chs=1024), kwargs)


@_v3(input_style="cifar", num_classes=10, ref_params=4_214_842,
     ref_source="cnnzoo (torchvision layout, CIFAR strides)", details=dict(width_mult=1.0),
     notes="stride-1 stem and first strided block; 32x32 ends at 4x4")
def mobilenet_v3_large_cifar(**kwargs) -> MobileNetV3:
    """MobileNet V3-Large for 32x32 images."""
    return build_model(MobileNetV3, dict(num_classes=10, table=cifar_table(LARGE), head_chs=1280, stem_stride=1),
                       kwargs)


@_v3(input_style="cifar", num_classes=10, ref_params=1_528_106,
     ref_source="cnnzoo (torchvision layout, CIFAR strides)", details=dict(width_mult=1.0),
     notes="stride-1 stem and first strided block; 32x32 ends at 4x4")
def mobilenet_v3_small_cifar(**kwargs) -> MobileNetV3:
    """MobileNet V3-Small for 32x32 images."""
    return build_model(MobileNetV3, dict(num_classes=10, table=cifar_table(SMALL), head_chs=1024, stem_stride=1),
                       kwargs)
