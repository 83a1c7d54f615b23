"""Channel/spatial attention modules and the `create_attn` factory.

Every module takes `channels` first, then its reduction options, and keeps the input's
shape. Each records its last attention map in `last_map` for visualisation.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .conv import make_divisible


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507).

    Global average pool, bottleneck FC-act-FC (as 1x1 convs, same parameters), gate, scale.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.act = act_layer(inplace=True) if act_layer is nn.ReLU else act_layer()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)
        self.gate = gate_layer()
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        self.last_map = scale.detach()
        return x * scale


_ATTN_LAYERS: dict[str, Callable[..., nn.Module]] = {"se": SqueezeExcite}

# Where a residual network puts each attention type: after a block's last norm ("block"),
# between stages ("stage", BAM's bottleneck placement), or as the block's spatial conv ("conv", SK).
_PLACEMENT: dict[str, str] = {"se": "block"}


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
