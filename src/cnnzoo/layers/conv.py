"""Convolution building blocks: conv-norm-act and depthwise-separable convolution."""

from __future__ import annotations

from typing import Callable

from torch import nn

LayerFactory = Callable[..., nn.Module]

# Activations by name, so configs and `--model-arg act_layer=relu6` can choose one.
ACTIVATIONS: dict[str, LayerFactory] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU,
    "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}


def get_act_layer(act_layer: str | LayerFactory | None) -> LayerFactory | None:
    """An activation factory from its name (case-insensitive: "relu6", "ReLU6") or the factory itself."""
    if not isinstance(act_layer, str):
        return act_layer
    try:
        return ACTIVATIONS[act_layer.lower()]
    except KeyError:
        raise ValueError(f"unknown act_layer {act_layer!r}; choose from {', '.join(ACTIVATIONS)}") from None


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 for an odd kernel."""
    return dilation * (kernel_size - 1) // 2


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of `divisor`, never dropping more than 10%.

    The rule used by MobileNet V2/V3 and EfficientNet for width multipliers.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, with children named `conv`, `bn`, `act`.

    `norm_layer=None` or `act_layer=None` leave that step out; padding defaults to "same".
    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
    ):
        super().__init__()
        if padding is None:
            if isinstance(kernel_size, tuple):
                padding = tuple(same_padding(k, dilation) for k in kernel_size)
            else:
                padding = same_padding(kernel_size, dilation)
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, padding, dilation, groups,
            bias=norm_layer is None if bias is None else bias,
        )
        if norm_layer is not None:
            self.bn = norm_layer(out_chs)
        if act_layer is not None:
            self.act = make_act(act_layer)


def make_act(act_layer: str | LayerFactory | None) -> nn.Module:
    """An activation module (from a factory or a name in ACTIVATIONS), in place where the
    activation supports it (saves memory); Identity for None."""
    act_layer = get_act_layer(act_layer)
    if act_layer is None:
        return nn.Identity()
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise KxK convolution then pointwise 1x1 convolution (Sifre 2014; Chollet 2017).

    `depth_multiplier` K gives K output maps per input channel in the depthwise step.
    `norm_layer`/`act_layer` apply after each step when `norm_act_between` (MobileNet V1),
    or only after the pointwise step otherwise (Xception's SeparableConv).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        depth_multiplier: int = 1,
        norm_act_between: bool = True,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        bias: bool | None = None,
    ):
        super().__init__()
        mid_chs = in_chs * depth_multiplier
        self.dw = ConvNormAct(
            in_chs, mid_chs, kernel_size, stride, dilation=dilation, groups=in_chs,
            norm_layer=norm_layer if norm_act_between else None,
            act_layer=act_layer if norm_act_between else None,
            bias=False if bias is None else bias,
        )
        self.pw = ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer, bias=bias)
