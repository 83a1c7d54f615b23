"""Shake-Shake regularisation (Gastaldi 2017, "Shake-Shake regularization", arXiv 1705.07485).

Two residual branches are mixed with a random weight `alpha` in the forward pass and an
independent random weight `beta` in the backward pass; at evaluation the mix is their
expectation, 0.5 each. "Image" level draws one coefficient per sample, "batch" level one
per mini-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import LayerFactory
from .drop import drop_path_or_identity
from .residual import add_residual, make_block_attn, make_spatial_conv

SHAKE_LEVELS = ("image", "batch")


class _ShakeShake(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake_shake(x1: torch.Tensor, x2: torch.Tensor, training: bool, *, level: str = "image",
                shake_forward: bool = True, shake_backward: bool = True) -> torch.Tensor:
    """Mix two branches: random weights while training ("Shake-Shake-Image" by default), 0.5 at eval.

    `shake_forward=False` uses 0.5 forward ("Even"), `shake_backward=False` reuses the
    forward weight backward ("Keep" when forward shakes).
    """
    if not training:
        return 0.5 * (x1 + x2)
    if level not in SHAKE_LEVELS:
        raise ValueError(f"level must be one of {SHAKE_LEVELS}, got {level!r}")
    shape = (x1.shape[0],) + (1,) * (x1.ndim - 1) if level == "image" else (1,) * x1.ndim
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype) if shake_forward else x1.new_full(shape, 0.5)
    if not shake_backward:
        beta = alpha
    else:
        beta = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    return _ShakeShake.apply(x1, x2, alpha, beta)


class ShakeShortcut(nn.Module):
    """The paper's downsampling shortcut: ReLU, then two 1x1 convs of half the output width
    on the input subsampled at offsets (0, 0) and (1, 1), concatenated, then BN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, norm_layer: LayerFactory = nn.BatchNorm2d):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chs, out_chs // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_chs, out_chs - out_chs // 2, 1, bias=False)
        self.bn = norm_layer(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)  # not in place: the branches read x too
        a = x[:, :, :: self.stride, :: self.stride]
        # Shift by one pixel so the second path sees the pixels the first one skips.
        b = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))[:, :, :: self.stride, :: self.stride]
        return self.bn(torch.cat([self.conv1(a), self.conv2(b)], dim=1))


class ShakeBranch(nn.Sequential):
    """ReLU - conv3x3 - BN - ReLU - conv3x3 - BN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, attn_layer: str | None, attn_kwargs: dict | None,
                 norm_layer: LayerFactory, act_layer: LayerFactory):
        conv1, bn1, act2 = make_spatial_conv(in_chs, out_chs, stride=stride, attn_layer=attn_layer,
                                             attn_kwargs=attn_kwargs, norm_layer=norm_layer, act_layer=act_layer)
        super().__init__()
        self.act1 = act_layer()  # not in place: the other branch and the shortcut read the input
        self.conv1, self.bn1, self.act2 = conv1, bn1, act2
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(out_chs)


class ShakeShakeBlock(nn.Module):
    """Two `ShakeBranch`es mixed by `shake_shake`, plus the shortcut (the ResNet block signature)."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, attn_layer: str | None = None,
                 attn_kwargs: dict | None = None, norm_layer: LayerFactory = nn.BatchNorm2d,
                 act_layer: LayerFactory = nn.ReLU, drop_path: float = 0.0, level: str = "image",
                 shake_forward: bool = True, shake_backward: bool = True):
        super().__init__()
        if groups != 1 or base_width != 64 or dilation != 1:
            raise ValueError("ShakeShakeBlock supports only groups=1, base_width=64, dilation=1")
        self.branch1, self.branch2 = (
            ShakeBranch(in_chs, planes, stride, attn_layer, attn_kwargs, norm_layer, act_layer) for _ in range(2)
        )
        self.attn = make_block_attn(attn_layer, planes, attn_kwargs)
        self.downsample = downsample
        self.drop_path = drop_path_or_identity(drop_path)
        self.level, self.shake_forward, self.shake_backward = level, shake_forward, shake_backward

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.branch1.bn2.weight)
        nn.init.zeros_(self.branch2.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        mixed = shake_shake(self.branch1(x), self.branch2(x), self.training, level=self.level,
                            shake_forward=self.shake_forward, shake_backward=self.shake_backward)
        return add_residual(self.drop_path(self.attn(mixed)), shortcut)
