"""The Inception module family: parallel towers whose outputs are concatenated.

One implementation serves every Inception network in cnnzoo. `InceptionModule` runs named
towers side by side and concatenates them along channels; `InceptionResidual` adds the
concatenation, projected back by a linear 1x1 convolution and scaled, to its input
(Inception-ResNet). A module is described as data: each tower is a list of convolution
specs `(out_chs, kernel[, stride[, padding]])` (padding defaults to "same"; 0 is the
papers' "valid"), optionally ending in a `Split` into parallel convolutions (Inception-v3's
expanded 8x8 modules), plus an optional `Pool` tower.

The per-paper builders below are thin wrappers over `inception(...)`: GoogLeNet (Szegedy et
al. 2014), BN-Inception (Ioffe & Szegedy 2015), Inception v3 (Szegedy et al. 2016),
Inception v4 and Inception-ResNet v1/v2 (Szegedy et al. 2017).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from .attention import create_attn
from .conv import ConvNormAct
from .residual import add_residual

ConvFactory = Callable[..., nn.Module]  # conv(in_chs, out_chs, kernel_size, stride=1, padding=None)


def bn_conv(eps: float = 1e-3) -> ConvFactory:
    """Conv (no bias) -> BN -> ReLU; eps 1e-3 as in the TensorFlow-trained Inception nets."""
    return partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=eps))


def plain_conv() -> ConvFactory:
    """Conv (with bias) -> ReLU, for the pre-batch-norm GoogLeNet of the paper."""
    return partial(ConvNormAct, norm_layer=None)


class Split(NamedTuple):
    """The end of a tower that fans out into parallel convolutions, concatenated."""

    specs: tuple


class Pool(NamedTuple):
    """A pooling tower: 3x3 pooling, then a 1x1 projection to `proj` channels (0 = pass-through)."""

    kind: str = "avg"
    proj: int = 0
    stride: int = 1
    padding: int = 1
    count_include_pad: bool = True


class InceptionModule(nn.Module):
    """Named towers applied to the same input; outputs concatenated along channels.

    `add_attn(attn_layer)` recalibrates the concatenation (child `attn`): SE-Inception (Hu et
    al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507, Fig. 2) takes the whole
    module as the transformation its SE block gates.
    """

    def __init__(self, towers: OrderedDict[str, nn.Module], out_chs: int):
        super().__init__()
        for name, tower in towers.items():
            self.add_module(name, tower)
        self.tower_names = list(towers)
        self.out_chs = out_chs
        self.attn: nn.Module | None = None

    def add_attn(self, attn_layer: str | None, **attn_kwargs) -> InceptionModule:
        self.attn = create_attn(attn_layer, self.out_chs, **attn_kwargs)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, name)(x) for name in self.tower_names], dim=1)
        return out if self.attn is None else self.attn(out)


class InceptionResidual(nn.Module):
    """Inception-ResNet block: act(x + scale * proj(towers(x))).

    The 1x1 projection is linear (bias, no norm, no activation) as in the paper's figures
    10-13 and 16-19; scaling the residual by 0.1-0.3 keeps very wide nets stable (section 3.3).
    `add_attn(attn_layer)` gates the projected branch before the sum (child `attn`), where the
    SE paper puts SE on residual networks (Hu et al. 2018, arXiv 1709.01507, Fig. 3).
    """

    def __init__(self, towers: InceptionModule, chs: int, scale: float = 1.0, act: bool = True):
        super().__init__()
        self.towers = towers
        self.proj = nn.Conv2d(towers.out_chs, chs, 1, bias=True)
        self.attn: nn.Module | None = None
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.out_chs = chs

    def add_attn(self, attn_layer: str | None, **attn_kwargs) -> InceptionResidual:
        self.attn = create_attn(attn_layer, self.out_chs, **attn_kwargs)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.proj(self.towers(x))
        if self.attn is not None:
            branch = self.attn(branch)
        return self.act(add_residual(branch.mul_(self.scale), x))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _conv_from_spec(conv: ConvFactory, in_chs: int, spec: tuple) -> nn.Module:
    out_chs, kernel, *rest = spec
    stride = rest[0] if rest else 1
    padding = rest[1] if len(rest) > 1 else None
    return conv(in_chs, out_chs, kernel, stride, padding)


def tower(conv: ConvFactory, in_chs: int, specs: Sequence) -> tuple[nn.Module, int]:
    """A chain of convolutions (and an optional final `Split`); returns it with its width."""
    layers, chs = [], in_chs
    for spec in specs:
        if isinstance(spec, Split):
            split = inception(chs, conv, [[s] for s in spec.specs])
            layers.append(split)
            chs = split.out_chs
        else:
            layers.append(_conv_from_spec(conv, chs, spec))
            chs = spec[0]
    return (layers[0] if len(layers) == 1 else nn.Sequential(*layers)), chs


def pool_tower(conv: ConvFactory, in_chs: int, pool: Pool) -> tuple[nn.Module, int]:
    if pool.kind == "max":
        layer = nn.MaxPool2d(3, pool.stride, pool.padding)
    elif pool.kind == "avg":
        layer = nn.AvgPool2d(3, pool.stride, pool.padding, count_include_pad=pool.count_include_pad)
    else:
        raise ValueError(f"pool kind must be 'avg' or 'max', got {pool.kind!r}")
    if not pool.proj:
        return layer, in_chs
    return nn.Sequential(layer, conv(in_chs, pool.proj, 1)), pool.proj


def inception(in_chs: int, conv: ConvFactory, towers: Sequence[Sequence | Pool],
              pool: Pool | None = None) -> InceptionModule:
    """An Inception module from data: towers `branch1`..`branchN`, then `pool` if given.

    A tower is a list of conv specs or a `Pool` (to put a pooling tower elsewhere than last).
    """
    built, widths = OrderedDict(), []
    for i, spec in enumerate([*towers, pool] if pool is not None else towers, 1):
        make = pool_tower if isinstance(spec, Pool) else tower
        built[f"branch{i}"], width = make(conv, in_chs, spec)
        widths.append(width)
    return InceptionModule(built, sum(widths))


def conv_stem(in_chans: int, conv: ConvFactory, specs: Sequence, cifar: bool = False) -> nn.Sequential:
    """A plain stem from conv specs and "M" (3x3/2 max-pool).

    `cifar=True` keeps the 32x32 resolution: every conv gets stride 1 and "same" padding and
    the max-pools are dropped, so the channel widths (and parameters) stay those of the paper.
    """
    layers, chs, n_conv, n_pool = OrderedDict(), in_chans, 0, 0
    for spec in specs:
        if spec == "M":
            if not cifar:
                n_pool += 1
                layers[f"pool{n_pool}"] = nn.MaxPool2d(3, 2)
            continue
        if cifar:
            spec = (spec[0], spec[1], 1, None)
        n_conv += 1
        layers[f"conv{n_conv}"] = _conv_from_spec(conv, chs, spec)
        chs = spec[0]
    stem = nn.Sequential(layers)
    stem.out_chs = chs
    return stem


# ----------------------------------------------------------------------------------------------
# GoogLeNet and BN-Inception.


def googlenet_module(in_chs: int, conv: ConvFactory, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                     pool_proj: int, c5_kernel: int = 5) -> InceptionModule:
    """GoogLeNet's module (paper Table 1): 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3 max-pool-1x1."""
    return inception(in_chs, conv, [[(c1, 1)], [(c3r, 1), (c3, 3)], [(c5r, 1), (c5, c5_kernel)]],
                     Pool("max", pool_proj))


def bn_inception_module(in_chs: int, conv: ConvFactory, c1: int, c3: tuple[int, int], d3: tuple[int, int],
                        pool: str, pool_proj: int, stride: int = 1) -> InceptionModule:
    """BN-Inception's module (Ioffe & Szegedy 2015, Figure 5): 5x5 factorised into two 3x3.

    Stride-2 modules (3c, 4e) have no 1x1 tower and pass the max-pooled input through.
    """
    towers = [[(c1, 1)]] if c1 else []
    towers += [[(c3[0], 1), (c3[1], 3, stride)], [(d3[0], 1), (d3[1], 3), (d3[1], 3, stride)]]
    return inception(in_chs, conv, towers, Pool(pool, pool_proj, stride))


# ----------------------------------------------------------------------------------------------
# Inception v3 (the torchvision / TF-slim layout).


def inception_v3_a(in_chs: int, conv: ConvFactory, pool_proj: int, c1: int = 64,
                   count_include_pad: bool = True) -> InceptionModule:
    """35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool-1x1."""
    return inception(in_chs, conv, [[(c1, 1)], [(48, 1), (64, 5)], [(64, 1), (96, 3), (96, 3)]],
                     Pool("avg", pool_proj, count_include_pad=count_include_pad))


def inception_v3_c(in_chs: int, conv: ConvFactory, c7: int) -> InceptionModule:
    """17x17 module with 7x7 convolutions factorised into 1x7 and 7x1 (paper Figure 6)."""
    return inception(in_chs, conv, [
        [(192, 1)],
        [(c7, 1), (c7, (1, 7)), (192, (7, 1))],
        [(c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))],
    ], Pool("avg", 192))


def inception_v3_e(in_chs: int, conv: ConvFactory) -> InceptionModule:
    """8x8 module with expanded filter banks (paper Figure 7): towers split into 1x3 and 3x1."""
    split = Split(((384, (1, 3)), (384, (3, 1))))
    return inception(in_chs, conv, [[(320, 1)], [(384, 1), split], [(448, 1), (384, 3), split]],
                     Pool("avg", 192))


def reduction_a(in_chs: int, conv: ConvFactory, k: int, l: int, m: int, n: int) -> InceptionModule:
    """Grid reduction 3x3/2 | 1x1(k)-3x3(l)-3x3/2(m) | max-pool (v4 paper Figure 7, v3's 35->17).

    Inception v4 uses (k, l, m, n) = (192, 224, 256, 384), Inception-ResNet-v1 (192, 192, 256,
    384), -v2 (256, 256, 384, 384), and Inception v3's first reduction is (64, 96, 96, 384).
    """
    return inception(in_chs, conv, [[(n, 3, 2, 0)], [(k, 1), (l, 3), (m, 3, 2, 0)]],
                     Pool("max", 0, 2, 0))


def reduction_b(in_chs: int, conv: ConvFactory, a: tuple[int, int], b: tuple[int, int, int, int]) -> InceptionModule:
    """Grid reduction 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool (v3's 17->8, v4 Figure 8)."""
    return inception(in_chs, conv, [
        [(a[0], 1), (a[1], 3, 2, 0)],
        [(b[0], 1), (b[1], (1, 7)), (b[2], (7, 1)), (b[3], 3, 2, 0)],
    ], Pool("max", 0, 2, 0))


# ----------------------------------------------------------------------------------------------
# Inception v4 (paper Figures 3-6, 8; identical to TF-slim and timm).


def _valid(cifar: bool) -> int | None:
    # The CIFAR variants keep the resolution where the paper's stem uses "valid" convolutions.
    return None if cifar else 0


def inception_v4_stem_a(in_chs: int, conv: ConvFactory, cifar: bool = False) -> InceptionModule:
    """Stem part 1 (Figure 3): 3x3/2 max-pool | 3x3/2 conv 96 (pool first, as in TF-slim)."""
    stride = 1 if cifar else 2
    return inception(in_chs, conv, [Pool("max", 0, stride, 1 if cifar else 0), [(96, 3, stride, _valid(cifar))]])


def inception_v4_stem_b(in_chs: int, conv: ConvFactory, cifar: bool = False) -> InceptionModule:
    """Stem part 2 (Figure 3): 1x1-3x3 | 1x1-7x1-1x7-3x3, all valid 3x3s."""
    pad = _valid(cifar)
    return inception(in_chs, conv, [
        [(64, 1), (96, 3, 1, pad)],
        [(64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, pad)],
    ])


def inception_v4_stem_c(in_chs: int, conv: ConvFactory, cifar: bool = False) -> InceptionModule:
    """Stem part 3 (Figure 3): 3x3/2 conv 192 | 3x3/2 max-pool."""
    stride = 1 if cifar else 2
    return inception(in_chs, conv, [[(192, 3, stride, _valid(cifar))]], Pool("max", 0, stride, 1 if cifar else 0))


def inception_v4_a(in_chs: int, conv: ConvFactory) -> InceptionModule:
    """Inception-A (Figure 4): 1x1 96 | 1x1 64-3x3 96 | 1x1 64-3x3 96-3x3 96 | avg-pool-1x1 96."""
    return inception(in_chs, conv, [[(96, 1)], [(64, 1), (96, 3)], [(64, 1), (96, 3), (96, 3)]],
                     Pool("avg", 96, count_include_pad=False))


def inception_v4_b(in_chs: int, conv: ConvFactory) -> InceptionModule:
    """Inception-B (Figure 5): 1x1 384 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg-pool-1x1 128."""
    return inception(in_chs, conv, [
        [(384, 1)],
        [(192, 1), (224, (1, 7)), (256, (7, 1))],
        [(192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))],
    ], Pool("avg", 128, count_include_pad=False))


def inception_v4_c(in_chs: int, conv: ConvFactory) -> InceptionModule:
    """Inception-C (Figure 6): 1x1 256 | 1x1 384-split | 1x1 384-3x1 448-1x3 512-split | pool."""
    split = Split(((256, (1, 3)), (256, (3, 1))))
    return inception(in_chs, conv, [
        [(256, 1)],
        [(384, 1), split],
        [(384, 1), (448, (3, 1)), (512, (1, 3)), split],
    ], Pool("avg", 256, count_include_pad=False))


# ----------------------------------------------------------------------------------------------
# Inception-ResNet v1 (paper Figures 10-14) and v2 (the TF-slim / timm layout).


def inception_resnet_a(chs: int, conv: ConvFactory, c3dbl: tuple[int, int], scale: float,
                       act: bool = True) -> InceptionResidual:
    """35x35 residual block: 1x1 32 | 1x1 32-3x3 32 | 1x1 32-3x3-3x3 (`c3dbl`), then 1x1 to `chs`."""
    towers = inception(chs, conv, [[(32, 1)], [(32, 1), (32, 3)], [(32, 1), (c3dbl[0], 3), (c3dbl[1], 3)]])
    return InceptionResidual(towers, chs, scale, act)


def inception_resnet_b(chs: int, conv: ConvFactory, c1: int, c7: tuple[int, int, int], scale: float,
                       act: bool = True) -> InceptionResidual:
    """17x17 residual block: 1x1 c1 | 1x1-1x7-7x1, then 1x1 back to `chs`."""
    towers = inception(chs, conv, [[(c1, 1)], [(c7[0], 1), (c7[1], (1, 7)), (c7[2], (7, 1))]])
    return InceptionResidual(towers, chs, scale, act)


def inception_resnet_c(chs: int, conv: ConvFactory, c1: int, c3: tuple[int, int, int], scale: float,
                       act: bool = True) -> InceptionResidual:
    """8x8 residual block: 1x1 c1 | 1x1-1x3-3x1, then 1x1 back to `chs`."""
    towers = inception(chs, conv, [[(c1, 1)], [(c3[0], 1), (c3[1], (1, 3)), (c3[2], (3, 1))]])
    return InceptionResidual(towers, chs, scale, act)


def reduction_b_residual(in_chs: int, conv: ConvFactory, a: tuple[int, int], b: tuple[int, int],
                         c: tuple[int, int, int]) -> InceptionModule:
    """Inception-ResNet's 17->8 reduction (Figures 12, 18): three conv towers and a max-pool."""
    return inception(in_chs, conv, [
        [(a[0], 1), (a[1], 3, 2, 0)],
        [(b[0], 1), (b[1], 3, 2, 0)],
        [(c[0], 1), (c[1], 3), (c[2], 3, 2, 0)],
    ], Pool("max", 0, 2, 0))
