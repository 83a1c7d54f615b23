"""MobileNet V2 (Sandler, Howard, Zhu, Zhmoginov & Chen 2018, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", arXiv 1801.04381).

Table 2 of the paper: a 3x3 stem convolution (32 maps, stride 2), 17 inverted residual
blocks in 7 stages given as (expansion t, channels c, repeats n, first stride s), a 1x1
convolution to 1280 maps, average pooling and a linear classifier. Each block expands by t
with a 1x1 convolution, filters with a depthwise 3x3, and projects back with a *linear* 1x1
convolution (no activation after it); ReLU6 everywhere else. The shortcut adds the block's
input only when the stride is 1 and the channel count is unchanged.

The width multiplier scales every channel count except the last 1280 (kept for
multipliers below 1, as the paper does), rounded to multiples of 8 as torchvision does.
`mobilenet_v2_cifar` uses a stride-1 stem and a stride-1 second stage (the common CIFAR
port), so a 32x32 image ends at 4x4; its blocks keep the paper's shortcut rule.

`attn_layer` ("se", "cbam", ... from `layers.attention`) recalibrates each block's expanded
depthwise output, where MnasNet and MobileNet V3 put squeeze-excite (the SE paper's rule of
gating a module's transformation before it is merged, here before the linear projection);
not in the MobileNetV2 paper, so no variant is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ..layers import ConvNormAct, make_divisible
from ..layers.attention import create_attn
from ..layers.drop import drop_path_rates
from ..layers.inverted_residual import InvertedResidual
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path

PAPER = Paper(
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018, "1801.04381",
    "Sandler, Howard, Zhu, Zhmoginov, Chen",
)

# (expansion t, output channels c, repeats n, stride of the first block s), Table 2.
IMAGENET_STAGES = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
CIFAR_STAGES = IMAGENET_STAGES[:1] + ((6, 24, 2, 1),) + IMAGENET_STAGES[2:]


class MobileNetV2(ZooModel):
    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        stages: tuple[tuple[int, int, int, int], ...] = IMAGENET_STAGES,
        head_chs: int = 1280,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
    ):
        super().__init__()
        self.in_chans = in_chans
        self.width_mult = width_mult
        attn = _attn_factory(attn_layer, attn_kwargs)
        chs = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(in_chans, chs, 3, stride=stem_stride, act_layer=nn.ReLU6)
        dpr = iter(drop_path_rates(drop_path_rate, sum(n for _, _, n, _ in stages)))
        blocks = []
        for t, c, n, s in stages:
            out_chs = make_divisible(c * width_mult)
            for i in range(n):
                # torchvision rounds the expanded width, not to a multiple of 8.
                mid_chs = int(round(chs * t))
                blocks.append(InvertedResidual(chs, out_chs, mid_chs=mid_chs, stride=s if i == 0 else 1,
                                               act_layer=nn.ReLU6, attn_layer=attn, drop_path_rate=next(dpr)))
                chs = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.num_features = make_divisible(head_chs * max(1.0, width_mult))
        self.conv_head = ConvNormAct(chs, self.num_features, 1, act_layer=nn.ReLU6)
        self.feature_info = chain_stages(
            [("stem", self.stem), *children_path(self.blocks, "blocks."), ("conv_head", self.conv_head)], in_chans)
        self._init_head(num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.stem(x)))


def _attn_factory(attn_layer: str | None, attn_kwargs: dict | None) -> Callable[[int], nn.Module] | None:
    """What InvertedResidual calls with the expanded width; None without attention."""
    return partial(create_attn, attn_layer, **(attn_kwargs or {})) if attn_layer else None


_v2 = partial(register_model, family="mobilenet_v2", paper=PAPER)


@_v2(input_style="imagenet", ref_params=3_504_872, ref_source="torchvision", details=dict(width_mult=1.0))
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet V2 1.0 (pass width_mult for the thinner or wider ones)."""
    return build_model(MobileNetV2, dict(width_mult=1.0), kwargs)


@_v2(input_style="cifar", num_classes=10, ref_params=2_236_682,
     ref_source="cnnzoo (torchvision layout, CIFAR strides)", details=dict(width_mult=1.0),
     notes="stride-1 stem and second stage; 32x32 ends at 4x4")
def mobilenet_v2_cifar(**kwargs) -> MobileNetV2:
    """MobileNet V2 for 32x32 images."""
    return build_model(MobileNetV2, dict(num_classes=10, stem_stride=1, stages=CIFAR_STAGES), kwargs)
