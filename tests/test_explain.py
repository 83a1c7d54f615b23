"""Convolution arithmetic and receptive fields (`cnnzoo.analysis`, `cnnzoo explain`), checked
against torch.nn.Conv2d, the textbook numbers and published receptive fields."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model
from cnnzoo.analysis import conv_arith as ca
from cnnzoo.analysis import receptive_field as rf
from cnnzoo.cli.main import main

FIVE_BY_FIVE = [[float(5 * r + c + 1) for c in range(5)] for r in range(5)]
ONES = [[1.0] * 3 for _ in range(3)]


def test_textbook_standard_versus_depthwise_separable():
    std = ca.standard(3, 256, 3)
    assert std.weight_shape == (256, 3, 3, 3) and std.params == 6_912
    dw, pw = ca.depthwise_separable(3, 256, 3)
    assert dw.weight_shape == (3, 1, 3, 3) and pw.weight_shape == (256, 3, 1, 1)
    assert dw.params + pw.params == 3 * 3 * 3 + 3 * 256 == 795
    # Howard et al. 2017, equation 5: separable / standard = 1/N + 1/D_K^2
    size = (224, 224)
    ratio = ca.chain_stats("sep", [dw, pw], size).macs / std.macs(size)
    assert ratio == pytest.approx(1 / 256 + 1 / 9)


def test_textbook_group_and_depthwise_shapes():
    assert ca.grouped(12, 6, 3, groups=3).weight_shape == (6, 4, 3, 3)
    assert ca.depthwise(4, 3, multiplier=2).weight_shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match="groups=5 must divide"):
        ca.grouped(12, 6, 3, groups=5)


CONFIGS = [  # in, out, kernel, stride, padding, dilation, groups, bias
    (3, 256, 3, 1, None, 1, 1, False), (12, 6, 3, 1, 1, 1, 3, True), (4, 8, 3, 2, 1, 1, 4, False),
    (16, 16, 5, 2, 0, 1, 16, True), (8, 24, 3, 1, None, 2, 1, False), (6, 6, (1, 7), 1, (0, 3), 1, 2, False),
    (5, 10, 4, 3, 2, 3, 5, True),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("size", [(17, 17), (32, 23)])
def test_arithmetic_agrees_with_torch(config, size):
    c_in, c_out, k, s, p, d, g, bias = config
    spec = ca.ConvSpec(c_in, c_out, k, s, p, d, g, bias)
    assert ca.check_against_torch(spec, size) == {}


def test_output_size_formula():
    for n, k, s, p, d in itertools.product((7, 10), (1, 3, 4), (1, 2, 3), (0, 1, 2), (1, 2)):
        if n + 2 * p < d * (k - 1) + 1:
            continue
        conv = nn.Conv2d(1, 1, k, s, p, d)
        assert ca.output_size(n, k, s, p, d) == conv(torch.zeros(1, 1, n, n)).shape[-1]


def test_five_by_five_example():
    assert ca.naive_conv2d(FIVE_BY_FIVE, ONES) == [[63, 72, 81], [108, 117, 126], [153, 162, 171]]
    assert ca.naive_conv2d(FIVE_BY_FIVE, ONES, dilation=2) == [[117]]
    x, w = torch.tensor(FIVE_BY_FIVE)[None, None], torch.ones(1, 1, 3, 3)
    for kwargs in (dict(), dict(dilation=2), dict(stride=2, padding=1)):
        assert ca.naive_conv2d(FIVE_BY_FIVE, ONES, **kwargs) == F.conv2d(x, w, **kwargs)[0, 0].tolist()


def _explain(capsys, *args: str) -> str:
    assert main(["explain", *args]) == 0
    return capsys.readouterr().out


def test_cli_conv(capsys):
    out = _explain(capsys, "conv", "--in", "3", "--out", "256", "--kernel", "3", "--depthwise")
    assert re.search(r"standard\s+\[256, 3, 3, 3\]\s+6,912", out)
    assert re.search(r"depthwise\s+\[3, 1, 3, 3\]\s+27", out)
    assert re.search(r"pointwise 1x1\s+\[256, 3, 1, 1\]\s+768", out)
    assert "795 / 6,912" in out and "1/256 + 1/9" in out and "agree" in out
    out = _explain(capsys, "conv", "--in", "12", "--out", "6", "--kernel", "3", "--groups", "3", "--size", "8,8")
    assert "[6, 4, 3, 3]" in out and "6x8x8" in out
    out = _explain(capsys, "conv", "--in", "4", "--kernel", "3", "--depthwise", "--multiplier", "2")
    assert "[8, 1, 3, 3]" in out
    out = _explain(capsys, "conv", "--in", "8", "--out", "8", "--dilation", "2")
    assert re.search(r"dilated \(d=2\)\s+\[8, 8, 3, 3\]\s+576\s+576\s+5x5", out)
    assert "5x5 kernel with the same span" in out
    out = _explain(capsys, "conv", "--example")
    assert re.search(r"63\s+72\s+81\s+108\s+117\s+126\s+153\s+162\s+171", out)
    assert "output 1x1" in out and out.count("agrees with torch") == 2


def test_cli_conv_errors(capsys):
    assert main(["explain", "conv", "--in", "12", "--out", "6", "--groups", "5"]) == 2
    assert "groups=5 must divide" in capsys.readouterr().err
    assert main(["explain", "conv", "--in", "3", "--out", "8", "--kernel", "7", "--size", "4", "--padding", "0"]) == 2


# ------------------------------------------------------------------------------ receptive fields


def test_layer_recursion():
    field = rf.RF()
    field = field.apply(rf.LayerGeom((7, 7), (2, 2), (3, 3)))  # ResNet stem
    assert field.size == (7, 7) and field.jump == (2, 2) and field.start == (0.0, 0.0)
    field = field.apply(rf.LayerGeom((3, 3), (2, 2), (1, 1)))  # max-pool
    assert field.size == (11, 11) and field.jump == (4, 4)
    field = field.apply(rf.LayerGeom((3, 3), (1, 1), (2, 2), (2, 2)))  # dilated: span 5
    assert field.size == (11 + 4 * 4,) * 2


@pytest.mark.parametrize("name, size", [
    # Araujo, Norris & Sim 2019 (Distill), Table 1, at 224x224
    ("mobilenet_v1", 315), ("mobilenet_v2", 491),
])
def test_published_receptive_fields(name, size):
    report = rf.receptive_fields(create_model(name))
    assert report.output.is_global
    assert report.features.size == (size, size) and report.features.jump == (32, 32)


def test_squeeze_excite_is_flagged_as_global_context():
    report = rf.receptive_fields(create_model("mobilenet_v3_small"))
    assert report.features.context and not report.features.is_global


def _gradient_footprint(model: nn.Module, side: int) -> torch.Tensor:
    x = torch.zeros(1, 1, side, side, requires_grad=True)
    out = model(x)
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()
    return x.grad[0, 0] != 0


def test_footprint_matches_gradients_of_a_real_stack():
    """Positive weights, no non-linearity: exactly the input pixels with a path to the centre
    output have a non-zero gradient, so the gradient shows the true footprint."""
    for dilations in ((2, 2, 2), (1, 2, 4), (1, 3)):
        layers = rf.dilated_stack(dilations)
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=g.padding, dilation=g.dilation, bias=False) for g in layers])
        for conv in stack:
            nn.init.constant_(conv.weight, 1.0)
        grad = _gradient_footprint(stack, 41)
        counts = torch.from_numpy(rf.footprint(layers))
        rows, cols = grad.nonzero()[:, 0], grad.nonzero()[:, 1]
        window = grad[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.equal(window, counts > 0)
        report = rf.receptive_fields(stack, (1, 41, 41))
        assert report.output.size == counts.shape and report.output.chain is not None


def test_gridding_effect():
    grid = rf.footprint(rf.dilated_stack((2, 2, 2)))
    assert grid.shape == (13, 13) and int((grid > 0).sum()) == 49
    assert (grid[1::2, :] == 0).all()  # every other row never reaches the output
    assert (rf.footprint(rf.dilated_stack((1, 2, 4))) > 0).all()


def test_cli_receptive_field(capsys):
    out = _explain(capsys, "receptive-field", "--dilations", "2,2,2")
    assert "49 of 169 pixels" in out and "# . # . #" in out
    out = _explain(capsys, "receptive-field", "dncnn", "--grid")
    assert re.search(r"tail\s+Conv2d\s+3\s+1\s+1\s+1x40x40\s+35\s+1\s+17", out)
    assert "1225 of 1225 pixels" in out
    out = _explain(capsys, "receptive-field", "mobilenet_v1")
    assert "receptive field 315, jump 32" in out and "jump = effective stride" in out
    assert main(["explain", "receptive-field"]) == 2
