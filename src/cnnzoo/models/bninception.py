"""BN-Inception, a.k.a. Inception v2 (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating
Deep Network Training by Reducing Internal Covariate Shift", arXiv 1502.03167, Appendix
Figure 5).

GoogLeNet with batch norm after every convolution, each 5x5 convolution replaced by two 3x3
ones, three 28x28 modules instead of two, average or max pooling inside the modules as the
table lists, and no pooling layers between stages: modules 3c and 4e downsample with stride-2
convolutions and a max-pool whose output passes through unprojected. No dropout (the paper
removed it) and no auxiliary heads. The first layer is the paper's separable 7x7 convolution
with depth multiplier 8 (`separable_stem=False` gives a plain 7x7, as in the Caffe port).

No library reference exists; the count (11,278,528 params at 1000 classes with the separable
stem) follows the per-tower widths of Figure 5. Those columns sum to 608 channels after 4c
and 4d and to 1,056 after 4e, where the figure's output column says 576 and 1,024; like the
Caffe re-implementations we take the per-tower columns. The paper's "13.6M parameters" does not
follow from its table. `attn_layer="se"` puts a squeeze-excite block on every module's output
(SE-BN-Inception of Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507,
Fig. 2 and Table 2; reduction 16), registered as `se_bninception`. The CIFAR variant replaces the 7x7/2 stem and its max-pools with
3x3 convolutions at stride 1, so the modules see 32, 16 and 8 pixel grids.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from ..layers.conv import DepthwiseSeparableConv
from ..layers.inception import ConvFactory, bn_conv, bn_inception_module
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import chain_stages, children_path
from .resnet_attn import SE_PAPER

PAPER = Paper("Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
              2015, "1502.03167", "Ioffe, Szegedy")


STEMS = ("imagenet", "cifar")

# Figure 5: #1x1, (#3x3 reduce, #3x3), (double #3x3 reduce, double #3x3), pool, pool proj, stride.
MODULES = (
    ("inception3a", 64, (64, 64), (64, 96), "avg", 32, 1),
    ("inception3b", 64, (64, 96), (64, 96), "avg", 64, 1),
    ("inception3c", 0, (128, 160), (64, 96), "max", 0, 2),
    ("inception4a", 224, (64, 96), (96, 128), "avg", 128, 1),
    ("inception4b", 192, (96, 128), (96, 128), "avg", 128, 1),
    ("inception4c", 160, (128, 160), (128, 160), "avg", 128, 1),
    ("inception4d", 96, (128, 192), (160, 192), "avg", 128, 1),
    ("inception4e", 0, (128, 192), (192, 256), "max", 0, 2),
    ("inception5a", 352, (192, 320), (160, 224), "avg", 128, 1),
    ("inception5b", 352, (192, 320), (192, 224), "max", 128, 1),
)


class BNInception(ZooModel):
    """BN-Inception: stem, `features` (modules 3a-5b), global average pool, linear."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 stem: str = "imagenet", separable_stem: bool = True, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        conv = bn_conv()
        self.in_chans = in_chans
        layers = _stem(in_chans, conv, stem, separable_stem)
        chs = 192
        for name, *spec in MODULES:
            layers[name] = bn_inception_module(chs, conv, *spec).add_attn(attn_layer, **(attn_kwargs or {}))
            chs = layers[name].out_chs
        self.features = nn.Sequential(layers)
        self.num_features = chs
        # inception3c and inception4e reduce by their stride-2 towers and max-pool
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans,
                                         strides=dict.fromkeys(("features.inception3c", "features.inception4e"), 2))
        self._init_head(num_classes, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _stem(in_chans: int, conv: ConvFactory, stem: str, separable: bool) -> "OrderedDict[str, nn.Module]":
    layers = OrderedDict()
    if stem == "cifar":  # 32x32 images are too small for the 4x early downsampling
        layers["conv1"] = conv(in_chans, 64, 3)
    elif separable:
        layers["conv1"] = DepthwiseSeparableConv(
            in_chans, 64, 7, stride=2, depth_multiplier=8, norm_act_between=False,
            norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    else:
        layers["conv1"] = conv(in_chans, 64, 7, 2)
    if stem == "imagenet":
        layers["pool1"] = nn.MaxPool2d(3, 2, ceil_mode=True)
    layers["conv2_reduce"] = conv(64, 64, 1)
    layers["conv2"] = conv(64, 192, 3)
    if stem == "imagenet":
        layers["pool2"] = nn.MaxPool2d(3, 2, ceil_mode=True)
    return layers


@register_model(family="bninception", paper=PAPER, input_style="imagenet", ref_params=11_278_528,
                ref_source="cnnzoo (paper Figure 5, per-tower widths)",
                notes="Inception v2; separable 7x7 stem (depth multiplier 8); "
                      "11,285,224 params with separable_stem=False")
def bninception(**kwargs) -> BNInception:
    """BN-Inception (Inception v2) as in the batch-norm paper's appendix."""
    return build_model(BNInception, dict(), kwargs)


@register_model(family="senet", paper=SE_PAPER, input_style="imagenet", ref_params=11_924_926,
                ref_source="cnnzoo (BN-Inception's count plus one SE block, r=16, per module)")
def se_bninception(**kwargs) -> BNInception:
    """SE-BN-Inception (the SE paper's Table 2): an SE block on every Inception module's output."""
    return build_model(BNInception, dict(attn_layer="se"), kwargs)


@register_model(family="bninception", paper=PAPER, input_style="cifar", num_classes=10, ref_params=10_262_794,
                ref_source="cnnzoo (paper modules, stride-1 3x3 stem)")
def bninception_cifar(**kwargs) -> BNInception:
    """BN-Inception for 32x32 inputs: the paper's modules after a stride-1 3x3 stem."""
    return build_model(BNInception, dict(stem="cifar", num_classes=10), kwargs)
