"""PNASNet-5 (Liu, Zoph, Neumann, Shlens, Hua, Li, Fei-Fei, Yuille, Huang & Murphy 2018,
"Progressive Neural Architecture Search", arXiv 1712.00559).

The cell found by progressive search (Figure 1 of the paper) combines its two inputs, the
outputs of the previous two cells (H_{c-1} "right", H_{c-2} "left"), in five blocks, each the
sum of two operations:
  block 0: sep 5x5 (left)            + max 3x3 (left)
  block 1: sep 7x7 (right)           + max 3x3 (right)
  block 2: sep 5x5 (right)           + sep 3x3 (right)
  block 3: sep 3x3 (block 2)         + max 3x3 (right)
  block 4: sep 3x3 (left)            + identity (right)
and concatenates the five block outputs (5F channels for F filters). A separable op is
applied twice, ReLU-sepconv-BN each time, as in NASNet. The reduction cell is the same cell
with stride 2 (the identity becomes a strided 1x1 convolution); a left input twice the size
of the right one is first halved by a factorized reduction (two shifted strided 1x1 paths).

The ImageNet networks have NASNet's stem (a valid 3x3 convolution with stride 2 and two
reduction cells at F/4 and F/2) and then `num_cells` cells with reductions at 1/3 and 2/3;
PNASNet-5 Large is N=4, F=216 at 331x331 (86.1M parameters). The CIFAR network is the
paper's N=3, F=48: a 3x3 convolution (96 maps, NASNet's CIFAR stem), then three stacks of
N cells at F, 2F and 4F filters whose first cells (in the second and third stack) are
reduction cells. That layout has 3.17M parameters, the paper's 3.2M; adding the reduction
cells on top of 3 x N normal cells (as Figure 1 can also be read) would give 4.26M.

Differences, kept on purpose: convolutions and pools pad symmetrically (k // 2) by default rather
than TensorFlow's "same" padding, which pads strided layers asymmetrically; `padding="tf_same"`
gives the cells TF's padding, as the TF-slim weights (timm's pnasnet5large) need. NASNet's
scheduled drop-path is not included.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..layers import ConvNormAct, DepthwiseSeparableConv
from ..layers.padding import use_tf_same_padding
from ..registry import Paper, build_model, register_model
from .base import ZooModel
from .features import FeatureInfo, stage

PAPER = Paper(
    "Progressive Neural Architecture Search", 2018, "1712.00559",
    "Liu, Zoph, Neumann, Shlens, Hua, Li, Fei-Fei, Yuille, Huang, Murphy",
)

_BN = partial(nn.BatchNorm2d, eps=1e-3)


class SepBranch(nn.Sequential):
    """ReLU-sepconv-BN twice; the first one strides. `wide_first` (the stem cell, whose left
    input is not projected) widens in the first separable conv instead of the second."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, wide_first: bool = False):
        mid_chs = out_chs if wide_first else in_chs
        super().__init__(
            nn.ReLU(), _sep(in_chs, mid_chs, kernel_size, stride), _BN(mid_chs),
            nn.ReLU(), _sep(mid_chs, out_chs, kernel_size, 1), _BN(out_chs),
        )


def _sep(in_chs: int, out_chs: int, kernel_size: int, stride: int) -> nn.Module:
    return DepthwiseSeparableConv(in_chs, out_chs, kernel_size, stride, norm_act_between=False,
                                  norm_layer=None, act_layer=None, bias=False)


class ActConvBn(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
                         _BN(out_chs))


class FactorizedReduction(nn.Module):
    """Halve the size with two strided 1x1 convolutions, the second on the input shifted by
    one pixel so that together they see every pixel; concatenated, then BN."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.act = nn.ReLU()
        self.path_1 = nn.Conv2d(in_chs, out_chs // 2, 1, 2, bias=False)
        self.path_2 = nn.Conv2d(in_chs, out_chs - out_chs // 2, 1, 2, bias=False)
        self.bn = _BN(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        shifted = nn.functional.pad(x, (-1, 1, -1, 1))
        return self.bn(torch.cat([self.path_1(x), self.path_2(shifted)], 1))


def _max_pool(stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride, 1)


class PNASCell(nn.Module):
    """The PNASNet-5 cell. `left_mode` says how the left input H_{c-2} reaches F channels:
    "conv" (ReLU-1x1-BN), "factorized" (it is twice the right input's size) or "none" (the
    first stem cell, whose ops take the raw input and widen it themselves)."""

    def __init__(self, in_left: int, in_right: int, filters: int, *, reduction: bool, left_mode: str = "conv"):
        super().__init__()
        stride = 2 if reduction else 1
        if left_mode == "conv":
            self.proj_left = ActConvBn(in_left, filters)
        elif left_mode == "factorized":
            self.proj_left = FactorizedReduction(in_left, filters)
        elif left_mode == "none":
            self.proj_left = nn.Identity()
        else:
            raise ValueError(f"left_mode must be 'conv', 'factorized' or 'none', got {left_mode!r}")
        raw_left = left_mode == "none"
        left_chs = in_left if raw_left else filters
        self.proj_right = ActConvBn(in_right, filters)
        self.b0_left = SepBranch(left_chs, filters, 5, stride, wide_first=raw_left)
        self.b0_right = _max_pool(stride)
        if left_chs != filters:  # the max-pool cannot change width: project after it
            self.b0_right = nn.Sequential(_max_pool(stride), nn.Conv2d(left_chs, filters, 1, bias=False), _BN(filters))
        self.b1_left = SepBranch(filters, filters, 7, stride)
        self.b1_right = _max_pool(stride)
        self.b2_left = SepBranch(filters, filters, 5, stride)
        self.b2_right = SepBranch(filters, filters, 3, stride)
        self.b3_left = SepBranch(filters, filters, 3)
        self.b3_right = _max_pool(stride)
        self.b4_left = SepBranch(left_chs, filters, 3, stride, wide_first=raw_left)
        self.b4_right = ActConvBn(filters, filters, 1, stride) if reduction else nn.Identity()

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        left, right = self.proj_left(left), self.proj_right(right)
        b0 = self.b0_left(left) + self.b0_right(left)
        b1 = self.b1_left(right) + self.b1_right(right)
        b2 = self.b2_left(right) + self.b2_right(right)
        b3 = self.b3_left(b2) + self.b3_right(right)
        b4 = self.b4_left(left) + self.b4_right(right)
        return torch.cat([b0, b1, b2, b3, b4], 1)


def imagenet_cells(num_cells: int) -> tuple[tuple[float, bool], ...]:
    """(filter multiplier, is reduction) of NASNet's two stem cells then `num_cells` cells,
    reducing at 1/3 and 2/3 of the way (cells 4 and 8 of 12), as the TF-slim PNASNet."""
    reductions = {num_cells // 3, 2 * num_cells // 3}
    cells, mult = [(0.25, True), (0.5, True)], 1.0
    for i in range(num_cells):
        mult *= 2 if i in reductions else 1
        cells.append((mult, i in reductions))
    return tuple(cells)


def cifar_cells(n: int) -> tuple[tuple[float, bool], ...]:
    """Three stacks of N cells at F, 2F, 4F filters; the first cell of the second and third
    stack is the stride-2 reduction cell."""
    def stack(mult: float, reduce_first: bool) -> tuple[tuple[float, bool], ...]:
        return ((mult, reduce_first),) + ((mult, False),) * (n - 1)

    return stack(1.0, False) + stack(2.0, True) + stack(4.0, True)


class PNASNet(ZooModel):
    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        filters: int = 216,
        cells: tuple[tuple[float, bool], ...] = imagenet_cells(12),
        stem: str = "imagenet",
        stem_chs: int = 96,
        drop_rate: float = 0.0,
        padding: str = "symmetric",
    ):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.in_chans = in_chans
        # ImageNet: a valid stride-2 conv (331 -> 165); CIFAR: a same-size conv.
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2 if stem == "imagenet" else 1,
                                padding=0 if stem == "imagenet" else 1, norm_layer=_BN, act_layer=None)
        left_chs = right_chs = stem_chs
        prev_reduction = False
        self.cells = nn.ModuleList()
        # a stage ends before each reduction cell; the ImageNet stem halves (331 -> 165)
        features, net_stride, last_name = [], 2 if stem == "imagenet" else 1, "stem"
        for i, (mult, reduction) in enumerate(cells):
            if reduction:
                features.append(stage(last_name, right_chs, net_stride))
                net_stride *= 2
            last_name = f"cells.{i}"
            width = int(filters * mult)
            left_mode = "none" if (i == 0 and stem == "imagenet") else "factorized" if prev_reduction else "conv"
            self.cells.append(PNASCell(left_chs, right_chs, width, reduction=reduction, left_mode=left_mode))
            left_chs, right_chs, prev_reduction = right_chs, 5 * width, reduction
        if padding not in ("symmetric", "tf_same"):
            raise ValueError(f"padding must be 'symmetric' or 'tf_same', got {padding!r}")
        self.padding = padding
        if padding == "tf_same":  # the cells only: the ImageNet stem is a "valid" convolution in TF too
            use_tf_same_padding(self.cells)
        self.act = nn.ReLU()
        self.num_features = right_chs
        self.feature_info = FeatureInfo(features + [stage("act", right_chs, net_stride)])
        self._init_head(num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        left = right = self.stem(x)
        for cell in self.cells:
            left, right = right, cell(left, right)
        return self.act(right)


_pnas = partial(register_model, family="pnasnet", paper=PAPER)


@_pnas(input_style="imagenet", input_size=(3, 331, 331), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
       ref_params=86_057_668, ref_source="timm pnasnet5large")
def pnasnet5large(**kwargs) -> PNASNet:
    """PNASNet-5 Large: N=4, F=216, 331x331 (the paper's 86.1M)."""
    return build_model(PNASNet, dict(filters=216, cells=imagenet_cells(12), stem_chs=96, drop_rate=0.5), kwargs)


@_pnas(input_style="imagenet", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), ref_params=5_064_487,
       ref_source="cnnzoo (TF-slim mobile layout; the paper says 5.1M)")
def pnasnet5mobile(**kwargs) -> PNASNet:
    """PNASNet-5 Mobile: N=3, F=54, 224x224."""
    return build_model(PNASNet, dict(filters=54, cells=imagenet_cells(9), stem_chs=32, drop_rate=0.5), kwargs)


@_pnas(input_style="cifar", num_classes=10, ref_params=3_168_298,
       ref_source="cnnzoo (N=3, F=48; the paper says 3.2M)")
def pnasnet5_cifar(**kwargs) -> PNASNet:
    """PNASNet-5 for CIFAR-10: N=3, F=48."""
    return build_model(PNASNet, dict(num_classes=10, filters=48, cells=cifar_cells(3), stem="cifar", stem_chs=96),
                       kwargs)
