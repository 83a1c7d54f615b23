"""Inception v4 and Inception-ResNet v1/v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2017,
"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
arXiv 1602.07261).

Inception v4 (Figure 9): the stem of Figure 3 (3x3 convolutions, then three parallel
conv/pool splits), 4 Inception-A, Reduction-A, 7 Inception-B, Reduction-B, 3 Inception-C,
average pooling, dropout (keep 0.8) and a linear layer. It equals TF-slim's and timm's
network: 42,679,816 params at 1000 classes.

Inception-ResNet (Figure 15): Inception-A/B/C blocks whose concatenated towers are projected
by a linear 1x1 convolution and added to the input, scaled by 0.17 / 0.10 / 0.20 (section 3.3:
scaling residuals by 0.1-0.3 keeps the wide nets from dying early in training).
- v1 follows the paper: stem of Figure 14, 5 x A (Fig. 10), Reduction-A with (k, l, m, n) =
  (192, 192, 256, 384), 10 x B (Fig. 11), Reduction-B (Fig. 12), 5 x C (Fig. 13); no library
  reference, 22,756,328 params at 1000 classes.
- v2 is TF-slim's / timm's network (55,843,464 params), which differs from the paper's
  Figure 15: its stem is v3's plus a 35x35 Inception module (320 channels, where the paper
  uses the v4 stem's 384), it has 10 / 20 / 10 blocks (the paper's figure says 5 / 10 / 5),
  and a final 1x1 conv to 1536 channels. The paper's own widths do not add up (its
  Inception-ResNet-B projects to 1,154 channels and -C to 2,048, where the reductions
  produce 1,152 and 2,144), which is why the TF-slim network is the de-facto reference.
  `layers=(5, 10, 5)` gives the paper's depth (33,782,664 params).
As in TF-slim, the last C block has no residual scaling and no ReLU.

SE-Inception-ResNet-v2 (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507,
Table 2: 11.75 -> 11.76 GFLOPs) puts an SE block (r = 16) on every residual block's projected
branch before the sum, the paper's placement for residual units (Fig. 3); `attn_layer` does the
same with any of cnnzoo's attention blocks. The paper gives no parameter count: 64,387,444 here.

The CIFAR variants keep every module and width; their stems run at stride 1 with "same"
padding and no max-pools, so the blocks see 32, 15 and 7 pixel grids.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..layers.inception import (
    ConvFactory, InceptionResidual, bn_conv, conv_stem, inception_resnet_a, inception_resnet_b, inception_resnet_c,
    inception_v3_a, inception_v4_a, inception_v4_b, inception_v4_c, inception_v4_stem_a, inception_v4_stem_b,
    inception_v4_stem_c, reduction_a, reduction_b, reduction_b_residual,
)
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path
from .resnet_attn import SE_PAPER

PAPER = Paper("Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning", 2017,
              "1602.07261", "Szegedy, Ioffe, Vanhoucke, Alemi")

STEMS = ("imagenet", "cifar")
# Conv specs (out, kernel, stride, padding; padding 0 = "valid") and "M" = 3x3/2 max-pool.
V4_STEM = ((32, 3, 2, 0), (32, 3, 1, 0), (64, 3))
IR_V1_STEM = ((32, 3, 2, 0), (32, 3, 1, 0), (64, 3), "M", (80, 1, 1, 0), (192, 3, 1, 0), (256, 3, 2, 0))
IR_V2_STEM = ((32, 3, 2, 0), (32, 3, 1, 0), (64, 3), "M", (80, 1, 1, 0), (192, 3, 1, 0), "M")


def _stages(features: nn.Sequential, in_chans: int, reducing: tuple[str, ...]):
    """The declared stages; the branching modules named in `reducing` halve the resolution."""
    return chain_stages(children_path(features, "features.", expand=("stem",)), in_chans,
                        strides={f"features.{name}": 2 for name in reducing})


def _check_stem(stem: str) -> bool:
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    return stem == "cifar"


def _repeat(layers: "OrderedDict[str, nn.Module]", prefix: str, n: int, make) -> None:
    for i in range(1, n + 1):
        layers[f"{prefix}{i}"] = make(i)


class InceptionV4(ZooModel):
    """Inception v4: `features` (stem, mixed_3a-5a, inception_a/b/c blocks, reductions), pool, linear."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 layers: Sequence[int] = (4, 7, 3), stem: str = "imagenet"):
        super().__init__()
        cifar = _check_stem(stem)
        conv = bn_conv()
        self.in_chans = in_chans
        f = OrderedDict(stem=conv_stem(in_chans, conv, V4_STEM, cifar))
        f["mixed_3a"] = inception_v4_stem_a(64, conv, cifar)
        f["mixed_4a"] = inception_v4_stem_b(160, conv, cifar)
        f["mixed_5a"] = inception_v4_stem_c(192, conv, cifar)
        _repeat(f, "inception_a", layers[0], lambda i: inception_v4_a(384, conv))
        f["reduction_a"] = reduction_a(384, conv, k=192, l=224, m=256, n=384)
        _repeat(f, "inception_b", layers[1], lambda i: inception_v4_b(1024, conv))
        f["reduction_b"] = reduction_b(1024, conv, a=(192, 192), b=(256, 256, 320, 320))
        _repeat(f, "inception_c", layers[2], lambda i: inception_v4_c(1536, conv))
        self.features = nn.Sequential(f)
        self.num_features = 1536
        reducing = ("reduction_a", "reduction_b") + (() if cifar else ("mixed_3a", "mixed_5a"))
        self.feature_info = _stages(self.features, in_chans, reducing)
        self._init_head(num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _ir_v1(conv: ConvFactory, in_chans: int, cifar: bool, layers: Sequence[int],
           scales: Sequence[float]) -> "OrderedDict[str, nn.Module]":
    f = OrderedDict(stem=conv_stem(in_chans, conv, IR_V1_STEM, cifar))
    _repeat(f, "block_a", layers[0], lambda i: inception_resnet_a(256, conv, (32, 32), scales[0]))
    f["reduction_a"] = reduction_a(256, conv, k=192, l=192, m=256, n=384)
    _repeat(f, "block_b", layers[1], lambda i: inception_resnet_b(896, conv, 128, (128, 128, 128), scales[1]))
    f["reduction_b"] = reduction_b_residual(896, conv, a=(256, 384), b=(256, 256), c=(256, 256, 256))
    _repeat(f, "block_c", layers[2], lambda i: inception_resnet_c(
        1792, conv, 192, (192, 192, 192), *_last_c(i, layers[2], scales[2])))
    return f


def _ir_v2(conv: ConvFactory, in_chans: int, cifar: bool, layers: Sequence[int],
           scales: Sequence[float]) -> "OrderedDict[str, nn.Module]":
    f = OrderedDict(stem=conv_stem(in_chans, conv, IR_V2_STEM, cifar))
    f["mixed_5b"] = inception_v3_a(192, conv, pool_proj=64, c1=96, count_include_pad=False)
    _repeat(f, "block_a", layers[0], lambda i: inception_resnet_a(320, conv, (48, 64), scales[0]))
    f["reduction_a"] = reduction_a(320, conv, k=256, l=256, m=384, n=384)
    _repeat(f, "block_b", layers[1], lambda i: inception_resnet_b(1088, conv, 192, (128, 160, 192), scales[1]))
    f["reduction_b"] = reduction_b_residual(1088, conv, a=(256, 384), b=(256, 288), c=(256, 288, 320))
    _repeat(f, "block_c", layers[2], lambda i: inception_resnet_c(
        2080, conv, 192, (192, 224, 256), *_last_c(i, layers[2], scales[2])))
    f["conv_7b"] = conv(2080, 1536, 1)
    return f


def _last_c(i: int, n: int, scale: float) -> tuple[float, bool]:
    # TF-slim ends with an unscaled C block without ReLU, feeding the pooled features directly.
    return (1.0, False) if i == n else (scale, True)


IR_VERSIONS = {1: (_ir_v1, (5, 10, 5), 1792), 2: (_ir_v2, (10, 20, 10), 1536)}


class InceptionResNet(ZooModel):
    """Inception-ResNet v1/v2: `features` (stem, residual blocks A/B/C, reductions), pool, linear.

    `attn_layer` (for example "se") gates every residual block's branch before the sum.
    """

    def __init__(self, *, version: int = 2, layers: Sequence[int] | None = None,
                 scales: Sequence[float] = (0.17, 0.10, 0.20), num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.2, stem: str = "imagenet", attn_layer: str | None = None,
                 attn_kwargs: dict | None = None):
        super().__init__()
        if version not in IR_VERSIONS:
            raise ValueError(f"version must be one of {tuple(IR_VERSIONS)}, got {version!r}")
        build, default_layers, self.num_features = IR_VERSIONS[version]
        self.in_chans = in_chans
        self.version = version
        self.features = nn.Sequential(build(bn_conv(), in_chans, _check_stem(stem), layers or default_layers, scales))
        if attn_layer:  # listed first: adding a gate adds a child module
            for block in [m for m in self.features.modules() if isinstance(m, InceptionResidual)]:
                block.add_attn(attn_layer, **(attn_kwargs or {}))
        self.feature_info = _stages(self.features, in_chans, ("reduction_a", "reduction_b"))
        self._init_head(num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_IMAGENET_MIN = dict(min_input_size=(3, 75, 75))  # the stem's valid convolutions
_CIFAR_SRC = "cnnzoo (paper modules, stride-1 stem)"


@register_model(family="inception_v4", paper=PAPER, input_style="imagenet", input_size=(3, 299, 299),
                ref_params=42_679_816, ref_source="timm", **_IMAGENET_MIN)
def inception_v4(**kwargs) -> InceptionV4:
    """Inception v4 (paper Figure 9), 299x299 input."""
    return build_model(InceptionV4, dict(), kwargs)


@register_model(family="inception_v4", paper=PAPER, input_style="cifar", num_classes=10, ref_params=41_158_186,
                ref_source=_CIFAR_SRC)
def inception_v4_cifar(**kwargs) -> InceptionV4:
    """Inception v4 for 32x32 inputs: every block and width, a stride-1 stem."""
    return build_model(InceptionV4, dict(stem="cifar", num_classes=10), kwargs)


@register_model(family="inception_resnet", paper=PAPER, input_style="imagenet", input_size=(3, 299, 299),
                ref_params=22_756_328, ref_source="cnnzoo (paper Figures 10-14)", **_IMAGENET_MIN)
def inception_resnet_v1(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v1 as in the paper (5 A, 10 B, 5 C blocks), 299x299 input."""
    return build_model(InceptionResNet, dict(version=1), kwargs)


@register_model(family="inception_resnet", paper=PAPER, input_style="cifar", num_classes=10, ref_params=20_981_258,
                ref_source=_CIFAR_SRC)
def inception_resnet_v1_cifar(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v1 for 32x32 inputs: a stride-1 stem."""
    return build_model(InceptionResNet, dict(version=1, stem="cifar", num_classes=10), kwargs)


@register_model(family="inception_resnet", paper=PAPER, input_style="imagenet", input_size=(3, 299, 299),
                ref_params=55_843_464, ref_source="timm", **_IMAGENET_MIN,
                notes="TF-slim/timm layout (10/20/10 blocks); layers=(5, 10, 5) gives the paper's depth")
def inception_resnet_v2(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v2 (TF-slim / timm layout), 299x299 input."""
    return build_model(InceptionResNet, dict(version=2), kwargs)


@register_model(family="inception_resnet", paper=PAPER, input_style="cifar", num_classes=10, ref_params=54_321_834,
                ref_source=_CIFAR_SRC)
def inception_resnet_v2_cifar(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v2 for 32x32 inputs: a stride-1 stem."""
    return build_model(InceptionResNet, dict(version=2, stem="cifar", num_classes=10), kwargs)


@register_model(family="senet", paper=SE_PAPER, input_style="imagenet", input_size=(3, 299, 299),
                ref_params=64_387_444, ref_source="cnnzoo (Inception-ResNet-v2's count plus one SE block, "
                "r=16, per residual block)", **_IMAGENET_MIN)
def se_inception_resnet_v2(**kwargs) -> InceptionResNet:
    """SE-Inception-ResNet-v2 (the SE paper's Table 2): SE on every residual block's branch."""
    return build_model(InceptionResNet, dict(version=2, attn_layer="se"), kwargs)
