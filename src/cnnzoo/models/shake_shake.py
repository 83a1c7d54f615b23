"""Shake-Shake (Gastaldi 2017, "Shake-Shake regularization", arXiv 1705.07485).

A 26-layer CIFAR ResNet (3x3 stem of 16 + BN, three stages of 4 blocks, widths k, 2k, 4k for
"2x{k}d") whose blocks have two residual branches mixed with random weights: a fresh
forward weight and a fresh backward weight per image in training ("Shake-Shake-Image", the
paper's best CIFAR-10 setting), 0.5 each at evaluation. Each branch is ReLU-conv-BN-ReLU-
conv-BN, so the stem has no ReLU and the net ends with ReLU before pooling; the downsampling
shortcut is the paper's two shifted 1x1 convs. Reuses the ResNet class (and so its
`attn_layer` plug-ins); `block_args=dict(level="batch", shake_forward=False, ...)` selects
the paper's other settings.
"""

from __future__ import annotations

from torch import nn

from ..layers.conv import make_act
from ..layers.shake import ShakeShakeBlock, ShakeShortcut
from ..registry import Paper, build_model, register_model
from .resnet import ResNet

PAPER = Paper("Shake-Shake regularization", 2017, "1705.07485", "Gastaldi")


class ShakeResNet(ResNet):
    """ResNet with `ShakeShakeBlock`s, a conv-BN stem, the shifted shortcut and a final ReLU."""

    @staticmethod
    def _resolve_block(block: str | type[nn.Module]) -> type[nn.Module]:
        if block not in ("shake", ShakeShakeBlock):
            raise ValueError(f"ShakeResNet uses ShakeShakeBlock ('shake'), got {block!r}")
        return ShakeShakeBlock

    def _make_stem(self, stem: str, stem_width: int, in_chans: int) -> None:
        super()._make_stem(stem, stem_width, in_chans)
        self.act1 = nn.Identity()  # every branch and shortcut starts with its own ReLU

    def _make_final_norm(self, channels: int) -> nn.Module:
        return make_act(self.act_layer)

    def _make_block(self, stage: int, index: int, in_chs: int, planes: int, *, stride: int, **kwargs) -> nn.Module:
        same_shape = stride == 1 and in_chs == planes
        downsample = None if same_shape else ShakeShortcut(in_chs, planes, stride, self.norm_layer)
        return self.block(in_chs, planes, stride, downsample, norm_layer=self.norm_layer, act_layer=self.act_layer,
                          **kwargs)


def shake_args(width: int) -> dict:
    return dict(block="shake", layers=(4, 4, 4), widths=(width, 2 * width, 4 * width), stem="cifar", stem_width=16,
                num_classes=10)


_CIFAR = dict(family="shake_shake", paper=PAPER, input_style="cifar", num_classes=10)


@register_model(**_CIFAR, ref_params=2_923_162, ref_source="cnnzoo (the paper: 2.9M)")
def shake_resnet26_2x32d_cifar(**kwargs) -> ShakeResNet:
    """Shake-Shake 26 2x32d."""
    return build_model(ShakeResNet, shake_args(32), kwargs)


@register_model(**_CIFAR, ref_params=11_653_978, ref_source="cnnzoo (the paper: 11.7M)")
def shake_resnet26_2x64d_cifar(**kwargs) -> ShakeResNet:
    """Shake-Shake 26 2x64d."""
    return build_model(ShakeResNet, shake_args(64), kwargs)


@register_model(**_CIFAR, ref_params=26_192_922, ref_source="cnnzoo (the paper: 26.2M)")
def shake_resnet26_2x96d_cifar(**kwargs) -> ShakeResNet:
    """Shake-Shake 26 2x96d."""
    return build_model(ShakeResNet, shake_args(96), kwargs)
