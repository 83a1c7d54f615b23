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


def test_published_receptive_fields():
    # Araujo, Norris & Sim 2019 (Distill), Table 1, at 224x224: MobileNet v1 315 (the table has
    # no MobileNet v2; its 491 is checked below by hand and against torchvision's model).
    report = rf.receptive_fields(create_model("mobilenet_v1"))
    assert report.output.is_global
    assert report.features.size == (315, 315) and report.features.jump == (32, 32)


def test_mobilenet_v2_receptive_field_by_hand_and_from_torchvision():
    """491: the 3x3 stem and the 3x3 depthwise conv of every block of Table 2 (1x1s add nothing):
    r += 2 * jump for each, jump *= stride. The same number from cnnzoo's model and from
    torchvision's, through the same tool."""
    from conftest import reference_libs

    from cnnzoo.models.mobilenetv2 import IMAGENET_STAGES

    field, jump = 1 + 2, 2  # stem: 3x3, stride 2
    for _, _, repeats, stride in IMAGENET_STAGES:
        for i in range(repeats):
            field += 2 * jump
            jump *= stride if i == 0 else 1
    assert (field, jump) == (491, 32)
    assert rf.receptive_fields(create_model("mobilenet_v2")).features.size == (field, field)
    torchvision, _ = reference_libs()
    tv = rf.receptive_fields(torchvision.models.mobilenet_v2(weights=None), (3, 224, 224))
    assert tv.features.size == (field, field)


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


# ------------------------------------------------------------------------------ issue 15 fixes


def _torch_numbers(layer: nn.Module, x: torch.Tensor) -> tuple[tuple, int, int]:
    """(output shape, parameters, MACs) of a real torch layer, MACs from torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = layer(x)
    return tuple(y.shape[1:]), sum(p.numel() for p in layer.parameters()), counter.get_total_flops() // 2


def _row(out: str, label: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(label))
    return re.split(r"\s{2,}", line[len(label):].strip())


def test_strided_separable_pointwise_runs_after_the_stride(capsys):
    out = _explain(capsys, "conv", "--in", "96", "--out", "160", "--kernel", "7", "--stride", "2", "--dilation", "2",
                   "--depthwise", "--size", "35,35")
    dw = nn.Conv2d(96, 96, 7, 2, 6, 2, groups=96, bias=False)
    pw = nn.Conv2d(96, 160, 1, bias=False)
    x = torch.zeros(1, 96, 35, 35)
    dw_shape, dw_params, dw_macs = _torch_numbers(dw, x)
    pw_shape, pw_params, pw_macs = _torch_numbers(pw, torch.zeros(1, *dw_shape))
    assert pw_macs == 4_976_640 and pw_shape == (160, 18, 18)
    assert _row(out, "depthwise ") == ["[96, 1, 7, 7]", f"{dw_params:,}", f"{dw_macs:,}", "13x13", "96x18x18"]
    assert _row(out, "pointwise 1x1") == ["[160, 96, 1, 1]", f"{pw_params:,}", "4,976,640", "1x1", "160x18x18"]
    assert _row(out, "depthwise-separable (total)")[1] == f"{dw_macs + pw_macs:,}"
    std_shape, std_params, std_macs = _torch_numbers(nn.Conv2d(96, 160, 7, 2, 6, 2, bias=False), x)
    assert _row(out, "standard")[1:3] == [f"{std_params:,}", f"{std_macs:,}"] and std_shape == (160, 18, 18)
    assert "padding 6 (d(k-1)//2 per side; PyTorch's padding='same' is for stride 1 only)" in out


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel, dilation", [(2, 1), (4, 1), (4, 3), (3, 2)])
def test_same_padding_is_pytorchs(kernel, dilation):
    spec = ca.ConvSpec(4, 6, kernel, dilation=dilation)
    conv = nn.Conv2d(4, 6, kernel, padding="same", dilation=dilation, bias=False)
    for size in ((9, 9), (10, 7)):
        shape, params, macs = _torch_numbers(conv, torch.zeros(1, 4, *size))
        assert (6, *spec.output_size(size)) == shape == (6, *size)
        assert (spec.params, spec.macs(size)) == (params, macs)
        assert ca.check_against_torch(spec, size) == {}
    # stride 2: PyTorch refuses padding='same'; "same" is then d(k-1)//2 on each side
    strided = ca.ConvSpec(4, 6, kernel, stride=2, dilation=dilation)
    pad = dilation * (kernel - 1) // 2
    shape, _, macs = _torch_numbers(nn.Conv2d(4, 6, kernel, 2, pad, dilation, bias=False), torch.zeros(1, 4, 9, 9))
    assert (6, *strided.output_size((9, 9))) == shape and strided.macs((9, 9)) == macs


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_cli_even_kernel_same_padding_keeps_the_size(capsys):
    out = _explain(capsys, "conv", "--in", "8", "--out", "8", "--kernel", "4", "--size", "10,10")
    assert "padding same (1 before, 2 after, as PyTorch's padding='same')" in out
    shape, params, macs = _torch_numbers(nn.Conv2d(8, 8, 4, padding="same", bias=False), torch.zeros(1, 8, 10, 10))
    assert _row(out, "standard") == ["[8, 8, 4, 4]", f"{params:,}", f"{macs:,}", "4x4", "x".join(map(str, shape))]


def test_cli_explicit_padding_keeps_the_dilation_in_the_comparison(capsys):
    out = _explain(capsys, "conv", "--in", "8", "--out", "16", "--kernel", "3", "--dilation", "2", "--padding", "1",
                   "--groups", "4", "--size", "10,10")
    x = torch.zeros(1, 8, 10, 10)
    std = _torch_numbers(nn.Conv2d(8, 16, 3, 1, 1, 2, bias=False), x)
    grouped = _torch_numbers(nn.Conv2d(8, 16, 3, 1, 1, 2, groups=4, bias=False), x)
    assert _row(out, "standard") == ["[16, 8, 3, 3]", f"{std[1]:,}", f"{std[2]:,}", "5x5", "16x8x8"]
    assert _row(out, "group (g=4)") == ["[16, 2, 3, 3]", f"{grouped[1]:,}", f"{grouped[2]:,}", "5x5", "16x8x8"]
    assert f"{grouped[2]:,} / {std[2]:,} MACs = 0.2500" in out
    out = _explain(capsys, "conv", "--in", "8", "--kernel", "3", "--dilation", "2", "--padding", "0", "--depthwise",
                   "--size", "10,10")
    assert _row(out, "standard")[-2:] == ["5x5", "8x6x6"]


def test_cli_fc_against_a_convolution(capsys):
    out = _explain(capsys, "fc")
    image = torch.zeros(1, 3, 100, 100)
    fc = _torch_numbers(nn.Linear(30_000, 1, bias=False), image.flatten(1))
    conv = _torch_numbers(nn.Conv2d(3, 1, 3, padding="same", bias=False), image)
    assert fc == ((1,), 30_000, 30_000) and conv == ((1, 100, 100), 27, 270_000)
    assert _row(out, "fully connected (1 neuron)") == ["[1, 30000]", "30,000", "30,000", "1"]
    assert _row(out, "convolution 3x3 (1 map)") == ["[1, 3, 3, 3]", "27", "270,000", "1x100x100"]
    assert "100 x 100 x 3 = 30,000" in out and out.count("agree") == 2
    out = _explain(capsys, "fc", "--size", "8,8", "--in", "2", "--hidden", "5", "--out", "4", "--kernel", "5", "--bias")
    fc = _torch_numbers(nn.Linear(128, 5), torch.zeros(1, 128))
    conv = _torch_numbers(nn.Conv2d(2, 4, 5, padding="same"), torch.zeros(1, 2, 8, 8))
    assert _row(out, "fully connected (5 neurons)") == ["[5, 128]", f"{fc[1]:,}", f"{fc[2]:,}", "5"]
    assert _row(out, "convolution 5x5 (4 maps)") == ["[4, 2, 5, 5]", f"{conv[1]:,}", f"{conv[2]:,}", "4x8x8"]
