"""MobileNet V1 (Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto & Adam 2017,
"MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
arXiv 1704.04861).

Table 1 of the paper: a full 3x3 convolution (32 maps, stride 2), then 13 depthwise-separable
blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), global average pooling and
one fully connected layer. Two global hyper-parameters trade accuracy for cost:
- the width multiplier alpha (`width_mult`) thins every layer: channels become alpha * C,
  rounded to a multiple of 8 as the TensorFlow and timm implementations do (for the paper's
  alphas 0.25/0.5/0.75/1.0 this equals int(alpha * C));
- the resolution multiplier rho (`resolution_mult`) shrinks the input: the default input
  size becomes rho * 224 (the paper's 224/192/160/128 are rho = 1, 6/7, 5/7, 4/7). It does
  not change the network, only `default_cfg["input_size"]`, which `summary` and the data
  pipeline use. Both reduce the multiply-adds of a separable layer to
  D_K^2 * aM * (rD_F)^2 + aM * aN * (rD_F)^2 (equation 7 of the paper).

Differences from the paper, kept on purpose: the last depthwise layer has stride 1 (Table 1
lists it with stride 2 but the feature map is already 7x7; every implementation uses 1).
`act_layer="relu6"` (or `nn.ReLU6`) reproduces TF-slim's (and timm's) MobileNet V1, whose
published weights were trained with ReLU6; the paper's ReLU is the default, and the weights
catalogue builds the ReLU6 model for timm's weights.
`attn_layer="se"` puts a squeeze-excite block after every depthwise-separable block, as in
SE-MobileNet (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507, Table 3:
4.2M -> 4.7M parameters); `se_mobilenet_v1` registers it. The CIFAR variant (`mobilenet_v1_cifar`) has a stride-1 stem, as the common CIFAR port
(kuangliu/pytorch-cifar), so a 32x32 image ends at 2x2.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvNormAct, DepthwiseSeparableConv, make_divisible
from ..layers.attention import create_attn
from ..layers.conv import LayerFactory, get_act_layer
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path
from .resnet_attn import SE_PAPER

PAPER = Paper(
    "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications", 2017,
    "1704.04861", "Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam",
)


# (output channels, stride) of the 13 depthwise-separable blocks, Table 1 of the paper.
IMAGENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def scaled_input_size(in_chans: int, base_size: int, resolution_mult: float) -> tuple[int, int, int]:
    """The input size rho * base, the paper's resolution multiplier (rho=1 gives the base)."""
    if not 0 < resolution_mult <= 1:
        raise ValueError(f"resolution_mult must be in (0, 1], got {resolution_mult}")
    side = int(round(base_size * resolution_mult))
    return (in_chans, side, side)


class MobileNetV1(ZooModel):
    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        resolution_mult: float = 1.0,
        base_size: int = 224,
        stem_chs: int = 32,
        stem_stride: int = 2,
        blocks: tuple[tuple[int, int], ...] = IMAGENET_BLOCKS,
        drop_rate: float = 0.0,
        act_layer: str | LayerFactory = nn.ReLU,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
    ):
        super().__init__()
        act_layer = get_act_layer(act_layer)
        self.in_chans = in_chans
        self.width_mult = width_mult
        chs = make_divisible(stem_chs * width_mult)
        self.stem = ConvNormAct(in_chans, chs, 3, stride=stem_stride, act_layer=act_layer)
        layers = []
        for out_chs, stride in blocks:
            out_chs = make_divisible(out_chs * width_mult)
            block = DepthwiseSeparableConv(chs, out_chs, 3, stride=stride, act_layer=act_layer)
            if attn_layer:  # SE-MobileNet: the block's output recalibrated (keys blocks.N.attn.*)
                block.add_module("attn", create_attn(attn_layer, out_chs, **(attn_kwargs or {})))
            layers.append(block)
            chs = out_chs
        self.blocks = nn.Sequential(*layers)
        self.num_features = chs
        self.feature_info = chain_stages([("stem", self.stem), *children_path(self.blocks, "blocks.")], in_chans)
        self._init_head(num_classes, drop_rate)
        self.cfg_overrides = dict(
            input_size=scaled_input_size(in_chans, base_size, resolution_mult),
            width_mult=width_mult, resolution_mult=resolution_mult, act_layer=act_layer.__name__,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


def _v1(alpha: float, **overrides):
    """Registry metadata shared by the ImageNet variants."""
    return register_model(
        family="mobilenet_v1", paper=PAPER, input_style="imagenet",
        details=dict(width_mult=alpha, resolution_mult=1.0),
        notes=f"width multiplier alpha={alpha}; resolution_mult=rho gives a rho*224 input", **overrides,
    )


# timm's mobilenetv1_100 is the reference at alpha=1 (Keras' MobileNet has the same trainable
# count). The thinner ones are our count of the same layout (the paper: 2.6M, 1.3M, 0.5M).
@_v1(1.0, ref_params=4_231_976, ref_source="timm mobilenetv1_100")
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet V1 1.0-224."""
    return build_model(MobileNetV1, dict(width_mult=1.0), kwargs)


@_v1(0.75, ref_params=2_585_560, ref_source="cnnzoo (paper layout, alpha=0.75)")
def mobilenet_v1_075(**kwargs) -> MobileNetV1:
    """MobileNet V1 0.75-224."""
    return build_model(MobileNetV1, dict(width_mult=0.75), kwargs)


@_v1(0.5, ref_params=1_331_592, ref_source="cnnzoo (paper layout, alpha=0.5)")
def mobilenet_v1_050(**kwargs) -> MobileNetV1:
    """MobileNet V1 0.5-224."""
    return build_model(MobileNetV1, dict(width_mult=0.5), kwargs)


@_v1(0.25, ref_params=470_072, ref_source="cnnzoo (paper layout, alpha=0.25)")
def mobilenet_v1_025(**kwargs) -> MobileNetV1:
    """MobileNet V1 0.25-224."""
    return build_model(MobileNetV1, dict(width_mult=0.25), kwargs)


@register_model(family="senet", paper=SE_PAPER, input_style="imagenet", ref_params=4_718_044,
                ref_source="cnnzoo (the SE paper's Table 3: SE-MobileNet 4.7M)",
                details=dict(width_mult=1.0, resolution_mult=1.0))
def se_mobilenet_v1(**kwargs) -> MobileNetV1:
    """SE-MobileNet: MobileNet V1 1.0-224 with an SE block (r=16) after every separable block."""
    return build_model(MobileNetV1, dict(attn_layer="se"), kwargs)


@register_model(family="mobilenet_v1", paper=PAPER, input_style="cifar", num_classes=10,
                ref_params=3_217_226, ref_source="kuangliu/pytorch-cifar MobileNet",
                details=dict(width_mult=1.0, resolution_mult=1.0),
                notes="stride-1 stem; 32x32 ends at 2x2")
def mobilenet_v1_cifar(**kwargs) -> MobileNetV1:
    """MobileNet V1 for 32x32 images."""
    return build_model(MobileNetV1, dict(num_classes=10, stem_stride=1, base_size=32), kwargs)
