"""TensorFlow's "same" padding for strided layers, as weights ported from TF-slim expect.

PyTorch pads a KxK layer symmetrically (K // 2 on each side). TensorFlow's "same" pads the
total that makes the output ceil(in / stride) and puts the odd pixel at the bottom/right, so
a strided layer sees a grid shifted by one pixel. For stride 1 and odd K the two agree, so only
strided convolutions and max pools change. The padding is applied by a forward pre-hook, which
keeps every parameter name (and so the state dict) as it was.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one dimension under TF's "same"."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _pad_hook(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    (kh, kw), (sh, sw), (dh, dw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    top, bottom = same_pads(x.shape[-2], kh, sh, dh)
    left, right = same_pads(x.shape[-1], kw, sw, dw)
    fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0  # a max pool never picks the padding
    return (F.pad(x, (left, right, top, bottom), value=fill),) + tuple(args[1:])


def use_tf_same_padding(model: nn.Module) -> nn.Module:
    """Give every strided convolution and max pool of `model` TF's "same" padding, in place."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)) and max(_pair(module.stride)) > 1:
            module.padding = 0 if isinstance(module, nn.MaxPool2d) else (0, 0)
            module.register_forward_pre_hook(_pad_hook)
    return model


__all__ = ["same_pads", "use_tf_same_padding"]

