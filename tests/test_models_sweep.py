"""Every registered model, as soon as it is registered: the model contract holds.

Built once at its defaults (reference parameter count checked exactly), then with a 7-class
head: forward, backward with a gradient for every parameter, no NaN, deterministic eval,
features/head split, and a second input channel count.
"""

from __future__ import annotations

import pytest
import torch

from cnnzoo import create_model, list_models, model_info
from cnnzoo.models.base import AuxLogits

ALL_MODELS = list_models()
BIG = 30_000_000  # models above this many parameters skip the extra in_chans build
# The sweep's fast input side for heavy variants (their full size would make the suite too slow
# for CI); other models run at their minimum input, their CIFAR size, or 64 px.
FAST_SIDE = {name: 16 for name in (
    "bam_resnet50_cifar", "bam_resnext29_8x64d_cifar", "cbam_resnext29_16x64d_cifar", "cbam_resnext29_8x64d_cifar",
    "densenet_bc190_k40_cifar", "ge_resnext29_16x64d_cifar", "ge_resnext29_8x64d_cifar", "inception_resnet_v1_cifar",
    "inception_resnet_v2_cifar", "inception_v3_cifar", "inception_v4_cifar", "preresnet1001_cifar",
    "preresnet1202_cifar", "resnet101_cifar", "resnet1202_cifar", "resnet152_cifar", "resnet50_cifar",
    "resnext29_16x64d_cifar", "resnext29_8x64d_cifar", "se_resnext29_16x64d_cifar", "se_resnext29_8x64d_cifar",
    "shake_resnet26_2x96d_cifar", "sk_resnext29_16x32d_cifar", "sk_resnext29_16x64d_cifar", "xception_cifar")}
FAST_SIDE.update(xception=32)


def fast_input_size(name: str) -> tuple[int, int, int]:
    info = model_info(name)
    channels = info["input_size"][0]
    if name in FAST_SIDE:
        return (channels, FAST_SIDE[name], FAST_SIDE[name])
    if info["min_input_size"]:
        return tuple(info["min_input_size"])
    return tuple(info["input_size"]) if info["input_style"] == "cifar" else (channels, 64, 64)


def _test_input(name: str, in_chans: int | None = None) -> torch.Tensor:
    size = fast_input_size(name)
    return torch.randn(2, in_chans or size[0], *size[1:], generator=torch.Generator().manual_seed(0))


def _logits(output) -> torch.Tensor:
    return output.logits if isinstance(output, AuxLogits) else output


def test_registry_is_populated():
    assert "lenet5" in ALL_MODELS and len(ALL_MODELS) == len(set(ALL_MODELS))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_contract(name):
    info = model_info(name)
    torch.manual_seed(0)
    model = create_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    if info["ref_params"]:
        assert n_params == info["ref_params"], f"{name}: {n_params:,} params, reference {info['ref_params']:,}"
    assert model.default_cfg["input_size"] == info["input_size"]
    x = _test_input(name)
    if info["task"] == "denoise":
        _check_denoiser(model, x)
        return
    model.reset_classifier(7)
    assert model.num_classes == 7
    _check_train_step(model, x, num_classes=7)
    _check_eval(model, x, num_classes=7)


def _check_train_step(model, x, num_classes):
    model.train()
    out = model(x)
    outputs = (out.logits, *out.aux) if isinstance(out, AuxLogits) else (out,)
    for o in outputs:
        assert o.shape == (x.shape[0], num_classes)
        assert torch.isfinite(o).all()
    sum(o.float().square().mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _check_eval(model, x, num_classes):
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
        assert not isinstance(first, AuxLogits), "auxiliary outputs must be absent in eval mode"
        assert torch.equal(first, second), "eval mode must be deterministic"
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (x.shape[0], model.num_features)
        assert torch.allclose(model.forward_head(features), first, atol=1e-5)
        model.reset_classifier(0)
        assert model(x).shape == (x.shape[0], model.num_features)


def _check_denoiser(model, x):
    model.train()
    out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if (model_info(n)["ref_params"] or 0) <= BIG])
def test_other_input_channels(name):
    in_chans = 2
    # Training mode: batch statistics keep a freshly initialised 1202-layer net finite.
    model = create_model(name, in_chans=in_chans).train()
    assert model.default_cfg["input_size"][0] == in_chans
    assert len(model.default_cfg["mean"]) == in_chans
    x = _test_input(name, in_chans)
    with torch.no_grad():
        out = _logits(model(x))
    assert torch.isfinite(out).all()
