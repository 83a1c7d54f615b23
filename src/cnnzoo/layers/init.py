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



def init_normal(model: nn.Module, std: float = 0.01) -> None:
    """Every convolution and linear weight from N(0, std^2), biases 0, norm layers 1 / 0.

    VGG's random initialisation (Simonyan & Zisserman 2014, section 3.1). The paper's text says
    "10^-2 variance" (std 0.1); its released Caffe models used a Gaussian filler with std 0.01,
    which is what trains an 11-layer net without batch norm and what reimplementations use.
    """
    _reinit(model, lambda weight: nn.init.normal_(weight, 0.0, std))


def init_glorot(model: nn.Module) -> None:
    """Glorot & Bengio 2010's "normalized" initialisation (uniform in +-sqrt(6 / (fan_in + fan_out)))
    for every convolution and linear weight, biases 0: what the VGG paper says, after submission,
    trains its deep nets without pre-training."""
    _reinit(model, nn.init.xavier_uniform_)


def _reinit(model: nn.Module, weight_init) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
