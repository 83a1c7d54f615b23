"""The arithmetic of one convolution layer: weight shape, parameters, MACs, output size.

For input channels C_in, output channels C_out, a k_h x k_w kernel, `groups` g, stride s,
padding p and dilation d:
- weight shape  [C_out, C_in / g, k_h, k_w]      (each output map sees C_in / g inputs)
- parameters    C_out * (C_in / g) * k_h * k_w  (+ C_out with a bias)
- output side   floor((H + 2p - d(k - 1) - 1) / s) + 1   (the dilated kernel spans d(k-1)+1)
- MACs          H_out * W_out * C_out * (C_in / g) * k_h * k_w (one multiply-add per weight
                per output position; 1 MAC = 2 FLOPs; the bias adds no multiply)
A depthwise convolution is g = C_in with C_out = K * C_in (K the depth multiplier); a
depthwise-separable one is a depthwise KxK followed by a pointwise 1x1 to C_out, costing
1/C_out + 1/k^2 of the standard convolution (Howard et al. 2017, equation 5); with a stride,
the pointwise step runs on the depthwise step's (smaller) output.

"Same" padding (`padding=None`) at stride 1 is PyTorch's `padding='same'`: d(k-1) pixels in
all, half before and the rest after (one more after for an even span such as a 2x2 kernel),
so the output keeps the input's size. PyTorch refuses `padding='same'` at stride > 1; there
`padding=None` means d(k-1)//2 on each side, the padding cnnzoo's layers use (ConvNormAct),
giving floor((n - 1)/s) + 1 outputs for an odd span.
A fully connected layer from an H x W x C input to N neurons has N * H * W * C weights and as
many MACs (`LinearSpec`): the arithmetic a convolution's weight sharing avoids.

`check_against_torch` builds the same `torch.nn.Conv2d` and compares every number.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected one number or two (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                padding_after: int | None = None) -> int:
    """Output length along one axis: floor((n + p_before + p_after - d(k-1) - 1) / s) + 1
    (p_after defaults to p_before: floor((n + 2p - d(k-1) - 1) / s) + 1)."""
    after = padding if padding_after is None else padding_after
    out = (size + padding + after - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        pads = f"2 x {padding}" if after == padding else f"{padding} + {after}"
        raise ValueError(
            f"a {kernel}-tap kernel with dilation {dilation} spans {dilation * (kernel - 1) + 1} pixels, "
            f"more than the padded input ({size} + {pads})"
        )
    return out


def same_padding(kernel: int, dilation: int = 1, stride: int = 1) -> tuple[int, int]:
    """(before, after) padding of "same" along one axis: PyTorch's padding='same' at stride 1
    (d(k-1) in all, the odd pixel after), d(k-1)//2 on each side at a larger stride."""
    total = dilation * (kernel - 1)
    if stride > 1:
        return total // 2, total // 2
    return total // 2, total - total // 2


@dataclass(frozen=True)
class ConvSpec:
    """One convolution layer. `padding=None` means "same" (see `same_padding`); `padding` is
    then the padding before the first pixel and `padding_after` the one after the last."""

    in_chs: int
    out_chs: int
    kernel_size: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | None = None
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    label: str = "conv"
    padding_after: tuple[int, int] = field(default=(0, 0), init=False)
    same: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        for name in ("kernel_size", "stride", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        if self.padding is None:
            pads = [same_padding(k, d, s) for k, d, s in zip(self.kernel_size, self.dilation, self.stride)]
            object.__setattr__(self, "padding", tuple(p[0] for p in pads))
            object.__setattr__(self, "padding_after", tuple(p[1] for p in pads))
            object.__setattr__(self, "same", True)
        else:
            object.__setattr__(self, "padding", _pair(self.padding))
            object.__setattr__(self, "padding_after", self.padding)
        if min(self.in_chs, self.out_chs, self.groups) < 1:
            raise ValueError("channels and groups must be positive")
        if self.in_chs % self.groups or self.out_chs % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide both the input ({self.in_chs}) and output ({self.out_chs}) channels"
            )

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_chs, self.in_chs // self.groups, *self.kernel_size)

    @property
    def params(self) -> int:
        c_out, c_in, kh, kw = self.weight_shape
        return c_out * c_in * kh * kw + (self.out_chs if self.bias else 0)

    @property
    def effective_kernel(self) -> tuple[int, int]:
        """The span of the dilated kernel, d(k-1)+1, per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))  # type: ignore[return-value]

    @property
    def symmetric(self) -> bool:
        return self.padding == self.padding_after

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return tuple(output_size(n, k, s, p, d, a) for n, k, s, p, d, a in
                     zip(size, self.kernel_size, self.stride, self.padding, self.dilation,
                         self.padding_after))  # type: ignore[return-value]

    def macs(self, size: tuple[int, int]) -> int:
        h, w = self.output_size(size)
        c_out, c_in, kh, kw = self.weight_shape
        return h * w * c_out * c_in * kh * kw

    def to_torch(self) -> nn.Conv2d:
        # Uneven padding only comes from "same" at stride 1, which PyTorch spells padding='same'.
        padding = self.padding if self.symmetric else "same"
        return nn.Conv2d(self.in_chs, self.out_chs, self.kernel_size, self.stride, padding,
                         self.dilation, self.groups, bias=self.bias)


def standard(in_chs: int, out_chs: int, kernel_size: int | Sequence[int] = 3, **kwargs) -> ConvSpec:
    return ConvSpec(in_chs, out_chs, _pair(kernel_size), label="standard", **kwargs)


def grouped(in_chs: int, out_chs: int, kernel_size: int | Sequence[int] = 3, *, groups: int, **kwargs) -> ConvSpec:
    return ConvSpec(in_chs, out_chs, _pair(kernel_size), groups=groups, label=f"group (g={groups})", **kwargs)


def depthwise(in_chs: int, kernel_size: int | Sequence[int] = 3, *, multiplier: int = 1, **kwargs) -> ConvSpec:
    """groups = C_in: each input channel gets `multiplier` filters of its own."""
    label = "depthwise" + (f" (x{multiplier})" if multiplier != 1 else "")
    return ConvSpec(in_chs, in_chs * multiplier, _pair(kernel_size), groups=in_chs, label=label, **kwargs)


def depthwise_separable(in_chs: int, out_chs: int, kernel_size: int | Sequence[int] = 3, *, multiplier: int = 1,
                        stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1,
                        padding: int | Sequence[int] | None = None, bias: bool = False) -> tuple[ConvSpec, ConvSpec]:
    """The depthwise KxK step (carrying stride/dilation/padding) and the pointwise 1x1 step."""
    dw = depthwise(in_chs, kernel_size, multiplier=multiplier, stride=_pair(stride), dilation=_pair(dilation),
                   padding=None if padding is None else _pair(padding), bias=bias)
    pw = ConvSpec(in_chs * multiplier, out_chs, (1, 1), padding=0, bias=bias, label="pointwise 1x1")
    return dw, pw


def chain_input_sizes(specs: Sequence[ConvSpec], size: tuple[int, int] | None) -> list[tuple[int, int] | None]:
    """The input size each layer of a chain sees (after the strides of the layers before it)."""
    sizes, current = [], size
    for spec in specs:
        sizes.append(current)
        current = spec.output_size(current) if current is not None else None
    return sizes


@dataclass(frozen=True)
class LinearSpec:
    """A fully connected layer from `in_features` inputs (an image flattened) to `out_features` neurons."""

    in_features: int
    out_features: int
    bias: bool = False
    label: str = "fully connected"

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def params(self) -> int:
        return self.out_features * self.in_features + (self.out_features if self.bias else 0)

    @property
    def macs(self) -> int:
        return self.out_features * self.in_features

    def to_torch(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)


@dataclass(frozen=True)
class ConvStats:
    label: str
    weight_shape: tuple[int, ...] | None  # None for a sum of several layers
    params: int
    macs: int | None
    output_shape: tuple[int, int, int] | None

    @property
    def flops(self) -> int | None:
        return None if self.macs is None else 2 * self.macs


def stats(spec: ConvSpec, size: tuple[int, int] | None = None) -> ConvStats:
    out = (spec.out_chs, *spec.output_size(size)) if size else None
    return ConvStats(spec.label, spec.weight_shape, spec.params, spec.macs(size) if size else None, out)


def chain_stats(label: str, specs: Sequence[ConvSpec], size: tuple[int, int] | None = None) -> ConvStats:
    """Totals of layers applied one after the other (e.g. depthwise then pointwise)."""
    macs, shape, current = 0, None, size
    for spec in specs:
        if current is not None:
            macs += spec.macs(current)
            current = spec.output_size(current)
            shape = (spec.out_chs, *current)
    return ConvStats(label, None, sum(s.params for s in specs), macs if size else None, shape)


def check_against_torch(spec: ConvSpec | LinearSpec, size: tuple[int, int] = (16, 16)) -> dict[str, tuple]:
    """Build `spec` as torch.nn.Conv2d (or nn.Linear), run a zero input through it (an image of
    `size`; a vector for a linear layer), and return the mismatches as {quantity: (ours,
    torch's)} (empty when every number agrees)."""
    if isinstance(spec, LinearSpec):
        x = torch.zeros(1, spec.in_features)
        ours = dict(weight_shape=spec.weight_shape, params=spec.params, output_shape=(spec.out_features,),
                    macs=spec.macs)
    else:
        x = torch.zeros(1, spec.in_chs, *size)
        ours = dict(weight_shape=spec.weight_shape, params=spec.params,
                    output_shape=(spec.out_chs, *spec.output_size(size)), macs=spec.macs(size))
    layer = spec.to_torch()
    with torch.no_grad(), FlopCounterMode(display=False) as counter, warnings.catch_warnings():
        # padding='same' with an even span warns that it pads a copy of the input: expected here
        warnings.filterwarnings("ignore", message="Using padding='same'")
        y = layer(x)
    theirs = dict(
        weight_shape=tuple(layer.weight.shape),
        params=sum(p.numel() for p in layer.parameters()),
        output_shape=tuple(y.shape[1:]),
        macs=counter.get_total_flops() // 2,
    )
    return {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}


def naive_conv2d(image: Sequence[Sequence[float]], kernel: Sequence[Sequence[float]], *, stride: int = 1,
                 padding: int = 0, dilation: int = 1) -> list[list[float]]:
    """The sliding-window definition in plain Python (cross-correlation, as deep-learning
    frameworks compute it): out[i][j] = sum_{u,v} x[i*s + u*d - p][j*s + v*d - p] * w[u][v]."""
    h, w = len(image), len(image[0])
    kh, kw = len(kernel), len(kernel[0])
    out_h = output_size(h, kh, stride, padding, dilation)
    out_w = output_size(w, kw, stride, padding, dilation)

    def pixel(y: int, x: int) -> float:
        return image[y][x] if 0 <= y < h and 0 <= x < w else 0.0

    return [[sum(pixel(i * stride + u * dilation - padding, j * stride + v * dilation - padding) * kernel[u][v]
                 for u in range(kh) for v in range(kw))
             for j in range(out_w)] for i in range(out_h)]
