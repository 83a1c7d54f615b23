"""Residual blocks (He et al. 2016, "Deep Residual Learning for Image Recognition", arXiv 1512.03385).

Every block takes the same arguments, so the ResNet class can build any of them:
`(in_chs, planes, stride, downsample, groups, base_width, dilation, attn_layer, attn_kwargs,
norm_layer, act_layer, drop_path)`. `planes * block.expansion` is the block's output width.
Attention plugs in by name (see `layers.attention`): block-level types ("se", "cbam", "ge")
sit after the last norm, before the addition, as in the SE paper; "sk" replaces the block's
3x3 convolution with a selective-kernel convolution, as in the SKNet paper.
The shortcut (`downsample`) is built by `create_shortcut` for the paper's options A, B, C.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attn_placement, create_attn
from .drop import DropPath

LayerFactory = Callable[..., nn.Module]
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
    """The block-level attention module, or Identity when `attn_layer` is placed elsewhere."""
    if attn_placement(attn_layer) != "block":
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


def make_act(act_layer: LayerFactory | None) -> nn.Module:
    if act_layer is None:
        return nn.Identity()
    try:  # in-place saves memory where the activation supports it
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


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
        self.drop_path = _drop_path(drop_path)
        self.act2 = make_act(act_layer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.attn(self.bn2(self.conv2(x)))
        return self.act2(self.drop_path(x) + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (Fig. 5 right); ResNeXt's form (c) when `groups` > 1.

    The stride sits on the 3x3 convolution (torchvision's "ResNet v1.5"; the paper strides
    the first 1x1). Parameter counts are identical; accuracy is slightly higher.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0):
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.act1 = make_act(act_layer)
        self.conv2, self.bn2, self.act2 = make_spatial_conv(
            width, width, stride=stride, groups=groups, dilation=dilation, attn_layer=attn_layer,
            attn_kwargs=attn_kwargs, norm_layer=norm_layer, act_layer=act_layer)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn3 = norm_layer(out_chs)
        self.attn = make_block_attn(attn_layer, out_chs, attn_kwargs)
        self.downsample = downsample
        self.drop_path = _drop_path(drop_path)
        self.act3 = make_act(act_layer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.attn(self.bn3(self.conv3(x)))
        return self.act3(self.drop_path(x) + shortcut)


def bottleneck_width(planes: int, groups: int = 1, base_width: int = 64) -> int:
    """Width of the grouped 3x3 conv: `groups` x (`base_width` scaled by the stage), as in ResNeXt."""
    return int(planes * (base_width / 64.0)) * groups


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def get_block(block: str | type[nn.Module]) -> type[nn.Module]:
    """A block class from its name ("basic", "bottleneck", ...) or the class itself."""
    if isinstance(block, str):
        try:
            return BLOCKS[block]
        except KeyError:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(sorted(BLOCKS))}") from None
    return block


def block_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Drop None-valued options so block defaults apply."""
    return {k: v for k, v in kwargs.items() if v is not None}
