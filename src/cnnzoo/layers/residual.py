"""Residual blocks: the basic and bottleneck units of ResNet (He et al. 2016, "Deep Residual
Learning for Image Recognition", arXiv 1512.03385), ResNeXt's grouped bottleneck, and the
full pre-activation units of "Identity Mappings in Deep Residual Networks" (arXiv 1603.05027).

Every block takes the same arguments, so the ResNet class can build any of them:
`(in_chs, planes, stride, downsample, groups, base_width, dilation, attn_layer, attn_kwargs,
norm_layer, act_layer, drop_path)`, plus block-specific keywords (`preact`; the shake
options, given through the network's `block_args`). The output width is
`planes * block.expansion`.
Attention plugs in by name (see `layers.attention`): a block-level module ("se", "cbam",
"ge"; BAM when asked) sits after the last norm, before the addition, as in the SE paper;
"sk" replaces the block's 3x3 convolution with a selective-kernel convolution, as in SKNet.
The shortcut (`downsample`) is built by `create_shortcut` for the paper's options A, B, C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attn_placement, create_attn
from .conv import LayerFactory, make_act
from .drop import drop_path_or_identity

SHORTCUT_OPTIONS = ("A", "B", "C")


class PadShortcut(nn.Module):
    """Option A: a parameter-free identity shortcut for a change of shape.

    Subsamples by taking every `stride`-th pixel and zero-pads the new channels, half on
    each side (for 16 -> 32 channels: 8 zero maps before and 8 after, the layout of the
    published CIFAR ResNet weights).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_chs} -> {out_chs})")
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        pad = self.out_chs - self.in_chs
        return F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, stride={self.stride}"


def create_shortcut(option: str, in_chs: int, out_chs: int, stride: int,
                    norm_layer: LayerFactory | None = nn.BatchNorm2d) -> nn.Module | None:
    """The paper's shortcut options (section 3.3): None means a plain identity.

    A: identity, zero-padding when the shape changes (no parameters).
    B: identity, 1x1 projection only when the shape changes.
    C: 1x1 projection on every block.
    `norm_layer=None` gives a bare projection (the pre-activation units).
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {option!r}")
    same_shape = stride == 1 and in_chs == out_chs
    if option == "A":
        return None if same_shape else PadShortcut(in_chs, out_chs, stride)
    if option == "B" and same_shape:
        return None
    layers = [nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)]
    if norm_layer is not None:
        layers.append(norm_layer(out_chs))
    return nn.Sequential(*layers)


def make_block_attn(attn_layer: str | None, channels: int, attn_kwargs: dict | None) -> nn.Module:
    """The attention module after a block's last norm; Identity for none or for SK (a conv).

    The network decides what reaches a block: BAM only when asked to sit inside blocks.
    """
    if attn_placement(attn_layer) in (None, "conv"):
        return nn.Identity()
    return create_attn(attn_layer, channels, **(attn_kwargs or {}))


def make_spatial_conv(in_chs: int, out_chs: int, *, stride: int = 1, groups: int = 1, dilation: int = 1,
                      attn_layer: str | None = None, attn_kwargs: dict | None = None,
                      norm_layer: LayerFactory | None = nn.BatchNorm2d,
                      act_layer: LayerFactory | None = nn.ReLU) -> tuple[nn.Module, nn.Module, nn.Module]:
    """A block's 3x3 conv with its norm and activation: (conv, norm, act).

    With a "conv"-placed attention (SK) the conv is the attention module itself; it
    normalises and activates each branch inside, so norm and act are identities.
    """
    if attn_placement(attn_layer) == "conv":
        conv = create_attn(attn_layer, in_chs, out_channels=out_chs, stride=stride, groups=groups,
                           dilation=dilation, norm_layer=norm_layer, act_layer=act_layer, **(attn_kwargs or {}))
        return conv, nn.Identity(), nn.Identity()
    conv = nn.Conv2d(in_chs, out_chs, 3, stride, dilation, dilation, groups, bias=False)
    norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
    return conv, norm, make_act(act_layer)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (Fig. 2 left of the paper); used by ResNet-18/34 and the CIFAR nets."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64 (use Bottleneck for ResNeXt)")
        out_chs = planes * self.expansion
        self.conv1, self.bn1, self.act1 = make_spatial_conv(
            in_chs, planes, stride=stride, dilation=dilation, attn_layer=attn_layer, attn_kwargs=attn_kwargs,
            norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = nn.Conv2d(planes, out_chs, 3, 1, dilation, dilation, bias=False)
        self.bn2 = norm_layer(out_chs)
        self.attn = make_block_attn(attn_layer, out_chs, attn_kwargs)
        self.downsample = downsample
        self.drop_path = drop_path_or_identity(drop_path)
        self.act2 = make_act(act_layer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.drop_path(self.attn(self.bn2(self.conv2(x))))
        return self.act2(add_residual(x, shortcut))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (Fig. 5 right); ResNeXt's form (c) when `groups` > 1.

    The stride sits on the 3x3 convolution (torchvision's "ResNet v1.5"); `stride_in_1x1=True`
    puts it on the first 1x1 instead, as the paper's Caffe models do ("v1"). Parameter counts
    are identical; v1 costs fewer MACs (the 3x3 runs at the lower resolution) and has a smaller
    receptive field (the 1x1 skips pixels before the 3x3 sees them).
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0, stride_in_1x1: bool = False):
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_chs = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_chs, width, 1, stride_1x1, bias=False)
        self.bn1 = norm_layer(width)
        self.act1 = make_act(act_layer)
        self.conv2, self.bn2, self.act2 = make_spatial_conv(
            width, width, stride=stride_3x3, groups=groups, dilation=dilation, attn_layer=attn_layer,
            attn_kwargs=attn_kwargs, norm_layer=norm_layer, act_layer=act_layer)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn3 = norm_layer(out_chs)
        self.attn = make_block_attn(attn_layer, out_chs, attn_kwargs)
        self.downsample = downsample
        self.drop_path = drop_path_or_identity(drop_path)
        self.act3 = make_act(act_layer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.drop_path(self.attn(self.bn3(self.conv3(x))))
        return self.act3(add_residual(x, shortcut))


class PreActBasicBlock(nn.Module):
    """Full pre-activation basic unit (He et al. 2016, "Identity Mappings in Deep Residual
    Networks", arXiv 1603.05027, Fig. 4e): BN-ReLU-conv3x3-BN-ReLU-conv3x3, nothing after the add.

    A projection shortcut reads the pre-activated input (the BN-ReLU is shared by both paths,
    as in the authors' code); identity and zero-padding shortcuts read the raw input.
    `preact=False` drops the first BN-ReLU for the network's first unit, whose input the stem
    has already activated (the paper's special case for the first unit).
    """

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0, preact: bool = True):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock supports only groups=1 and base_width=64")
        out_chs = planes * self.expansion
        self.bn1 = norm_layer(in_chs) if preact else nn.Identity()
        self.act1 = make_act(act_layer) if preact else nn.Identity()
        self.conv1, self.bn2, self.act2 = make_spatial_conv(
            in_chs, planes, stride=stride, dilation=dilation, attn_layer=attn_layer, attn_kwargs=attn_kwargs,
            norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = nn.Conv2d(planes, out_chs, 3, 1, dilation, dilation, bias=False)
        self.attn = make_block_attn(attn_layer, out_chs, attn_kwargs)
        self.downsample = downsample
        self.drop_path = drop_path_or_identity(drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        shortcut = _preact_shortcut(self.downsample, x, pre)
        x = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return add_residual(self.drop_path(self.attn(x)), shortcut)


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck unit (arXiv 1603.05027): BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1.

    Shortcut and `preact` as in `PreActBasicBlock`; the stride sits on the 3x3 conv.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0, preact: bool = True):
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_chs = planes * self.expansion
        self.bn1 = norm_layer(in_chs) if preact else nn.Identity()
        self.act1 = make_act(act_layer) if preact else nn.Identity()
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn2 = norm_layer(width)
        self.act2 = make_act(act_layer)
        self.conv2, self.bn3, self.act3 = make_spatial_conv(
            width, width, stride=stride, groups=groups, dilation=dilation, attn_layer=attn_layer,
            attn_kwargs=attn_kwargs, norm_layer=norm_layer, act_layer=act_layer)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.attn = make_block_attn(attn_layer, out_chs, attn_kwargs)
        self.downsample = downsample
        self.drop_path = drop_path_or_identity(drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        shortcut = _preact_shortcut(self.downsample, x, pre)
        x = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        x = self.conv3(self.act3(self.bn3(x)))
        return add_residual(self.drop_path(self.attn(x)), shortcut)


def add_residual(branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """`branch + shortcut`, written into `branch` (torchvision's `out += identity`).

    The branch is a fresh tensor (a norm, conv, attention product or drop-path output) whose
    producer does not keep it for the backward pass, so autograd allows the in-place sum; it
    saves a feature-map-sized allocation per block (~10% at batch 32 on a 2-core CPU) and gives
    the same values (floating-point addition commutes).
    """
    return branch.add_(shortcut)


def _preact_shortcut(downsample: nn.Module | None, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    if downsample is None:
        return x
    return downsample(x if isinstance(downsample, PadShortcut) else pre)


def bottleneck_width(planes: int, groups: int = 1, base_width: int = 64) -> int:
    """Width of the grouped 3x3 conv: `groups` x (`base_width` scaled by the stage), as in ResNeXt."""
    return int(planes * (base_width / 64.0)) * groups


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock, "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock, "preact_bottleneck": PreActBottleneck,
}


def get_block(block: str | type[nn.Module]) -> type[nn.Module]:
    """A block class from its name ("basic", "bottleneck", ...) or the class itself."""
    if isinstance(block, str):
        try:
            return BLOCKS[block]
        except KeyError:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(sorted(BLOCKS))}") from None
    return block

