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


def create_attn(attn_layer: str | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Build the attention module named `attn_layer` for `channels`, or None for no attention."""
    if attn_layer is None or attn_layer == "":
        return None
    try:
        return _ATTN_LAYERS[attn_layer](channels, **kwargs)
    except KeyError:
        raise ValueError(
            f"unknown attn_layer {attn_layer!r}; choose from {', '.join(sorted(_ATTN_LAYERS))}"
        ) from None
