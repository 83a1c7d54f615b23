"""GoogLeNet / Inception v1 (Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke &
Rabinovich 2014, "Going Deeper with Convolutions", arXiv 1409.4842).

Nine Inception modules with the channel splits of the paper's Table 1: 1x1 reductions in
front of the 3x3 and 5x5 convolutions and after the 3x3 max-pool, global average pooling,
dropout 0.4 and one linear layer. Two auxiliary classifiers on inception 4a and 4d (average
pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7, linear) are returned in training mode as
`AuxLogits(weight=0.3)`, the paper's loss weight; in eval mode the model returns plain logits.

The default `variant="torchvision"` matches torchvision's parameter counts (6,624,904
without, 13,004,888 with the auxiliary heads): batch norm (eps 1e-3) after every conv and,
as in torchvision, a 3x3 kernel in the "5x5" tower. `variant="paper"` is the 2014 network:
true 5x5 kernels, no batch norm (biased convs), and local response normalisation after the
first max-pool and after conv3 (6,998,552 params without aux heads).
The torchvision variant also keeps torchvision's 2x2/2 max-pool after inception 4e (the paper's
is 3x3/2; both give 7x7 at 224x224), so its layers compute what torchvision's do.
Deliberate differences from both: the auxiliary heads pool adaptively to 4x4 (the paper's
5x5/3 pool gives 4x4 only at 224x224 input) so any input size works.
The CIFAR variant keeps the modules and widths; its stem is conv3x3(64)-conv1x1(64)-
conv3x3(192) at stride 1 without max-pools, so the modules see 32, 16 and 8 pixel grids.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.head import linear_or_identity
from ..layers.inception import ConvFactory, bn_conv, googlenet_module, plain_conv
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import AuxClassifierModel
from .features import chain_stages, children_path

PAPER = Paper("Going Deeper with Convolutions", 2014, "1409.4842",
              "Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich")

VARIANTS = ("torchvision", "paper")
STEMS = ("imagenet", "cifar")

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; None is a 3x3/2 max-pool.
MODULES = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
AUX_TAPS = ("inception4a", "inception4d")


def _max_pool(kernel: int = 3) -> nn.Module:
    # Caffe's ceil-mode rounding gives the paper's 112-56-28-14-7 grid at 224x224.
    return nn.MaxPool2d(kernel, 2, ceil_mode=True)


def _lrn() -> nn.Module:
    # Caffe's LRN (size 5, alpha 1e-4, beta 0.75, k 1); PyTorch divides alpha by size as Caffe does.
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class GoogLeNetAux(nn.Module):
    """Auxiliary classifier (paper section 5): pool to 4x4, 1x1 conv 128, FC 1024, dropout, linear."""

    def __init__(self, in_chs: int, num_classes: int, conv: ConvFactory, drop_rate: float = 0.7):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = conv(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = linear_or_identity(1024, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = linear_or_identity(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc(self.drop(self.act(self.fc1(x))))


class GoogLeNet(AuxClassifierModel):
    """GoogLeNet: stem, `features` (Inception modules 3a-5b), head; aux heads on 4a and 4d."""

    aux_weight = 0.3  # the paper's weight of each auxiliary loss

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.4,
                 aux_logits: bool = True, aux_drop_rate: float = 0.7, variant: str = "torchvision",
                 stem: str = "imagenet"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        paper = variant == "paper"
        conv = plain_conv() if paper else bn_conv()
        self.in_chans = in_chans
        layers = self._stem(in_chans, conv, stem, lrn=paper)
        chs, tap_chs = 192, {}
        for name, spec in MODULES:
            if spec is None:
                # torchvision pools 2x2 after 4e (the paper 3x3); same 7x7 grid, its weights fit.
                layers[name] = _max_pool(2 if name == "pool4" and not paper else 3)
                continue
            layers[name] = googlenet_module(chs, conv, *spec, c5_kernel=5 if paper else 3)
            chs = layers[name].out_chs
            tap_chs[name] = chs
        self.features = nn.Sequential(layers)
        self.num_features = chs
        self.feature_info = chain_stages(children_path(self.features, "features."), in_chans)
        self._init_head(num_classes, drop_rate)
        self.aux_heads = nn.ModuleDict({
            name: GoogLeNetAux(tap_chs[name], num_classes, conv, aux_drop_rate) for name in AUX_TAPS
        } if aux_logits else {})
        init_weights(self)

    @staticmethod
    def _stem(in_chans: int, conv: ConvFactory, stem: str, lrn: bool) -> "OrderedDict[str, nn.Module]":
        layers = OrderedDict()
        if stem == "imagenet":
            layers["conv1"] = conv(in_chans, 64, 7, 2)
            layers["pool1"] = _max_pool()
        else:  # CIFAR: 32x32 images are too small for the 4x early downsampling
            layers["conv1"] = conv(in_chans, 64, 3)
        if lrn:
            layers["lrn1"] = _lrn()
        layers["conv2"] = conv(64, 64, 1)
        layers["conv3"] = conv(64, 192, 3)
        if lrn:
            layers["lrn2"] = _lrn()
        if stem == "imagenet":
            layers["pool2"] = _max_pool()
        return layers


_TV_NOTE = ("6,624,904 params without the aux heads (aux_logits=False, torchvision's count with "
            "pretrained weights); variant='paper' (5x5 kernels, no BN, LRN) has 6,998,552 without aux heads")


@register_model(family="googlenet", paper=PAPER, input_style="imagenet", ref_params=13_004_888,
                ref_source="torchvision", notes=_TV_NOTE)
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet with batch norm and both auxiliary classifiers (torchvision's layout)."""
    return build_model(GoogLeNet, dict(), kwargs)


@register_model(family="googlenet", paper=PAPER, input_style="cifar", num_classes=10, ref_params=9_952_958,
                ref_source="cnnzoo (paper modules, stride-1 3x3 stem)",
                notes="with both aux heads at 10 classes; 5,602,474 params without (aux_logits=False)")
def googlenet_cifar(**kwargs) -> GoogLeNet:
    """GoogLeNet for 32x32 inputs: the same nine modules and aux heads after a stride-1 stem."""
    return build_model(GoogLeNet, dict(stem="cifar", num_classes=10), kwargs)
