"""AlexNet, VGG and NIN: reference parameter counts, shapes at the papers' input sizes, the
paper AlexNet's grouped convolutions, LRN and initialisation, CIFAR variants at 32x32.

Counts and paper-size shapes use the meta device (no memory, no arithmetic), so the 140M
parameter VGGs cost nothing; real forwards use small models or small inputs.
"""

from __future__ import annotations

import pytest
import torch
from conftest import meta_model, n_params, reference_libs
from torch import nn

from cnnzoo import create_model, model_info

# The reference table (torchvision), at 1000 classes.
TORCHVISION_COUNTS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name,expected", TORCHVISION_COUNTS.items())
def test_reference_parameter_counts(name, expected):
    assert n_params(meta_model(name)) == expected
    assert model_info(name)["ref_params"] == expected and model_info(name)["ref_source"] == "torchvision"


def test_alexnet_paper_count_by_layer():
    # Section 3.5 / Figure 2: conv2, conv4, conv5 see only their own GPU's half of the maps.
    convs = [(3, 96, 11, 1), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 2), (384, 256, 3, 2)]
    fcs = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    expected = sum(o * (i // g) * k * k + o for i, o, k, g in convs) + sum(i * o + o for i, o in fcs)
    assert n_params(meta_model("alexnet_paper")) == expected == model_info("alexnet_paper")["ref_params"]


@pytest.mark.parametrize("name,expected", [("nin_cifar", 966_986), ("nin", 7_595_176)])
def test_nin_counts_from_layers(name, expected):
    model = meta_model(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.weight.numel() + c.bias.numel() for c in convs) == n_params(model) == expected
    assert not any(isinstance(m, nn.Linear) for m in model.modules()), "NIN has no fully-connected layers"


def test_alexnet_paper_uses_two_groups_and_lrn():
    model = meta_model("alexnet_paper")
    f = model.features
    assert [f.conv1.groups, f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups] == [1, 2, 1, 2, 2]
    assert tuple(f.conv2.weight.shape) == (256, 48, 5, 5)
    lrns = [m for m in f if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2 and all(m.size == 5 and m.k == 2.0 and m.beta == 0.75 for m in lrns)
    pools = [m for m in f if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)  # overlapping
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in meta_model("alexnet").modules())
    assert all(m.groups == 1 for m in meta_model("alexnet").modules() if isinstance(m, nn.Conv2d))


def test_alexnet_paper_grouping_is_real():
    # With groups=2, conv2's first 128 outputs do not depend on conv1's last 48 maps.
    conv2 = create_model("alexnet_paper", fc_features=8).features.conv2
    x = torch.randn(1, 96, 13, 13)
    y = x.clone()
    y[:, 48:] = torch.randn(1, 48, 13, 13)
    with torch.no_grad():
        a, b = conv2(x), conv2(y)
    assert torch.equal(a[:, :128], b[:, :128])
    assert not torch.allclose(a[:, 128:], b[:, 128:])


def test_alexnet_paper_initialisation():
    torch.manual_seed(0)
    model = create_model("alexnet_paper", init="paper", fc_features=256)
    f, fc = model.features, model.head.pre_logits
    for layer in (f.conv2, f.conv4, f.conv5, fc.fc1, fc.fc2):
        assert torch.all(layer.bias == 1.0)
    for layer in (f.conv1, f.conv3, model.head.fc):
        assert torch.all(layer.bias == 0.0)
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert weights.mean().abs() < 1e-3 and abs(weights.std().item() - 0.01) < 5e-4
    default = create_model("alexnet_paper", fc_features=256)
    assert not torch.all(default.features.conv2.bias == 1.0)
    with pytest.raises(ValueError, match="init"):
        create_model("alexnet", init="xavier")


@pytest.mark.parametrize("name,size,feature_shape", [
    ("alexnet", 224, (256, 6, 6)),
    ("alexnet_paper", 227, (256, 6, 6)),
    ("vgg11", 224, (512, 7, 7)),
    ("vgg19_bn", 224, (512, 7, 7)),
    ("nin", 224, (1024, 6, 6)),
    ("nin_cifar", 32, (192, 8, 8)),
    ("vgg16_bn_cifar", 32, (512, 1, 1)),
    ("alexnet_cifar", 32, (256, 3, 3)),
])
def test_shapes_at_paper_input_size(name, size, feature_shape):
    model = meta_model(name).eval()
    x = torch.empty(2, 3, size, size, device="meta")
    assert tuple(model.forward_features(x).shape) == (2, *feature_shape)
    assert tuple(model(x).shape) == (2, model_info(name)["num_classes"])


def test_alexnet_paper_conv1_gives_55x55_maps_at_227():
    conv1 = meta_model("alexnet_paper").features.conv1
    assert tuple(conv1(torch.empty(1, 3, 227, 227, device="meta")).shape) == (1, 96, 55, 55)


@pytest.mark.parametrize("cfg,convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_depth_and_batch_norm(cfg, convs):
    for bn in (False, True):
        model = meta_model(f"{cfg}_bn" if bn else cfg)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        n_fc = sum(isinstance(m, nn.Linear) for m in model.modules())
        assert (n_conv, n_bn, n_fc) == (convs, convs if bn else 0, 3)
        assert all(m.kernel_size == (3, 3) for m in model.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="cfg"):
        create_model("vgg11", cfg="C")


@pytest.mark.parametrize("name", ["alexnet_cifar", "vgg11_bn_cifar", "nin_cifar"])
def test_cifar_variants_run_at_32x32(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model_info(name)["input_size"] == (3, 32, 32)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_vgg_any_input_size_keeps_the_fc_head():
    # The adaptive 7x7 pool makes the 25088-input fc1 work at 32x32 and at 224x224 alike.
    model = meta_model("vgg16").eval()
    assert model.head.pre_logits.fc1.in_features == 512 * 7 * 7
    for size in (32, 100, 224):
        assert tuple(model(torch.empty(1, 3, size, size, device="meta")).shape) == (1, 1000)
    assert model.num_features == 4096


def test_nin_class_maps_are_averaged():
    torch.manual_seed(0)
    model = create_model("nin_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        maps = torch.relu(model.head.fc(features))
        assert maps.shape == (2, 10, 8, 8)
        assert torch.allclose(model(x), maps.mean((2, 3)), atol=1e-6)
    linear = create_model("nin_cifar", class_map_act=False)
    assert isinstance(linear.head.act, nn.Identity)


def copy_state_positionally(dst: nn.Module, src: nn.Module) -> None:
    """Load `src`'s state into `dst` entry by entry; the layouts must agree in order and shape."""
    d, s = dst.state_dict(), src.state_dict()
    assert len(d) == len(s)
    for (kd, vd), (ks, vs) in zip(d.items(), s.items()):
        assert vd.shape == vs.shape, f"{kd} {tuple(vd.shape)} vs {ks} {tuple(vs.shape)}"
    dst.load_state_dict({kd: vs for kd, vs in zip(d, s.values())})


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn"])
def test_same_function_as_torchvision(name):
    # Where torchvision is installed: its weights load into ours and give the same logits.
    tv_models = reference_libs()[0].models
    torch.manual_seed(0)
    ours, theirs = create_model(name).eval(), getattr(tv_models, name)().eval()
    for m in theirs.modules():  # non-trivial BN statistics, so a misplaced BN shows up
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    copy_state_positionally(ours, theirs)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-6)
