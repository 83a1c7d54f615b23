"""Building blocks shared by the model families."""

from .attention import BAM, CBAM, GatherExcite, SelectiveKernel, SqueezeExcite, create_attn
from .conv import ConvNormAct, DepthwiseSeparableConv, make_divisible, same_padding
from .drop import DropPath, drop_path_rates
from .head import ClassifierHead

__all__ = [
    "BAM", "CBAM", "GatherExcite", "SelectiveKernel",
    "ClassifierHead", "ConvNormAct", "DepthwiseSeparableConv", "DropPath", "SqueezeExcite",
    "create_attn", "drop_path_rates", "make_divisible", "same_padding",
]
