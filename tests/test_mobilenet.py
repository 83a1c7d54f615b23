"""MobileNet V1/V2/V3: reference parameter counts, the paper's multiplier formulas, linear
bottlenecks and shortcut placement, hard-swish / hard-sigmoid."""

from __future__ import annotations

import pytest
import torch
from conftest import n_params
from torch import nn

from cnnzoo import create_model, list_models, model_info, summary
from cnnzoo.layers import make_divisible
from cnnzoo.layers.attention import SqueezeExcite
from cnnzoo.layers.inverted_residual import InvertedResidual
from cnnzoo.models.mobilenetv1 import IMAGENET_BLOCKS
from cnnzoo.models.mobilenetv3 import LARGE, SMALL


@pytest.mark.parametrize("name, reference", [
    ("mobilenet_v1", 4_231_976),  # timm mobilenetv1_100
    ("mobilenet_v2", 3_504_872),  # torchvision
    ("mobilenet_v3_large", 5_483_032),  # torchvision
    ("mobilenet_v3_small", 2_542_856),  # torchvision
])
def test_reference_parameter_counts(name, reference):
    assert n_params(create_model(name)) == reference
    assert model_info(name)["ref_params"] == reference


@pytest.mark.parametrize("name, paper_macs", [
    ("mobilenet_v2", 300),  # V2 paper, Table 4
    ("mobilenet_v3_large", 219), ("mobilenet_v3_small", 56),  # V3 paper, Table 3
])
def test_mult_adds_match_the_papers(name, paper_macs):
    # The papers round, and may count the squeeze-excite products that are not MACs here.
    assert summary(create_model(name)).macs / 1e6 == pytest.approx(paper_macs, rel=0.02)


def test_every_variant_has_a_cifar_version():
    names = list_models("mobilenet_*")
    for family in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"):
        assert f"{family}_cifar" in names
    assert {"mobilenet_v1_025", "mobilenet_v1_050", "mobilenet_v1_075"} <= set(names)


# ------------------------------------------------------------------------------ V1 multipliers


def v1_params_by_formula(alpha: float, num_classes: int = 1000) -> int:
    """Parameters of Table 1 with every width scaled by alpha: convolution weights, BN scale and
    shift (2 per channel), and the classifier."""
    chs = int(32 * alpha)
    total = 3 * 3 * 3 * chs + 2 * chs
    for out_chs, _ in IMAGENET_BLOCKS:
        out_chs = int(out_chs * alpha)
        total += 3 * 3 * chs + 2 * chs  # depthwise D_K x D_K x M
        total += chs * out_chs + 2 * out_chs  # pointwise M x N
        chs = out_chs
    return total + chs * num_classes + num_classes


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_width_multiplier_follows_the_paper(alpha):
    name = {1.0: "mobilenet_v1", 0.75: "mobilenet_v1_075", 0.5: "mobilenet_v1_050", 0.25: "mobilenet_v1_025"}[alpha]
    model = create_model(name)
    assert model.width_mult == alpha
    assert n_params(model) == v1_params_by_formula(alpha)


@pytest.mark.parametrize("name, rho, paper_macs", [
    # Tables 6 and 7 of the paper, in millions of mult-adds.
    ("mobilenet_v1", 1.0, 569), ("mobilenet_v1", 192 / 224, 418), ("mobilenet_v1", 160 / 224, 290),
    ("mobilenet_v1", 128 / 224, 186), ("mobilenet_v1_075", 1.0, 325), ("mobilenet_v1_050", 1.0, 149),
    ("mobilenet_v1_025", 1.0, 41),
])
def test_mult_adds_match_the_paper_tables(name, rho, paper_macs):
    model = create_model(name, resolution_mult=rho)
    s = summary(model)  # uses the default input size, scaled by rho
    assert s.input_size == (3, round(224 * rho), round(224 * rho))
    assert abs(s.macs / 1e6 - paper_macs) < 1.0


def test_separable_layer_cost_is_equation_7():
    """D_K^2 * aM * (rD_F)^2 + aM * aN * (rD_F)^2 for every depthwise-separable layer."""
    alpha, rho = 0.5, 160 / 224
    model = create_model("mobilenet_v1_050", resolution_mult=rho)
    s = summary(model)
    macs = {r.name: r.macs for r in s.rows}
    side = s.input_size[1] // 2  # after the stride-2 stem
    chs = int(32 * alpha)
    for i, (out_chs, stride) in enumerate(IMAGENET_BLOCKS):
        out_chs = int(out_chs * alpha)
        side = -(-side // stride)
        assert macs[f"blocks.{i}.dw.conv"] == 3 * 3 * chs * side * side
        assert macs[f"blocks.{i}.pw.conv"] == chs * out_chs * side * side
        chs = out_chs


def test_resolution_multiplier_is_reported():
    assert model_info("mobilenet_v1")["resolution_mult"] == 1.0
    model = create_model("mobilenet_v1", resolution_mult=128 / 224)
    assert model.default_cfg["input_size"] == (3, 128, 128)
    assert model.default_cfg["resolution_mult"] == pytest.approx(128 / 224)
    assert create_model("mobilenet_v1_cifar", resolution_mult=0.5).default_cfg["input_size"] == (3, 16, 16)
    with pytest.raises(ValueError, match="resolution_mult"):
        create_model("mobilenet_v1", resolution_mult=1.5)


# ------------------------------------------------------------------------------ V2 blocks


def _inverted_residuals(model: nn.Module) -> list[InvertedResidual]:
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


def test_v2_projection_is_linear():
    model = create_model("mobilenet_v2")
    blocks = _inverted_residuals(model)
    assert len(blocks) == 17
    for block in blocks:
        assert [type(m) for m in block.conv_pwl.children()] == [nn.Conv2d, nn.BatchNorm2d]
        assert isinstance(block.conv_dw.act, nn.ReLU6)
    x = torch.randn(1, 32, 8, 8)
    out = blocks[0].eval()(x)
    assert (out < 0).any(), "a linear bottleneck keeps negative values"


def test_v2_shortcuts_only_where_shapes_match():
    # Table 2: the first block of a stage changes width or stride; the repeats keep both,
    # so 17 blocks - 7 stage openers = 10 shortcuts.
    blocks = _inverted_residuals(create_model("mobilenet_v2"))
    assert sum(b.has_residual for b in blocks) == 10
    for block in blocks:
        conv = block.conv_dw.conv
        in_chs = block.conv_pw.conv.in_channels if isinstance(block.conv_pw, nn.Sequential) else conv.in_channels
        assert block.has_residual == (conv.stride == (1, 1) and in_chs == block.conv_pwl.conv.out_channels)
        # With the projection's BN zeroed the block is exactly its shortcut: x or nothing.
        with torch.no_grad():
            block.conv_pwl.bn.weight.zero_()
            block.conv_pwl.bn.bias.zero_()
        x = torch.randn(1, in_chs, 8, 8)
        out = block.eval()(x)
        assert torch.equal(out, x) if block.has_residual else not out.any()


def test_v2_width_multiplier_rounds_to_eight_and_keeps_the_head():
    model = create_model("mobilenet_v2", width_mult=0.35)
    assert model.num_features == 1280
    for block in _inverted_residuals(model):
        assert block.conv_pwl.conv.out_channels % 8 == 0
    assert create_model("mobilenet_v2", width_mult=1.4).num_features == make_divisible(1280 * 1.4)
    assert n_params(model) < n_params(create_model("mobilenet_v2")) / 2


# ------------------------------------------------------------------------------ V3


@pytest.mark.parametrize("name, table", [("mobilenet_v3_large", LARGE), ("mobilenet_v3_small", SMALL)])
def test_v3_blocks_follow_the_table(name, table):
    blocks = _inverted_residuals(create_model(name))
    assert len(blocks) == len(table)
    for block, row in zip(blocks, table):
        act = nn.Hardswish if row.act == "HS" else nn.ReLU
        assert isinstance(block.conv_dw.act, act)
        assert block.conv_dw.conv.kernel_size == (row.kernel, row.kernel)
        assert block.conv_dw.conv.out_channels == row.exp
        assert isinstance(block.attn, SqueezeExcite) == row.se
        if row.se:
            assert isinstance(block.attn.gate, nn.Hardsigmoid)
            assert block.attn.fc1.out_channels == make_divisible(row.exp // 4, 8)


def test_hard_swish_and_hard_sigmoid_are_the_papers_formulas():
    x = torch.linspace(-6, 6, 241)
    relu6 = torch.nn.functional.relu6
    assert torch.allclose(nn.Hardsigmoid()(x), relu6(x + 3) / 6)
    assert torch.allclose(nn.Hardswish()(x), x * relu6(x + 3) / 6)
    model = create_model("mobilenet_v3_small")
    assert isinstance(model.stem.act, nn.Hardswish) and isinstance(model.head_act, nn.Hardswish)


def test_v3_head_and_classifier_reset():
    model = create_model("mobilenet_v3_large").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 960, 2, 2)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 1280)
        model.reset_classifier(0)
        assert model(x).shape == (1, 1280)


@pytest.mark.parametrize("name, side", [("mobilenet_v1_cifar", 2), ("mobilenet_v2_cifar", 4),
                                        ("mobilenet_v3_large_cifar", 4), ("mobilenet_v3_small_cifar", 4)])
def test_cifar_variants_keep_spatial_resolution(name, side):
    model = create_model(name).eval()
    assert model.default_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (side, side)
        assert model(x).shape == (2, 10)
