"""Building blocks shared by the model families."""

from .attention import BAM, CBAM, GatherExcite, SelectiveKernel, SqueezeExcite, create_attn
from .conv import ConvNormAct, DepthwiseSeparableConv, make_divisible, same_padding
from .drop import DropPath, drop_path_rates
from .head import ClassifierHead, FCHead
from .init import init_weights
from .inverted_residual import InvertedResidual

__all__ = [
    "BAM", "CBAM", "ClassifierHead", "ConvNormAct", "DepthwiseSeparableConv", "DropPath", "FCHead",
    "GatherExcite", "InvertedResidual", "SelectiveKernel", "SqueezeExcite",
    "create_attn", "drop_path_rates", "init_weights", "make_divisible", "same_padding",
]
