"""Attention modules: shapes, the defining formulas, the factory and the last-map hook."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnzoo.layers.attention import (
    BAM, CBAM, ChannelAttn, GatherExcite, SelectiveKernel, SpatialAttn, SqueezeExcite, attn_names,
    attn_placement, create_attn,
)

SIZES = [(1, 1), (7, 7), (13, 11), (32, 32)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_factory_builds_every_type_and_rejects_unknown():
    assert attn_names() == ["bam", "cbam", "ge", "se", "sk"]
    expected = {"se": SqueezeExcite, "cbam": CBAM, "bam": BAM, "ge": GatherExcite, "sk": SelectiveKernel}
    for name, cls in expected.items():
        assert type(create_attn(name, 32)) is cls
    assert create_attn(None, 32) is None and create_attn("", 32) is None
    with pytest.raises(ValueError, match="unknown attn_layer 'xx'.*bam, cbam, ge, se, sk"):
        create_attn("xx", 32)


def test_placement_follows_the_papers():
    assert {n: attn_placement(n) for n in attn_names()} == {
        "se": "block", "cbam": "block", "ge": "block", "bam": "stage", "sk": "conv"}
    assert attn_placement(None) is None


@pytest.mark.parametrize("name", ["se", "cbam", "bam", "ge", "sk"])
@pytest.mark.parametrize("size", SIZES)
def test_output_shape_equals_input_shape_and_map_is_kept(name, size):
    module = create_attn(name, 32).train()
    x = torch.randn(2, 32, *size)
    assert module.last_map is None
    y = module(x)
    assert y.shape == x.shape
    assert module.last_map is not None and not module.last_map.requires_grad
    assert module.last_map.shape[0] == 2


def test_se_scale_is_in_unit_interval_and_multiplies_the_input():
    se = SqueezeExcite(64)
    assert se.fc1.out_channels == 4  # reduction 16
    x = torch.randn(3, 64, 9, 9) * 10
    y = se(x)
    scale = se.last_map
    assert scale.shape == (3, 64, 1, 1)
    assert bool((scale > 0).all() and (scale < 1).all())
    torch.testing.assert_close(y, x * scale)
    expected = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(scale, expected)


def test_se_keeps_mobilenet_v3_signature():
    se = SqueezeExcite(96, rd_channels=24, gate_layer=nn.Hardsigmoid)
    assert se.fc1.out_channels == 24 and isinstance(se.gate, nn.Hardsigmoid)


def _max_changed_mean_kept(x: torch.Tensor) -> torch.Tensor:
    """Raise each channel's maximum and lower its minimum by the same amount."""
    flat = x.clone().flatten(2)
    flat.scatter_add_(2, flat.argmax(2, keepdim=True), torch.ones_like(flat[..., :1]))
    flat.scatter_add_(2, flat.argmin(2, keepdim=True), -torch.ones_like(flat[..., :1]))
    return flat.view_as(x)


def _mean_changed_max_kept(x: torch.Tensor) -> torch.Tensor:
    """Lower each channel's minimum: the mean moves, the maximum does not."""
    flat = x.clone().flatten(2)
    flat.scatter_add_(2, flat.argmin(2, keepdim=True), -torch.ones_like(flat[..., :1]))
    return flat.view_as(x)


def test_cbam_channel_attention_uses_both_average_and_max_pooling():
    attn = ChannelAttn(16, rd_channels=4).eval()
    x = torch.randn(2, 16, 6, 6)
    attn(x)
    base = attn.last_map
    x_max = _max_changed_mean_kept(x)
    x_avg = _mean_changed_max_kept(x)
    torch.testing.assert_close(x_max.mean((2, 3)), x.mean((2, 3)))
    assert torch.equal(x_avg.amax((2, 3)), x.amax((2, 3)))
    attn(x_max)
    assert not torch.allclose(attn.last_map, base), "channel attention ignores max pooling"
    attn(x_avg)
    assert not torch.allclose(attn.last_map, base), "channel attention ignores average pooling"
    # and it is the shared MLP applied to both, summed, then the gate
    attn(x)
    expected = torch.sigmoid(attn.mlp(x.mean((2, 3), keepdim=True)) + attn.mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(attn.last_map, expected)


def test_cbam_spatial_attention_uses_channel_mean_and_max():
    attn = SpatialAttn().eval()
    x = torch.randn(2, 8, 9, 9)
    attn(x)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    torch.testing.assert_close(attn.last_map, torch.sigmoid(attn.conv(pooled)))
    assert attn.conv.conv.kernel_size == (7, 7) and attn.conv.conv.in_channels == 2


def test_cbam_applies_channel_then_spatial_attention():
    cbam = CBAM(32).eval()
    x = torch.randn(2, 32, 10, 10)
    y = cbam(x)
    torch.testing.assert_close(y, x * cbam.channel.last_map * cbam.spatial.last_map)
    assert cbam.last_map.shape == (2, 1, 10, 10) and cbam.channel.last_map.shape == (2, 32, 1, 1)


def test_bam_combines_branches_as_one_plus_sigmoid():
    bam = BAM(64).eval()
    x = torch.randn(2, 64, 12, 12)
    y = bam(x)
    attn = bam.last_map
    assert attn.shape == x.shape and bool(((attn > 0) & (attn < 1)).all())
    torch.testing.assert_close(y, x * (1 + attn))
    mc = bam.channel_gate(x.mean((2, 3), keepdim=True))
    ms = bam.spatial_gate(x)
    assert mc.shape == (2, 64, 1, 1) and ms.shape == (2, 1, 12, 12)
    torch.testing.assert_close(attn, torch.sigmoid(mc + ms))
    dilations = [m.dilation for m in bam.spatial_gate.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == [(4, 4), (4, 4)]


@pytest.mark.parametrize("extent", [0, 2, 4, 8])
@pytest.mark.parametrize("extra_params", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_gather_excite_any_size_and_extent(extent, extra_params, size):
    ge = GatherExcite(16, extent=extent, extra_params=extra_params).eval()
    x = torch.randn(2, 16, *size)
    y = ge(x)
    assert y.shape == x.shape
    gathered = (1, 1) if extent == 0 else tuple(math.ceil(s / extent) for s in size)
    assert tuple(ge.last_map.shape[-2:]) == gathered
    assert bool(((ge.last_map > 0) & (ge.last_map < 1)).all())


def test_gather_excite_theta_minus_is_parameter_free_and_theta_is_not():
    assert sum(p.numel() for p in GatherExcite(32, extent=4).parameters()) == 0
    assert sum(p.numel() for p in GatherExcite(32).parameters()) == 0
    theta8 = GatherExcite(32, extent=8, extra_params=True)
    depthwise = [m for m in theta8.modules() if isinstance(m, nn.Conv2d)]
    assert len(depthwise) == 3 and all(m.groups == 32 and m.stride == (2, 2) for m in depthwise)
    plus = sum(p.numel() for p in GatherExcite(32, extra_params=True, use_mlp=True).parameters())
    assert plus > sum(p.numel() for p in GatherExcite(32, extra_params=True).parameters())


def test_gather_excite_global_theta_minus_is_a_parameter_free_se():
    ge = GatherExcite(8)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(ge(x), x * torch.sigmoid(x.mean((2, 3), keepdim=True)))


def test_gather_excite_local_gate_is_interpolated_back():
    ge = GatherExcite(4, extent=2).eval()
    x = torch.randn(1, 4, 6, 6)
    y = ge(x)
    gate = ge.last_map.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(y, x * gate)


def test_gather_excite_rejects_bad_extent():
    with pytest.raises(ValueError, match="extent"):
        GatherExcite(8, extent=3)


@pytest.mark.parametrize("num_branches", [2, 3])
def test_sk_selection_weights_sum_to_one_over_branches(num_branches):
    sk = SelectiveKernel(32, num_branches=num_branches).train()
    x = torch.randn(4, 32, 9, 9)
    y = sk(x)
    assert y.shape == x.shape
    weights = sk.last_map
    assert weights.shape == (4, num_branches, 32, 1, 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(4, 32, 1, 1))
    assert [b.conv.dilation for b in sk.branches] == [(d, d) for d in range(1, num_branches + 1)]


def test_sk_output_is_the_weighted_sum_of_branches():
    sk = SelectiveKernel(16, groups=4, rd_channels=8).eval()
    x = torch.randn(2, 16, 7, 7)
    y = sk(x)
    feats = torch.stack([b(x) for b in sk.branches], 1)
    torch.testing.assert_close(y, (feats * sk.last_map).sum(1))
    assert all(b.conv.groups == 4 for b in sk.branches)


def test_sk_as_a_strided_conv_changes_shape():
    sk = SelectiveKernel(16, out_channels=32, stride=2)
    assert sk(torch.randn(2, 16, 9, 9)).shape == (2, 32, 5, 5)


@pytest.mark.parametrize("name", ["se", "cbam", "bam", "ge", "sk"])
def test_every_parameter_gets_a_gradient(name):
    kwargs = dict(extra_params=True, use_mlp=True) if name == "ge" else {}
    module = create_attn(name, 16, **kwargs).train()
    module(torch.randn(2, 16, 8, 8)).square().sum().backward()
    assert [n for n, p in module.named_parameters() if p.grad is None] == []
