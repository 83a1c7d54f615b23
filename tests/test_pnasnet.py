"""PNASNet-5: the searched cell of the paper's Figure 1, the Large/Mobile/CIFAR layouts and
their parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo import create_model, model_info, summary
from cnnzoo.models.pnasnet import FactorizedReduction, PNASCell, SepBranch


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def large():
    return create_model("pnasnet5large").eval()


def test_large_matches_timm(large):
    assert n_params(large) == 86_057_668  # timm pnasnet5large; the paper: 86.1M
    assert large.default_cfg["input_size"] == (3, 331, 331)
    assert large.num_features == 4320


def test_large_cell_widths_and_reductions(large):
    cells = list(large.cells)
    assert len(cells) == 14  # two stem cells + 12 cells
    widths = [c.b0_left[-1].num_features for c in cells]
    assert widths == [54, 108] + [216] * 4 + [432] * 4 + [864] * 4
    reductions = [i for i, c in enumerate(cells) if c.b1_right.stride == 2]
    assert reductions == [0, 1, 6, 10]  # both stem cells, cell_4 and cell_8
    # A cell whose left input is twice the size of its right one halves it first.
    factorized = [i for i, c in enumerate(cells) if isinstance(c.proj_left, FactorizedReduction)]
    assert factorized == [r + 1 for r in reductions]


def test_large_runs_and_reduces_by_32(large):
    x = torch.randn(1, 3, 96, 96)  # 96 -> 47 (valid stem) -> 24 -> 12 -> 6 -> 3
    with torch.no_grad():
        assert large.forward_features(x).shape == (1, 4320, 3, 3)
        assert large(x).shape == (1, 1000)


def test_cell_is_figure_1():
    cell = PNASCell(32, 48, 16, reduction=False)
    kernels = {name: getattr(cell, name)[1].dw.conv.kernel_size[0]
               for name in ("b0_left", "b1_left", "b2_left", "b2_right", "b3_left", "b4_left")}
    assert kernels == dict(b0_left=5, b1_left=7, b2_left=5, b2_right=3, b3_left=3, b4_left=3)
    for name in ("b0_right", "b1_right", "b3_right"):
        assert isinstance(getattr(cell, name), nn.MaxPool2d) and getattr(cell, name).kernel_size == 3
    assert isinstance(cell.b4_right, nn.Identity)
    # Block 3 takes block 2's output as its input; the cell concatenates five blocks of F maps.
    seen = {}
    cell.b3_left.register_forward_hook(lambda m, i, o: seen.setdefault("b3_in", i[0]))
    for name in ("b2_left", "b2_right"):
        getattr(cell, name).register_forward_hook(lambda m, i, o, n=name: seen.setdefault(n, o))
    out = cell.eval()(torch.randn(2, 32, 9, 9), torch.randn(2, 48, 9, 9))
    assert out.shape == (2, 5 * 16, 9, 9)
    assert torch.allclose(seen["b3_in"], seen["b2_left"] + seen["b2_right"])


def test_reduction_cell_strides_everything():
    cell = PNASCell(32, 48, 16, reduction=True).eval()
    assert not isinstance(cell.b4_right, nn.Identity)
    out = cell(torch.randn(1, 32, 9, 9), torch.randn(1, 48, 9, 9))
    assert out.shape == (1, 80, 5, 5)


def test_separable_branch_is_applied_twice():
    branch = SepBranch(8, 8, 5, stride=2)
    kinds = [type(m).__name__ for m in branch]
    assert kinds == ["ReLU", "DepthwiseSeparableConv", "BatchNorm2d"] * 2
    assert branch[1].dw.conv.stride == (2, 2) and branch[4].dw.conv.stride == (1, 1)


def test_mobile_and_cifar_layouts():
    mobile = create_model("pnasnet5mobile")
    assert abs(n_params(mobile) - 5.1e6) < 0.05e6  # the paper: 5.1M
    assert summary(mobile).macs / 1e6 == pytest.approx(588, rel=0.01)  # the paper: 588M mult-adds
    cifar = create_model("pnasnet5_cifar").eval()
    assert abs(n_params(cifar) - 3.2e6) < 0.05e6  # the paper: 3.2M for N=3, F=48
    assert n_params(cifar) == model_info("pnasnet5_cifar")["ref_params"]
    with torch.no_grad():
        assert cifar.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 5 * 4 * 48, 8, 8)


def test_tf_same_padding_pads_the_odd_pixel_after_and_keeps_the_weights():
    from cnnzoo.layers.padding import same_pads

    assert same_pads(8, 3, 2) == (0, 1) and same_pads(7, 3, 2) == (1, 1) and same_pads(8, 1, 2) == (0, 0)
    assert same_pads(9, 5, 1) == (2, 2)  # stride 1, odd kernel: the same as PyTorch's symmetric padding
    torch.manual_seed(0)
    plain = create_model("pnasnet5mobile").eval()
    tf = create_model("pnasnet5mobile", padding="tf_same").eval()
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [(k, v.shape) for k, v in tf.state_dict().items()]
    tf.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert tf(x).shape == plain(x).shape and not torch.allclose(tf(x), plain(x))
