"""DnCNN (Zhang, Zuo, Chen, Meng & Zhang 2017, "Beyond a Gaussian Denoiser: Residual
Learning of Deep CNN for Image Denoising", IEEE TIP 26(7), arXiv 1608.03981).

A plain stack of 3x3 convolutions with 64 maps: Conv+ReLU, then depth-2 Conv+BN+ReLU, then a
Conv back to the image's channels. The network is trained to predict the *noise* R(y) of a
noisy image y (residual learning), and the denoised image is y - R(y). No pooling and no
stride, so any image size works and the receptive field is (2 * depth + 1) pixels wide:
35x35 for DnCNN-S (depth 17, one known noise level), 41x41 for DnCNN-B (depth 20, blind,
trained over sigma in [0, 55]). CDnCNN is the same network on colour images.

It is not a classifier: `num_classes` is 0 and there is no classification head.
`forward_features` gives the 64 feature maps before the last convolution, `forward_head` maps
them to the predicted noise, and `forward` returns the clean estimate y - R(y) (or R(y) with
`residual=False`). The paper's Caffe/MatConvNet models and the official PyTorch port use BN
eps 1e-4 (`bn_eps`), which `cnnzoo.weights.dncnn` sets when it loads those weights.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..errors import CnnzooError
from ..layers import ConvNormAct
from ..registry import Paper, build_model, register_model
from .base import ZooModel

PAPER = Paper(
    "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising", 2017,
    "1608.03981", "Zhang, Zuo, Chen, Meng, Zhang",
)


class DnCNN(ZooModel):
    def __init__(
        self,
        *,
        in_chans: int = 1,
        depth: int = 17,
        width: int = 64,
        bn_eps: float = 1e-5,
        residual: bool = True,
        num_classes: int = 0,
    ):
        super().__init__()
        if num_classes != 0:
            raise CnnzooError(f"DnCNN is a denoiser, not a classifier: num_classes must be 0, got {num_classes}")
        if depth < 3:
            raise ValueError(f"DnCNN needs depth >= 3 (first, middle and last layer), got {depth}")
        self.in_chans = in_chans
        self.num_classes = 0
        self.num_features = width
        self.depth = depth
        self.residual = residual
        norm = partial(nn.BatchNorm2d, eps=bn_eps)
        layers = [ConvNormAct(in_chans, width, 3, norm_layer=None, bias=True)]
        layers += [ConvNormAct(width, width, 3, norm_layer=norm) for _ in range(depth - 2)]
        self.features = nn.Sequential(*layers)
        # The paper's last layer has no bias (the official port's nn.Conv2d(..., bias=False)).
        self.tail = nn.Conv2d(width, in_chans, 3, padding=1, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The predicted noise R(y) from the features (the features themselves if pre_logits)."""
        return x if pre_logits else self.tail(x)

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.predict_noise(x)
        return x - noise if self.residual else noise

    def get_classifier(self) -> nn.Module:
        return self.tail

    def reset_classifier(self, num_classes: int) -> None:
        raise CnnzooError(
            "DnCNN is a denoiser and has no classifier to reset; use its 64-channel "
            "forward_features() as a backbone instead"
        )


_GREY = dict(input_size=(1, 40, 40), mean=(0.0,), std=(1.0,))
_COLOUR = dict(input_size=(3, 40, 40), mean=(0.0,) * 3, std=(1.0,) * 3)
# input_style="cifar" only says "small inputs, no ImageNet stem": the 40x40 size is the
# paper's training patch; images are in [0, 1] and not normalised.
_dncnn = partial(register_model, family="dncnn", paper=PAPER, input_style="cifar", task="denoise", num_classes=0)


@_dncnn(**_GREY, ref_params=556_096, ref_source="the official DnCNN PyTorch port (cszn/DnCNN)",
        details=dict(depth=17, blind=False, sigma=25, receptive_field=35))
def dncnn(**kwargs) -> DnCNN:
    """DnCNN-S: depth 17, grey, trained for one noise level."""
    return build_model(DnCNN, dict(in_chans=1, depth=17), kwargs)


@_dncnn(**_GREY, ref_params=667_072, ref_source="cnnzoo (paper layout, depth 20)",
        details=dict(depth=20, blind=True, sigma_range=(0, 55), receptive_field=41))
def dncnn_b(**kwargs) -> DnCNN:
    """DnCNN-B: depth 20, grey, blind Gaussian denoising over sigma in [0, 55]."""
    return build_model(DnCNN, dict(in_chans=1, depth=20), kwargs)


@_dncnn(**_COLOUR, ref_params=558_400, ref_source="cnnzoo (paper layout, depth 17, RGB)",
        details=dict(depth=17, blind=False, sigma=25, receptive_field=35))
def dncnn_color(**kwargs) -> DnCNN:
    """CDnCNN-S: depth 17 on RGB images, one noise level."""
    return build_model(DnCNN, dict(in_chans=3, depth=17), kwargs)


@_dncnn(**_COLOUR, ref_params=669_376, ref_source="cnnzoo (paper layout, depth 20, RGB)",
        details=dict(depth=20, blind=True, sigma_range=(0, 55), receptive_field=41))
def dncnn_b_color(**kwargs) -> DnCNN:
    """CDnCNN-B: depth 20 on RGB images, blind over sigma in [0, 55]."""
    return build_model(DnCNN, dict(in_chans=3, depth=20), kwargs)
