"""The inverted residual block of MobileNet V2/V3 (Sandler et al. 2018, arXiv 1801.04381).

A 1x1 expansion to `mid_chs`, a depthwise KxK convolution, an optional attention module on
the expanded features (V3's squeeze-excite), then a *linear* 1x1 projection: the paper
shows that a non-linearity on the narrow bottleneck destroys information, so the
projection has no activation. The identity shortcut joins the narrow ends, and only where
the shapes allow it (stride 1 and as many output channels as input channels).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .conv import ConvNormAct, LayerFactory
from .drop import drop_path_or_identity
from .residual import add_residual


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (KxK) -> [attention] -> project (1x1, linear) [+ shortcut].

    The expansion is left out when `mid_chs == in_chs` (V2's t=1 blocks, V3's first block).
    `attn_layer` is called with the expanded channel count, e.g. a partial SqueezeExcite.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: LayerFactory = nn.ReLU6,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        attn_layer: Callable[[int], nn.Module] | None = None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.has_residual = stride == 1 and in_chs == out_chs
        norm_act = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.conv_pw = ConvNormAct(in_chs, mid_chs, 1, **norm_act) if mid_chs != in_chs else nn.Identity()
        self.conv_dw = ConvNormAct(
            mid_chs, mid_chs, kernel_size, stride, dilation=dilation, groups=mid_chs, **norm_act
        )
        self.attn = attn_layer(mid_chs) if attn_layer is not None else nn.Identity()
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.drop_path = drop_path_or_identity(drop_path_rate if self.has_residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.attn(self.conv_dw(self.conv_pw(x))))
        if self.has_residual:
            out = add_residual(self.drop_path(out), x)
        return out
