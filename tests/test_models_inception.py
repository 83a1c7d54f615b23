"""GoogLeNet, BN-Inception, Inception v3/v4, Inception-ResNet v1/v2 and Xception, plus the shared
Inception module family in `cnnzoo.layers.inception`.

Reference counts and shapes at the papers' input sizes run on the meta device (shapes
only, no arithmetic); real forwards use small inputs and models built once per module.
"""

from __future__ import annotations

import pytest
import torch
from conftest import meta_model, n_params, reference_libs
from torch import nn

from cnnzoo import create_model, model_info
from cnnzoo.layers.conv import DepthwiseSeparableConv
from cnnzoo.layers.inception import (
    InceptionResidual,
    Pool,
    Split,
    bn_conv,
    inception,
    inception_resnet_a,
    reduction_a,
)
from cnnzoo.models.base import AuxLogits
from cnnzoo.models.inception_v3 import InceptionV3Aux


def meta_input(size: int, batch: int = 2, chans: int = 3) -> torch.Tensor:
    return torch.empty(batch, chans, size, size, device="meta")


# The reference table, at 1000 classes.
REFERENCE_COUNTS = [
    ("googlenet", dict(aux_logits=False), 6_624_904),
    ("googlenet", dict(aux_logits=True), 13_004_888),
    ("inception_v3", dict(aux_logits=False), 23_834_568),
    ("inception_v3", dict(aux_logits=True), 27_161_264),
    ("inception_v4", dict(), 42_679_816),
    ("inception_resnet_v2", dict(), 55_843_464),
    ("xception", dict(), 22_855_952),
]


@pytest.mark.parametrize("name,kwargs,expected", REFERENCE_COUNTS)
def test_reference_parameter_counts(name, kwargs, expected):
    assert n_params(meta_model(name, **kwargs)) == expected


def test_default_counts_are_recorded_in_model_info():
    for name in ("googlenet", "inception_v3", "inception_v4", "inception_resnet_v2", "xception",
                 "bninception", "inception_resnet_v1", "googlenet_cifar", "inception_v3_cifar"):
        assert n_params(meta_model(name)) == model_info(name)["ref_params"], name


@pytest.mark.parametrize("name,size,feature_shape", [
    ("googlenet", 224, (1024, 7, 7)),
    ("bninception", 224, (1024, 7, 7)),
    ("inception_v3", 299, (2048, 8, 8)),
    ("inception_v4", 299, (1536, 8, 8)),
    ("inception_resnet_v1", 299, (1792, 8, 8)),
    ("inception_resnet_v2", 299, (1536, 8, 8)),
    ("xception", 299, (2048, 10, 10)),
])
def test_shapes_at_paper_input_size(name, size, feature_shape):
    model = meta_model(name).eval()
    assert model_info(name)["input_size"] == (3, size, size)
    features = model.forward_features(meta_input(size))
    assert tuple(features.shape) == (2, *feature_shape)
    assert tuple(model.forward_head(features).shape) == (2, 1000)


@pytest.mark.parametrize("name,grid", [
    ("googlenet_cifar", 8), ("bninception_cifar", 8), ("inception_v3_cifar", 7), ("inception_v4_cifar", 7),
    ("inception_resnet_v1_cifar", 7), ("inception_resnet_v2_cifar", 7), ("xception_cifar", 4),
])
def test_cifar_variants_at_32x32(name, grid):
    model = meta_model(name).eval()
    assert model_info(name)["input_size"] == (3, 32, 32) and model.num_classes == 10
    features = model.forward_features(meta_input(32))
    assert tuple(features.shape[2:]) == (grid, grid)
    assert tuple(model.forward_head(features).shape) == (2, 10)


def test_inception_v3_grids_at_299():
    # Table 1: 35x35x288 after the 35x35 modules, 17x17x768, then 8x8x1280 after the reduction.
    model = meta_model("inception_v3").eval()
    x, shapes = meta_input(299), {}
    for name, stage in model.features.named_children():
        x = stage(x)
        shapes[name] = tuple(x.shape[1:])
    assert shapes["stem"] == (192, 35, 35)
    assert shapes["mixed_5d"] == (288, 35, 35)
    assert shapes["mixed_6e"] == (768, 17, 17)
    assert shapes["mixed_7a"] == (1280, 8, 8)


def test_googlenet_module_widths_follow_table_1():
    model = meta_model("googlenet")
    out = {name: m.out_chs for name, m in model.features.named_children() if name.startswith("inception")}
    assert out == {"inception3a": 256, "inception3b": 480, "inception4a": 512, "inception4b": 512,
                   "inception4c": 512, "inception4d": 528, "inception4e": 832, "inception5a": 832,
                   "inception5b": 1024}


def test_googlenet_paper_variant():
    # torchvision uses 3x3 in the "5x5" tower; the paper's variant has 5x5, no BN, LRN in the stem.
    tv, paper = meta_model("googlenet"), meta_model("googlenet", variant="paper")
    assert tv.features.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert paper.features.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper.modules()) == 2
    assert n_params(meta_model("googlenet", variant="paper", aux_logits=False)) == 6_998_552
    with pytest.raises(ValueError, match="variant"):
        create_model("googlenet", variant="v2")


@pytest.fixture(scope="module")
def googlenet_gray():
    torch.manual_seed(0)
    return create_model("googlenet", in_chans=1, num_classes=5)


def test_googlenet_aux_outputs_only_in_training(googlenet_gray):
    model = googlenet_gray
    assert model.features.conv1.conv.in_channels == 1
    x = torch.randn(2, 1, 64, 64)
    out = model.train()(x)
    assert isinstance(out, AuxLogits) and out.weight == 0.3
    assert out.logits.shape == (2, 5) and [a.shape for a in out.aux] == [(2, 5), (2, 5)]
    with torch.no_grad():
        logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)


def test_googlenet_aux_heads_follow_reset_classifier(googlenet_gray):
    model = googlenet_gray.train()
    model.reset_classifier(3)
    out = model(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 3) and all(a.shape == (2, 3) for a in out.aux)
    model.reset_classifier(5)


def test_googlenet_without_aux_returns_logits_in_training():
    model = create_model("googlenet_cifar", aux_logits=False, in_chans=1).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert len(model.aux_heads) == 0


def test_googlenet_cifar_trains_with_aux_losses():
    torch.manual_seed(0)
    model = create_model("googlenet_cifar").train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = model(x)
    assert isinstance(out, AuxLogits) and len(out.aux) == 2
    loss = nn.functional.cross_entropy(out.logits, y)
    loss = loss + out.weight * sum(nn.functional.cross_entropy(a, y) for a in out.aux)
    loss.backward()
    aux_grad = model.aux_heads["inception4a"].fc1.weight.grad
    assert aux_grad is not None and aux_grad.abs().sum() > 0


def test_inception_v3_aux_head():
    model = meta_model("inception_v3")
    out = model.train()(meta_input(299))
    assert isinstance(out, AuxLogits) and out.weight == 0.4 and len(out.aux) == 1
    assert tuple(out.aux[0].shape) == (2, 1000)
    assert not isinstance(model.eval()(meta_input(299)), AuxLogits)
    assert isinstance(meta_model("inception_v3", aux_logits=False).train()(meta_input(299)), torch.Tensor)
    aux = model.aux_heads["mixed_6e"]
    assert isinstance(aux.conv0.bn, nn.BatchNorm2d) and isinstance(aux.conv1.bn, nn.BatchNorm2d)


def test_inception_v3_aux_pools_like_the_paper_at_17x17():
    torch.manual_seed(0)
    aux = InceptionV3Aux(8, 3, bn_conv()).eval()
    x = torch.randn(1, 8, 17, 17)
    expected = nn.functional.avg_pool2d(x, 5, 3)
    seen = {}

    def record(module, inputs, output):
        seen["input"] = inputs[0]

    aux.conv0.register_forward_hook(record)
    with torch.no_grad():
        assert aux(x).shape == (1, 3)
        assert torch.equal(seen["input"], expected)
        assert aux(torch.randn(1, 8, 3, 3)).shape == (1, 3)  # small inputs pool adaptively


def test_inception_v3_runs_at_its_minimum_input():
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=4).train()
    out = model(torch.randn(2, 3, 75, 75))
    assert out.logits.shape == (2, 4) and out.aux[0].shape == (2, 4)


def test_bninception_modules():
    model = meta_model("bninception").eval()
    x, grids, widths = meta_input(224), {}, {}
    for name, stage in model.features.named_children():
        x = stage(x)
        grids[name], widths[name] = x.shape[-1], x.shape[1]
    # 3c and 4e downsample inside the module, no pooling layers between stages.
    assert grids["inception3b"] == 28 and grids["inception3c"] == 14 and grids["inception4e"] == 7
    assert [n for n in grids if n.startswith("inception")] == [
        "inception3a", "inception3b", "inception3c", "inception4a", "inception4b", "inception4c",
        "inception4d", "inception4e", "inception5a", "inception5b"]
    assert widths["inception3c"] == 576 and widths["inception4e"] == 1056 and widths["inception5b"] == 1024
    assert not any(m.kernel_size == (5, 5) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(model.features.conv1, DepthwiseSeparableConv)
    assert model.features.conv1.dw.conv.out_channels == 24  # depth multiplier 8
    plain = meta_model("bninception", separable_stem=False)
    assert n_params(plain) == 11_285_224


def test_inception_resnet_residual_scaling():
    v2 = meta_model("inception_resnet_v2")
    blocks = {name: m for name, m in v2.features.named_children() if isinstance(m, InceptionResidual)}
    assert len(blocks) == 40
    assert {blocks[f"block_a{i}"].scale for i in range(1, 11)} == {0.17}
    assert {blocks[f"block_b{i}"].scale for i in range(1, 21)} == {0.10}
    assert {blocks[f"block_c{i}"].scale for i in range(1, 10)} == {0.20}
    assert blocks["block_c10"].scale == 1.0 and isinstance(blocks["block_c10"].act, nn.Identity)
    v1 = meta_model("inception_resnet_v1")
    assert sum(isinstance(m, InceptionResidual) for m in v1.features.children()) == 20  # 5 + 10 + 5
    paper_depth = meta_model("inception_resnet_v2", layers=(5, 10, 5))
    assert sum(isinstance(m, InceptionResidual) for m in paper_depth.features.children()) == 20


def test_inception_residual_adds_scaled_branch():
    torch.manual_seed(0)
    block = inception_resnet_a(16, bn_conv(), (24, 32), scale=0.25).eval()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        branch = block.proj(block.towers(x))
        assert torch.allclose(block(x), torch.relu(x + 0.25 * branch), atol=1e-6)
        nn.init.zeros_(block.proj.weight)
        nn.init.zeros_(block.proj.bias)
        assert torch.equal(block(x), torch.relu(x))


def test_inception_module_concatenates_towers():
    torch.manual_seed(0)
    conv = bn_conv()
    module = inception(8, conv, [[(4, 1)], [(3, 1), Split(((5, (1, 3)), (6, (3, 1))))]], Pool("avg", 7))
    assert module.out_chs == 4 + 11 + 7
    x = torch.randn(2, 8, 6, 6)
    module.eval()
    with torch.no_grad():
        y = module(x)
        assert y.shape == (2, 22, 6, 6)
        assert torch.equal(y[:, :4], module.branch1(x))
        assert torch.equal(y[:, 15:], module.branch3(x))
    reduce = reduction_a(8, conv, k=4, l=5, m=6, n=7)
    assert reduce.out_chs == 7 + 6 + 8 and reduce(x).shape == (2, 21, 2, 2)


def test_xception_has_36_conv_layers_of_which_34_separable():
    model = meta_model("xception")
    separable = [m for m in model.modules() if isinstance(m, DepthwiseSeparableConv)]
    stem = [model.features.conv1, model.features.conv2]
    assert len(separable) == 34 and len(stem) == 2  # section 4: 36 convolutional layers
    # No norm or activation between depthwise and pointwise steps (section 4.7).
    assert all(len(s.dw) == 1 for s in separable)
    shortcuts = [m.shortcut for name, m in model.features.named_children() if name.startswith("block")]
    assert sum(not isinstance(s, nn.Identity) for s in shortcuts) == 4


def copy_state_positionally(dst: nn.Module, src: nn.Module) -> None:
    """Load `src`'s state into `dst` entry by entry; the layouts must agree in order and shape."""
    d, s = dst.state_dict(), src.state_dict()
    assert len(d) == len(s)
    for (kd, vd), (ks, vs) in zip(d.items(), s.items()):
        assert vd.shape == vs.shape, f"{kd} {tuple(vd.shape)} vs {ks} {tuple(vs.shape)}"
    dst.load_state_dict({kd: vs for kd, vs in zip(d, s.values())})


def _reference(library: str, name: str) -> nn.Module:
    if library == "torchvision":
        models = reference_libs()[0].models
        kwargs = dict(aux_logits=False, init_weights=True)
        if name == "googlenet":
            kwargs["transform_input"] = False
        return getattr(models, name)(**kwargs)
    timm = reference_libs()[1]
    return timm.create_model("legacy_xception" if name == "xception" else name)


@pytest.mark.parametrize("name,library,size", [
    ("googlenet", "torchvision", 64), ("inception_v3", "torchvision", 75), ("inception_v4", "timm", 75),
    ("inception_resnet_v2", "timm", 75), ("xception", "timm", 64),
])
def test_same_function_as_reference_library(name, library, size):
    # Where torchvision/timm are installed: their weights load into ours and give the same logits.
    torch.manual_seed(0)
    theirs = _reference(library, name).eval()
    for m in theirs.modules():  # non-trivial BN statistics, so a misplaced BN shows up
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = create_model(name, **({"aux_logits": False} if library == "torchvision" else {})).eval()
    copy_state_positionally(ours, theirs)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
