"""Channel/spatial attention modules and the `create_attn` factory.

Every module takes `channels` first, then its reduction options (`rd_ratio`, `rd_channels`,
`rd_divisor`), and keeps the input's shape (SK keeps it unless given `out_channels`/`stride`).
Each records its last attention map in `last_map` (detached) so it can be drawn later:
SE and CBAM's channel part (B,C,1,1), CBAM's spatial part (B,1,H,W), BAM (B,C,H,W), GE
(B,C,h,w) before it is interpolated back, SK the branch weights (B,branches,C,1,1).

BAM and SK normalise pooled (1x1) features with BatchNorm, as their papers do, so they need
more than one sample per batch in training mode.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConvNormAct, LayerFactory, make_act, make_divisible


def _rd_channels(channels: int, rd_ratio: float, rd_channels: int | None, rd_divisor: int) -> int:
    if rd_channels is not None:
        return rd_channels
    return make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)


class _ChannelGate(nn.Module):
    """The bottleneck MLP (FC-act-FC as 1x1 convs) and gate that SE and CBAM's channel part share."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: LayerFactory = nn.ReLU,
        gate_layer: LayerFactory = nn.Sigmoid,
    ):
        super().__init__()
        rd = _rd_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = make_act(act_layer)
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = gate_layer()
        self.last_map: torch.Tensor | None = None

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def _scale(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scale = self.gate(logits)
        if not torch.jit.is_scripting():  # a scripted module keeps no picture state
            self.last_map = scale.detach()
        return x * scale


class SqueezeExcite(_ChannelGate):
    """Squeeze-and-Excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507).

    Global average pool, bottleneck FC-act-FC (as 1x1 convs, same parameters), gate, scale.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x, self.mlp(x.mean((2, 3), keepdim=True)))


class ChannelAttn(_ChannelGate):
    """CBAM's channel attention: SE's MLP, shared by the average- and the max-pooled features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x, self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


class SpatialAttn(nn.Module):
    """CBAM's spatial attention: a 7x7 conv over the channel-wise average and max maps."""

    def __init__(self, kernel_size: int = 7, norm_layer: LayerFactory | None = nn.BatchNorm2d,
                 gate_layer: LayerFactory = nn.Sigmoid):
        super().__init__()
        # BatchNorm after the conv follows the authors' code (the paper's text has a bare conv).
        self.conv = ConvNormAct(2, 1, kernel_size, norm_layer=norm_layer, act_layer=None)
        self.gate = gate_layer()
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        scale = self.gate(self.conv(pooled))
        if not torch.jit.is_scripting():  # a scripted module keeps no picture state
            self.last_map = scale.detach()
        return x * scale


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo, Park, Lee & Kweon 2018, "CBAM: Convolutional
    Block Attention Module", arXiv 1807.06521): channel attention, then spatial attention.

    `last_map` is the spatial map; the channel map is `channel.last_map`.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, spatial_kernel: int = 7, act_layer: LayerFactory = nn.ReLU,
                 norm_layer: LayerFactory | None = nn.BatchNorm2d, gate_layer: LayerFactory = nn.Sigmoid):
        super().__init__()
        self.channel = ChannelAttn(channels, rd_ratio, rd_channels, rd_divisor, act_layer, gate_layer)
        self.spatial = SpatialAttn(spatial_kernel, norm_layer, gate_layer)

    @property
    def last_map(self) -> torch.Tensor | None:
        return self.spatial.last_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class BAM(nn.Module):
    """Bottleneck Attention Module (Park, Woo, Lee & Kweon 2018, "BAM: Bottleneck Attention
    Module", arXiv 1807.06514).

    Channel branch: global average pool, FC-BN-ReLU-FC. Spatial branch: 1x1 reduction, two
    3x3 convolutions with dilation 4, 1x1 to one map. Output `x * (1 + sigmoid(Mc + Ms))`.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, dilation: int = 4, num_dilated: int = 2, act_layer: LayerFactory = nn.ReLU,
                 norm_layer: LayerFactory = nn.BatchNorm2d, gate_layer: LayerFactory = nn.Sigmoid):
        super().__init__()
        rd = _rd_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.channel_gate = nn.Sequential(
            nn.Conv2d(channels, rd, 1, bias=False), norm_layer(rd), make_act(act_layer), nn.Conv2d(rd, channels, 1),
        )
        dilated = [ConvNormAct(rd, rd, 3, dilation=dilation, norm_layer=norm_layer, act_layer=act_layer)
                   for _ in range(num_dilated)]
        self.spatial_gate = nn.Sequential(
            ConvNormAct(channels, rd, 1, norm_layer=norm_layer, act_layer=act_layer), *dilated, nn.Conv2d(rd, 1, 1),
        )
        self.gate = gate_layer()
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.gate(self.channel_gate(x.mean((2, 3), keepdim=True)) + self.spatial_gate(x))
        if not torch.jit.is_scripting():  # a scripted module keeps no picture state
            self.last_map = attn.detach()
        return x * (1 + attn)


class GlobalDepthwiseGather(nn.Module):
    """GE-theta's global gather: a per-channel weighted sum over a `size` x `size` grid.

    The paper uses a depthwise conv as large as the feature map, which fixes the input size;
    pooling to a fixed grid first gives exactly that at a `size` x `size` map and works at
    any other. Starts as a plain average.
    """

    def __init__(self, channels: int, size: int = 7):
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.full((channels, size, size), 1.0 / size**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.adaptive_avg_pool2d(x, self.size)
        return (grid * self.weight).sum((2, 3), keepdim=True)


class GatherExcite(nn.Module):
    """Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi 2018, "Gather-Excite: Exploiting Feature
    Context in Convolutional Neural Networks", arXiv 1810.12348).

    Gather over `extent` (2, 4, 8: a stride-`extent` summary; 0: global), excite with a
    sigmoid gate interpolated back to the input size. `extra_params=False` is the
    parameter-free GE-theta-minus (average pooling); `extra_params=True` is GE-theta (strided
    depthwise 3x3 convs, log2(extent) of them; global: `GlobalDepthwiseGather`);
    `use_mlp=True` adds the SE-style channel MLP of GE-theta-plus.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, extent: int = 0, extra_params: bool = False, use_mlp: bool = False,
                 global_size: int = 7, act_layer: LayerFactory = nn.ReLU, norm_layer: LayerFactory = nn.BatchNorm2d,
                 gate_layer: LayerFactory = nn.Sigmoid):
        super().__init__()
        if extent < 0 or (extent > 0 and extent & (extent - 1)):
            raise ValueError(f"extent must be 0 (global) or a power of two (2, 4, 8), got {extent}")
        self.extent = extent
        self.gather = _make_gather(channels, extent, extra_params, global_size, act_layer, norm_layer)
        self.mlp = nn.Identity()
        if use_mlp:
            rd = _rd_channels(channels, rd_ratio, rd_channels, rd_divisor)
            self.mlp = nn.Sequential(nn.Conv2d(channels, rd, 1), make_act(act_layer), nn.Conv2d(rd, channels, 1))
        self.gate = gate_layer()
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(self.mlp(self.gather(x)))
        if not torch.jit.is_scripting():  # a scripted module keeps no picture state
            self.last_map = gate.detach()
        if gate.shape[-2:] != x.shape[-2:] and gate.shape[-2:] != (1, 1):
            gate = F.interpolate(gate, size=x.shape[-2:], mode="nearest")
        return x * gate


def _make_gather(channels: int, extent: int, extra_params: bool, global_size: int,
                 act_layer: LayerFactory, norm_layer: LayerFactory) -> nn.Module:
    if not extra_params:
        if extent == 0:
            return nn.AdaptiveAvgPool2d(1)
        # A (2e-1)-wide window at stride e: each output averages its e x e cell and a half-cell border.
        return nn.AvgPool2d(2 * extent - 1, extent, extent - 1, count_include_pad=False)
    if extent == 0:
        return nn.Sequential(GlobalDepthwiseGather(channels, global_size), norm_layer(channels))
    steps = int(math.log2(extent))
    return nn.Sequential(*[
        ConvNormAct(channels, channels, 3, 2, groups=channels, norm_layer=norm_layer,
                    act_layer=act_layer if i < steps - 1 else None)
        for i in range(steps)
    ])


class SelectiveKernel(nn.Module):
    """Selective Kernel convolution (Li, Wang, Hu & Yang 2019, "Selective Kernel Networks",
    arXiv 1903.06586).

    Split: `num_branches` grouped 3x3 convs with dilation 1, 2, ... (a dilated 3x3 stands in
    for the 5x5, as in the paper), each with BN-ReLU. Fuse: sum, global average pool, FC to
    z = max(C/r, `min_rd`) with BN-ReLU. Select: an FC per branch and a softmax over branches.
    As a plug-in it maps `channels` to `channels`; the SK blocks use it as their 3x3 conv.
    `branch_groups` gives the branch convs their own group count (default: `groups`, the
    block's cardinality), the paper's G of SK[M, G, r] when it differs from the cardinality.
    `dilated=False` gives the larger branches true 5x5 (7x7, ...) kernels instead of dilated 3x3s.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 min_rd: int = 32, out_channels: int | None = None, stride: int = 1, groups: int = 1,
                 dilation: int = 1, num_branches: int = 2, branch_groups: int | None = None, dilated: bool = True,
                 norm_layer: LayerFactory = nn.BatchNorm2d, act_layer: LayerFactory = nn.ReLU):
        super().__init__()
        out_channels = out_channels or channels
        groups = branch_groups or groups
        self.num_branches = num_branches
        self.branches = nn.ModuleList([
            ConvNormAct(channels, out_channels, 3 if dilated else 3 + 2 * i, stride,
                        dilation=dilation * (i + 1) if dilated else dilation, groups=groups,
                        norm_layer=norm_layer, act_layer=act_layer)
            for i in range(num_branches)
        ])
        rd = rd_channels or max(int(out_channels * rd_ratio), min_rd)
        self.fc_reduce = ConvNormAct(out_channels, rd, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.fc_select = nn.Conv2d(rd, out_channels * num_branches, 1, bias=False)
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # B, M, C, H, W
        z = self.fc_reduce(feats.sum(1).mean((2, 3), keepdim=True))
        weights = self.fc_select(z).view(x.shape[0], self.num_branches, -1, 1, 1).softmax(dim=1)
        if not torch.jit.is_scripting():  # a scripted module keeps no picture state
            self.last_map = weights.detach()
        return (feats * weights).sum(1)


_ATTN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite, "cbam": CBAM, "bam": BAM, "ge": GatherExcite, "sk": SelectiveKernel,
}

# Where a residual network puts each attention type, following its paper: after a block's
# last norm ("block"), between stages ("stage": BAM at the bottlenecks of the network), or
# as the block's 3x3 conv ("conv": SK).
_PLACEMENT: dict[str, str] = {"se": "block", "cbam": "block", "ge": "block", "bam": "stage", "sk": "conv"}


def attn_names() -> list[str]:
    return sorted(_ATTN_LAYERS)


def attn_placement(attn_layer: str | None) -> str | None:
    """Where a residual network puts `attn_layer` by default; None for no attention."""
    if not attn_layer:
        return None
    _check_name(attn_layer)
    return _PLACEMENT[attn_layer]


def create_attn(attn_layer: str | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Build the attention module named `attn_layer` for `channels`, or None for no attention."""
    if not attn_layer:
        return None
    _check_name(attn_layer)
    return _ATTN_LAYERS[attn_layer](channels, **kwargs)


def _check_name(attn_layer: str) -> None:
    if attn_layer not in _ATTN_LAYERS:
        raise ValueError(f"unknown attn_layer {attn_layer!r}; choose from {', '.join(attn_names())}")
