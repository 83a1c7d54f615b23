"""Inception v3 (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, "Rethinking the Inception
Architecture for Computer Vision", arXiv 1512.00567).

The network of the paper's Table 1 as released in TF-slim and torchvision: a stem of 3x3
convolutions (the factorised 7x7), three 35x35 modules, a grid-size reduction (section 5,
Figure 10: parallel stride-2 convolution and pooling), four 17x17 modules with 7x7
convolutions factorised into 1x7 and 7x1 (Figure 6), a second reduction, and two 8x8
modules with expanded 1x3/3x1 filter banks (Figure 7); batch norm (eps 1e-3) throughout,
global average pooling, dropout and a linear layer; 299x299 input.

The auxiliary classifier sits on the last 17x17 module and has batch norm (the "BN-auxiliary"
of section 7): 5x5/3 average pool, 1x1 conv 128, 5x5 conv 768, linear. It is returned in
training mode as `AuxLogits(weight=0.4)`; the weight is TF-slim's training script's (the
paper gives none). Parameter counts equal torchvision's: 27,161,264 with the auxiliary head
(the default, as in torchvision), 23,834,568 without (`aux_logits=False`, timm's default).
The paper's Table 1 gives the grid outline but not per-tower widths, so there is no separate
"paper" form. Deliberate difference: below a 17x17 grid (inputs under 299) the auxiliary head
pools adaptively to 5x5 so that small inputs work; at 299x299 it is the paper's pool.
The CIFAR variant keeps every module and width; its stem runs at stride 1 with "same"
padding and no max-pools, so the modules see 32, 15 and 7 pixel grids.

The paper's recipe (sections 7-8): RMSProp (decay 0.9, eps 1.0), lr 0.045 decayed by 0.94
every two epochs, gradient clipping at 2.0, label smoothing 0.1, batch 32 on each of 50
replicas, 100 epochs, evaluation with a running average of the parameters.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.head import linear_or_identity
from ..layers.inception import (
    ConvFactory, bn_conv, conv_stem, inception_v3_a, inception_v3_c, inception_v3_e,
    reduction_a, reduction_b,
)
from ..layers.init import init_weights
from ..registry import Paper, build_model, register_model
from .base import AuxClassifierModel
from .features import chain_stages, children_path

PAPER = Paper("Rethinking the Inception Architecture for Computer Vision", 2016, "1512.00567",
              "Szegedy, Vanhoucke, Ioffe, Shlens, Wojna")

STEMS = ("imagenet", "cifar")
# Conv specs (out, kernel, stride, padding; padding 0 = "valid") and "M" = 3x3/2 max-pool.
STEM = ((32, 3, 2, 0), (32, 3, 1, 0), (64, 3), "M", (80, 1, 1, 0), (192, 3, 1, 0), "M")
AUX_TAP = "mixed_6e"


class InceptionV3Aux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 avg-pool, 1x1 conv 128, 5x5 conv 768, linear."""

    def __init__(self, in_chs: int, num_classes: int, conv: ConvFactory):
        super().__init__()
        self.conv0 = conv(in_chs, 128, 1)
        self.conv1 = conv(128, 768, 5, 1, 0)
        self.fc = linear_or_identity(768, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = linear_or_identity(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The paper's 5x5/3 pool needs a 17x17 grid to leave the 5x5 that conv1 reduces to 1x1.
        x = F.avg_pool2d(x, 5, 3) if min(x.shape[-2:]) >= 17 else F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(AuxClassifierModel):
    """Inception v3: `features` (stem, mixed_5b..mixed_7c), pool, dropout, linear; aux head on mixed_6e."""

    aux_weight = 0.4

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5,
                 aux_logits: bool = True, stem: str = "imagenet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        conv = bn_conv()
        self.in_chans = in_chans
        layers = OrderedDict(stem=conv_stem(in_chans, conv, STEM, cifar=stem == "cifar"))
        layers["mixed_5b"] = inception_v3_a(192, conv, pool_proj=32)
        layers["mixed_5c"] = inception_v3_a(256, conv, pool_proj=64)
        layers["mixed_5d"] = inception_v3_a(288, conv, pool_proj=64)
        layers["mixed_6a"] = reduction_a(288, conv, k=64, l=96, m=96, n=384)
        for name, c7 in (("mixed_6b", 128), ("mixed_6c", 160), ("mixed_6d", 160), ("mixed_6e", 192)):
            layers[name] = inception_v3_c(768, conv, c7)
        layers["mixed_7a"] = reduction_b(768, conv, a=(192, 320), b=(192, 192, 192, 192))
        layers["mixed_7b"] = inception_v3_e(1280, conv)
        layers["mixed_7c"] = inception_v3_e(2048, conv)
        self.features = nn.Sequential(layers)
        self.num_features = layers["mixed_7c"].out_chs
        self.feature_info = chain_stages(children_path(self.features, "features.", expand=("stem",)), in_chans,
                                         strides=dict.fromkeys(("features.mixed_6a", "features.mixed_7a"), 2))
        self._init_head(num_classes, drop_rate)
        self.aux_heads = nn.ModuleDict({AUX_TAP: InceptionV3Aux(768, num_classes, conv)} if aux_logits else {})
        init_weights(self)


@register_model(family="inception_v3", paper=PAPER, input_style="imagenet", input_size=(3, 299, 299),
                ref_params=27_161_264, ref_source="torchvision",
                notes="with the auxiliary head (torchvision's default); 23,834,568 params with "
                      "aux_logits=False (torchvision with weights, timm)",
                min_input_size=(3, 75, 75))
def inception_v3(**kwargs) -> InceptionV3:
    """Inception v3 with its batch-normalised auxiliary classifier, 299x299 input."""
    return build_model(InceptionV3, dict(), kwargs)


@register_model(family="inception_v3", paper=PAPER, input_style="cifar", num_classes=10, ref_params=24_371_444,
                ref_source="cnnzoo (torchvision modules, stride-1 stem)",
                notes="with the auxiliary head at 10 classes; 21,806,058 params with aux_logits=False")
def inception_v3_cifar(**kwargs) -> InceptionV3:
    """Inception v3 for 32x32 inputs: every module and width, a stride-1 stem without pooling."""
    return build_model(InceptionV3, dict(stem="cifar", num_classes=10), kwargs)
