"""Weight initialisation shared by the families (torchvision's scheme and its variants)."""

from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module, *, conv_mode: str = "fan_out", zero_conv_bias: bool = True,
                 linear_std: float | None = 0.01) -> None:
    """He-normal convolutions, unit norm scales with zero shifts, small-normal linear layers.

    `conv_mode` is He's fan mode ("fan_out" as torchvision's ResNet/VGG/Inception, "fan_in"
    as DenseNet and NIN); `zero_conv_bias=False` leaves conv biases at PyTorch's default;
    `linear_std=None` leaves linear layers at PyTorch's default.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if zero_conv_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
