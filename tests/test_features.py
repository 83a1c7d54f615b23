"""Backbone feature maps: every classification family declares `feature_info` that matches the
shapes a forward pass gives; `features_only`, `forward_intermediates` and `output_stride`."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.registry import _REGISTRY, create_model, list_models


def _classifiers() -> list[str]:
    return [n for n in list_models() if _REGISTRY[n].task == "classify"]


def _representatives() -> list[str]:
    """The smallest model of each (family, input style): every stem and stage layout once."""
    best: dict[tuple[str, str], str] = {}
    for name in _classifiers():
        entry = _REGISTRY[name]
        key = (entry.family, entry.input_style)
        size = entry.ref_params or 10**12
        if key not in best or size < (_REGISTRY[best[key]].ref_params or 10**12):
            best[key] = name
    return sorted(best.values())


def _spatial_sizes(model, size: int) -> tuple[list[int], list[torch.Tensor]]:
    x = torch.randn(1, model.in_chans, size, size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
    assert maps[-1] is final  # the last stage is what forward_features returns
    return [m.shape[-1] for m in maps], maps


def check_declared_stages(name: str) -> None:
    """Channels equal, and each declared reduction is the measured one: growing the input by
    `step` pixels grows a map of reduction r by exactly step / r pixels, whatever the valid
    convolutions shave off at the borders (Inception's 299 -> 35 is a reduction of 8)."""
    model = create_model(name).eval()
    info = model.feature_info
    assert len(info) >= 3, name
    step = max(info.reduction())
    small = model.default_cfg["min_input_size"] or (0, 32, 32)
    size = max(small[1], 32 if _REGISTRY[name].input_style == "cifar" else 64)
    sizes, maps = _spatial_sizes(model, size)
    larger, _ = _spatial_sizes(model, size + step)
    for stage, fmap, before, after in zip(info, maps, sizes, larger):
        assert fmap.shape[1] == stage["num_chs"], (name, stage, tuple(fmap.shape))
        if after == before:  # an adaptive pool (LeNet's C5): the nominal reduction of the paper's 32x32
            continue
        assert step / (after - before) == stage["reduction"], (name, stage, before, after)
    assert info.reduction() == sorted(info.reduction()), name


QUICK = ["lenet5", "resnet20_cifar", "resnet18", "preresnet20_cifar", "mobilenet_v1_025", "mobilenet_v3_small"]


@pytest.mark.parametrize("name", QUICK)
def test_declared_stages_match_the_maps(name):
    check_declared_stages(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(_representatives()) - set(QUICK)))
def test_declared_stages_match_the_maps_in_every_family(name):
    check_declared_stages(name)


@pytest.mark.slow
def test_every_classification_family_declares_stages():
    families = {_REGISTRY[n].family for n in _classifiers()}
    declared = {_REGISTRY[n].family for n in _representatives() if len(create_model(n).feature_info) >= 3}
    assert declared == families


def test_features_only_returns_the_chosen_maps_without_the_classifier():
    full = create_model("resnet18")
    backbone = create_model("resnet18", features_only=True, out_indices=(1, -1))
    assert backbone.feature_info.channels() == [64, 512]
    assert backbone.feature_info.reduction() == [4, 32]
    assert backbone.feature_info.module_name() == ["layer1", "layer4"]
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in full.parameters()) - 513_000
    maps = backbone.eval()(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16), (2, 512, 2, 2)]


def test_forward_intermediates_stops_early_with_the_same_maps():
    model = create_model("mobilenet_v2_cifar").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, every = model.forward_intermediates(x)
        early = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
    assert len(early) == 2
    for a, b in zip(early, every[-2:]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("indices", [(7,), (-9,), 0])
def test_out_of_range_stage_indices_are_refused(indices):
    with pytest.raises(CnnzooError, match="feature|last"):
        create_model("resnet20_cifar", features_only=True, out_indices=indices)


def test_out_indices_needs_features_only():
    with pytest.raises(CnnzooError, match="features_only"):
        create_model("resnet20_cifar", out_indices=(1,))


RESNET_STYLE = ["resnet18", "resnet50", "resnext50_32x4d", "seresnet18", "cbam_resnet18", "bam_resnet50",
                "ge_resnet50", "sknet50", "preresnet18"]


@pytest.mark.parametrize("name,output_stride", [("resnet50", 8), ("resnet18", 16)] + [
    pytest.param(name, stride, marks=pytest.mark.slow) for name in RESNET_STYLE[2:] for stride in (8, 16)])
def test_output_stride_keeps_the_resolution_and_the_parameters(name, output_stride):
    plain = create_model(name, num_classes=10)
    dense = create_model(name, num_classes=10, output_stride=output_stride).eval()
    assert sum(p.numel() for p in dense.parameters()) == sum(p.numel() for p in plain.parameters())
    with torch.no_grad():
        maps = dense.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert maps[-1].shape[-1] == 64 // output_stride
    assert dense.feature_info.reduction()[-1] == output_stride
    for info, fmap in zip(dense.feature_info, maps):
        assert fmap.shape[1] == info["num_chs"] and fmap.shape[-1] == 64 // info["reduction"], (info, fmap.shape)


def test_dilated_backbone_loads_the_plain_weights():
    plain = create_model("resnet18").eval()
    dense = create_model("resnet18", output_stride=8).eval()
    dense.load_state_dict(plain.state_dict())  # same tensors, only strides and dilations differ
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert dense(x).shape == plain(x).shape


def test_unsupported_output_stride_is_refused():
    with pytest.raises(CnnzooError, match="output_stride"):
        create_model("resnet18", output_stride=4)
