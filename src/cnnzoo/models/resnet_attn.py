"""Residual networks with attention plugged in by configuration: the ResNet / PreResNet /
ResNeXt classes with `attn_layer` set; no backbone is copied per attention type.

- SE: Hu, Shen, Albanie, Sun & Wu 2018, "Squeeze-and-Excitation Networks", arXiv 1709.01507.
  After the last BN of every block, reduction 16. The ImageNet variants round the reduced
  width to a multiple of 8 as timm does, so their counts equal timm's; the CIFAR ones do not.
- BAM: Park, Woo, Lee & Kweon 2018, "BAM: Bottleneck Attention Module", arXiv 1807.06514.
  One module at each bottleneck of the network (between stages), reduction 16, dilation 4.
  The CIFAR variants are the paper's CIFAR backbones (ResNet-50, PreResNet-110, ResNeXt-29).
- CBAM: Woo, Park, Lee & Kweon 2018, "CBAM: Convolutional Block Attention Module",
  arXiv 1807.06521. Inside every block, channel then spatial attention.
- GE: Hu, Shen, Albanie, Sun & Vedaldi 2018, "Gather-Excite: Exploiting Feature Context in
  Convolutional Neural Networks", arXiv 1810.12348. GE-theta with global extent; the global
  depthwise gather works on a 7x7 grid so any input size works (see `GlobalDepthwiseGather`).
- SK: Li, Wang, Hu & Yang 2019, "Selective Kernel Networks", arXiv 1903.06586. The grouped
  3x3 conv of ResNeXt replaced by an SK conv (M=2, r=16, L=32). SKNet-50 has 27.5M
  parameters, as in the paper (SK[2, 32, 16]: the branches keep the cardinality 32).
  SKNet-29 on CIFAR (the paper's Table 5: ResNeXt-29 16x32d with SK units, 27.7M) is
  `sk_resnext29_16x32d_cifar`. The paper states the count but not the SK settings of that
  net; SK[M=2, G=64, r=16] with a 3x3 and a true 5x5 branch (the 5x5 at G=64 is a setting of
  the paper's Table 6), the rest of ResNeXt-29 16x32d unchanged, gives it: 27,740,298
  parameters. It is a reconstruction from the count, not a copy of the authors' CIFAR code.
  `attn_kwargs={"branch_groups": None, "dilated": True}` gives the earlier cnnzoo layout:
  branches at the block's cardinality 16 (3x3 and dilated 3x3, full copies of ResNeXt's
  grouped conv), 37,546,122. `sk_resnext29_16x64d_cifar` (no paper count) has such branches.
"""

from __future__ import annotations

from ..registry import Paper, build_model, register_model
from . import preresnet
from .resnet import ResNet, cifar_args, imagenet_args, resnext29_args, wide_cifar_args

SE_PAPER = Paper("Squeeze-and-Excitation Networks", 2018, "1709.01507", "Hu, Shen, Albanie, Sun, Wu")
BAM_PAPER = Paper("BAM: Bottleneck Attention Module", 2018, "1807.06514", "Park, Woo, Lee, Kweon")
CBAM_PAPER = Paper("CBAM: Convolutional Block Attention Module", 2018, "1807.06521", "Woo, Park, Lee, Kweon")
GE_PAPER = Paper("Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks", 2018, "1810.12348",
                 "Hu, Shen, Albanie, Sun, Vedaldi")
SK_PAPER = Paper("Selective Kernel Networks", 2019, "1903.06586", "Li, Wang, Hu, Yang")

_OURS = "cnnzoo (paper layout)"
_SE_IN = dict(attn_layer="se", attn_kwargs=dict(rd_divisor=8))
_SE = dict(attn_layer="se")
_BAM = dict(attn_layer="bam")
_CBAM = dict(attn_layer="cbam")
_GE = dict(attn_layer="ge", attn_kwargs=dict(extra_params=True))
_SK = dict(attn_layer="sk")
SKNET29_SK = dict(branch_groups=64, dilated=False)  # SK[2, 64, 16], 3x3 + 5x5: the 27.7M of the paper


def _cifar(family: str, paper: Paper, params: int) -> dict:
    return dict(family=family, paper=paper, input_style="cifar", num_classes=10, ref_params=params,
                ref_source=_OURS)


def _imagenet(family: str, paper: Paper, params: int, source: str = _OURS) -> dict:
    return dict(family=family, paper=paper, input_style="imagenet", ref_params=params, ref_source=source)


# ---- SE ---------------------------------------------------------------------------------------

@register_model(**_imagenet("senet", SE_PAPER, 11_779_624, "timm"))
def seresnet18(**kwargs) -> ResNet:
    """SE-ResNet-18."""
    return build_model(ResNet, imagenet_args(18, **_SE_IN), kwargs)


@register_model(**_imagenet("senet", SE_PAPER, 21_960_416))
def seresnet34(**kwargs) -> ResNet:
    """SE-ResNet-34."""
    return build_model(ResNet, imagenet_args(34, **_SE_IN), kwargs)


@register_model(**_imagenet("senet", SE_PAPER, 28_088_024, "timm"))
def seresnet50(**kwargs) -> ResNet:
    """SE-ResNet-50 (Table 2 of the paper)."""
    return build_model(ResNet, imagenet_args(50, **_SE_IN), kwargs)


@register_model(**_imagenet("senet", SE_PAPER, 49_326_872))
def seresnet101(**kwargs) -> ResNet:
    """SE-ResNet-101."""
    return build_model(ResNet, imagenet_args(101, **_SE_IN), kwargs)


@register_model(**_imagenet("senet", SE_PAPER, 66_821_848))
def seresnet152(**kwargs) -> ResNet:
    """SE-ResNet-152."""
    return build_model(ResNet, imagenet_args(152, **_SE_IN), kwargs)


@register_model(**_imagenet("senet", SE_PAPER, 27_559_896, "timm"))
def seresnext50_32x4d(**kwargs) -> ResNet:
    """SE-ResNeXt-50 (32x4d)."""
    return build_model(ResNet, imagenet_args(50, groups=32, base_width=4, **_SE_IN), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 272_095))
def seresnet20_cifar(**kwargs) -> ResNet:
    """SE-ResNet-20 for CIFAR (option-A shortcuts)."""
    return build_model(ResNet, cifar_args(20, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 468_109))
def seresnet32_cifar(**kwargs) -> ResNet:
    """SE-ResNet-32 for CIFAR (option-A shortcuts)."""
    return build_model(ResNet, cifar_args(32, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 664_123))
def seresnet44_cifar(**kwargs) -> ResNet:
    """SE-ResNet-44 for CIFAR (option-A shortcuts)."""
    return build_model(ResNet, cifar_args(44, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 860_137))
def seresnet56_cifar(**kwargs) -> ResNet:
    """SE-ResNet-56 for CIFAR (option-A shortcuts)."""
    return build_model(ResNet, cifar_args(56, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 1_742_200))
def seresnet110_cifar(**kwargs) -> ResNet:
    """SE-ResNet-110 for CIFAR (option-A shortcuts)."""
    return build_model(ResNet, cifar_args(110, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 34_948_506))
def se_resnext29_8x64d_cifar(**kwargs) -> ResNet:
    """SE-ResNeXt-29 (8x64d) for CIFAR."""
    return build_model(ResNet, resnext29_args(8, 64, **_SE), kwargs)


@register_model(**_cifar("senet", SE_PAPER, 68_677_018))
def se_resnext29_16x64d_cifar(**kwargs) -> ResNet:
    """SE-ResNeXt-29 (16x64d) for CIFAR."""
    return build_model(ResNet, resnext29_args(16, 64, **_SE), kwargs)


# ---- BAM --------------------------------------------------------------------------------------

@register_model(**_imagenet("bam", BAM_PAPER, 25_914_651))
def bam_resnet50(**kwargs) -> ResNet:
    """BAM-ResNet-50: BAM after stages 1, 2 and 3."""
    return build_model(ResNet, imagenet_args(50, **_BAM), kwargs)


@register_model(**_cifar("bam", BAM_PAPER, 23_878_461))
def bam_resnet50_cifar(**kwargs) -> ResNet:
    """BAM-ResNet-50 on CIFAR (3x3 stem of 64, no max-pool), BAM after stages 1-3."""
    return build_model(ResNet, wide_cifar_args(50, **_BAM), kwargs)


@register_model(**_cifar("bam", BAM_PAPER, 1_730_929))
def bam_preresnet110_cifar(**kwargs) -> ResNet:
    """BAM-PreResNet-110 on CIFAR, BAM after stages 1 and 2."""
    return build_model(preresnet.PreResNet, dict(preresnet.cifar_args(110), **_BAM), kwargs)


@register_model(**_cifar("bam", BAM_PAPER, 34_512_380))
def bam_resnext29_8x64d_cifar(**kwargs) -> ResNet:
    """BAM-ResNeXt-29 (8x64d) on CIFAR, BAM after stages 1 and 2."""
    return build_model(ResNet, resnext29_args(8, 64, **_BAM), kwargs)


# ---- CBAM -------------------------------------------------------------------------------------

@register_model(**_imagenet("cbam", CBAM_PAPER, 11_779_392))
def cbam_resnet18(**kwargs) -> ResNet:
    """CBAM-ResNet-18."""
    return build_model(ResNet, imagenet_args(18, **_CBAM), kwargs)


@register_model(**_imagenet("cbam", CBAM_PAPER, 28_089_624, "cnnzoo (the paper's ImageNet table: 28.09M)"))
def cbam_resnet50(**kwargs) -> ResNet:
    """CBAM-ResNet-50."""
    return build_model(ResNet, imagenet_args(50, **_CBAM), kwargs)


@register_model(**_cifar("cbam", CBAM_PAPER, 34_949_406))
def cbam_resnext29_8x64d_cifar(**kwargs) -> ResNet:
    """CBAM-ResNeXt-29 (8x64d) for CIFAR."""
    return build_model(ResNet, resnext29_args(8, 64, **_CBAM), kwargs)


@register_model(**_cifar("cbam", CBAM_PAPER, 68_677_918))
def cbam_resnext29_16x64d_cifar(**kwargs) -> ResNet:
    """CBAM-ResNeXt-29 (16x64d) for CIFAR."""
    return build_model(ResNet, resnext29_args(16, 64, **_CBAM), kwargs)


# ---- Gather-Excite ----------------------------------------------------------------------------

@register_model(**_imagenet("gather_excite", GE_PAPER, 26_327_336))
def ge_resnet50(**kwargs) -> ResNet:
    """GE-theta-ResNet-50, global extent."""
    return build_model(ResNet, imagenet_args(50, **_GE), kwargs)


@register_model(**_cifar("gather_excite", GE_PAPER, 34_700_874))
def ge_resnext29_8x64d_cifar(**kwargs) -> ResNet:
    """GE-theta-ResNeXt-29 (8x64d) for CIFAR, global extent."""
    return build_model(ResNet, resnext29_args(8, 64, **_GE), kwargs)


@register_model(**_cifar("gather_excite", GE_PAPER, 68_429_386))
def ge_resnext29_16x64d_cifar(**kwargs) -> ResNet:
    """GE-theta-ResNeXt-29 (16x64d) for CIFAR, global extent."""
    return build_model(ResNet, resnext29_args(16, 64, **_GE), kwargs)


# ---- Selective Kernel -------------------------------------------------------------------------

@register_model(**_imagenet("sknet", SK_PAPER, 27_479_784, "cnnzoo (the paper's Table 1: 27.5M)"))
def sknet50(**kwargs) -> ResNet:
    """SKNet-50: ResNeXt-50 (32x4d) with SK convs (Table 1 of the paper)."""
    return build_model(ResNet, imagenet_args(50, groups=32, base_width=4, **_SK), kwargs)


@register_model(family="sknet", paper=SK_PAPER, input_style="cifar", num_classes=10, ref_params=27_740_298,
                ref_source="the paper's CIFAR table (SKNet-29: 27.7M), with SK[2, 64, 16]")
def sk_resnext29_16x32d_cifar(**kwargs) -> ResNet:
    """SKNet-29 (SK-ResNeXt-29, 16x32d) for CIFAR; branch convs in 64 groups (see the module docstring)."""
    return build_model(ResNet, resnext29_args(16, 32, attn_layer="sk", attn_kwargs=SKNET29_SK), kwargs)


@register_model(family="sknet", paper=SK_PAPER, input_style="cifar", num_classes=10, ref_params=117_746_122,
                ref_source="cnnzoo (SK branches at the cardinality 16; the paper has no 16x64d SKNet)")
def sk_resnext29_16x64d_cifar(**kwargs) -> ResNet:
    """SK-ResNeXt-29 (16x64d) for CIFAR, both SK branches copies of the grouped conv."""
    return build_model(ResNet, resnext29_args(16, 64, **_SK), kwargs)
