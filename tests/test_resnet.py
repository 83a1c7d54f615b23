"""ResNet: reference parameter counts, shortcut options A/B/C, stems, blocks and options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers.residual import BasicBlock, Bottleneck, PadShortcut, create_shortcut
from cnnzoo.models.resnet import ResNet, cifar_args


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_count(name: str, **kwargs) -> int:
    # Parameter counts do not need real memory or initialisation.
    with torch.device("meta"):
        return n_params(cnnzoo.create_model(name, **kwargs))


TORCHVISION = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
}
# The paper's section 4.2: "0.27M / 0.46M / 0.66M / 0.85M / 1.7M / 19.4M".
PAPER_CIFAR = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 1202: 19.4e6}


@pytest.mark.parametrize("name, count", TORCHVISION.items())
def test_imagenet_counts_equal_torchvision(name, count):
    assert meta_count(name) == count
    assert cnnzoo.model_info(name)["ref_params"] == count


@pytest.mark.parametrize("depth, count", PAPER_CIFAR.items())
def test_cifar_counts_match_the_paper(depth, count):
    name = f"resnet{depth}_cifar"
    params = meta_count(name)
    assert abs(params - count) / count < 0.02
    assert cnnzoo.model_info(name)["ref_params"] == params
    model_layers = cifar_args(depth)["layers"]
    assert model_layers == ((depth - 2) // 6,) * 3


def test_cifar_resnet20_layout():
    model = cnnzoo.create_model("resnet20_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert not hasattr(model, "layer4")
    assert model.num_features == 64 and model.num_classes == 10
    assert model.default_cfg["input_size"] == (3, 32, 32)
    assert isinstance(model.layer2[0].downsample, PadShortcut)
    assert model.layer2[1].downsample is None


def test_wide_cifar_resnet18_matches_kuangliu_count():
    assert meta_count("resnet18_cifar") == 11_173_962
    model = cnnzoo.create_model("resnet18_cifar")
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)


def test_imagenet_names_follow_torchvision():
    keys = set(cnnzoo.create_model("resnet18").state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.weight", "layer4.1.bn2.bias", "head.fc.weight"):
        assert key in keys


def test_option_a_pads_new_channels_symmetrically_after_subsampling():
    shortcut = PadShortcut(16, 32, stride=2)
    x = torch.arange(2 * 16 * 6 * 6, dtype=torch.float32).view(2, 16, 6, 6) + 1
    y = shortcut(x)
    assert y.shape == (2, 32, 3, 3)
    assert bool((y[:, :8] == 0).all() and (y[:, 24:] == 0).all())
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])


def test_option_a_subsampling_matches_strided_conv_size_for_odd_inputs():
    x = torch.randn(1, 16, 7, 9)
    conv = nn.Conv2d(16, 32, 3, 2, 1)
    assert PadShortcut(16, 32, 2)(x).shape == conv(x).shape


def _shortcut_params(model: nn.Module) -> int:
    return sum(n_params(m.downsample) for m in model.modules() if getattr(m, "downsample", None) is not None)


def _projection_cost(in_chs: int, out_chs: int) -> int:
    return in_chs * out_chs + 2 * out_chs  # 1x1 conv without bias + BN scale and shift


def test_shortcut_options_differ_by_their_projections():
    models = {opt: ResNet(**{**cifar_args(20), "shortcut": opt}) for opt in "ABC"}
    assert _shortcut_params(models["A"]) == 0
    # B: projections only where the shape changes (16->32 and 32->64)
    assert n_params(models["B"]) - n_params(models["A"]) == _projection_cost(16, 32) + _projection_cost(32, 64)
    # C: a projection on every one of the 9 blocks
    blocks = [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2
    assert n_params(models["C"]) - n_params(models["A"]) == sum(_projection_cost(i, o) for i, o in blocks)
    assert all(b.downsample is not None for s in ("layer1", "layer2", "layer3") for b in getattr(models["C"], s))


def test_shortcut_factory():
    assert create_shortcut("A", 16, 16, 1) is None and create_shortcut("B", 16, 16, 1) is None
    assert isinstance(create_shortcut("C", 16, 16, 1), nn.Sequential)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        create_shortcut("D", 16, 32, 2)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        cnnzoo.create_model("resnet20_cifar", shortcut="D")


def test_blocks_follow_the_paper():
    basic = BasicBlock(64, 64)
    assert [m.kernel_size for m in basic.modules() if isinstance(m, nn.Conv2d)] == [(3, 3), (3, 3)]
    bottleneck = Bottleneck(256, 64, stride=2, downsample=create_shortcut("B", 256, 256, 2))
    convs = [m for m in bottleneck.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs[:3]] == [(1, 1), (3, 3), (1, 1)]
    assert convs[1].stride == (2, 2)  # v1.5: stride on the 3x3
    assert bottleneck(torch.randn(2, 256, 8, 8)).shape == (2, 256, 4, 4)


@pytest.mark.parametrize("size", [(1, 20, 20), (3, 33, 47), (3, 64, 64)])
def test_any_input_size_channels_and_classes(size):
    model = cnnzoo.create_model("resnet18", in_chans=size[0], num_classes=7).eval()
    assert model(torch.randn(2, *size)).shape == (2, 7)
    cifar = cnnzoo.create_model("resnet20_cifar", in_chans=size[0], num_classes=3).eval()
    assert cifar(torch.randn(2, *size)).shape == (2, 3)


def test_features_head_and_reset_classifier():
    model = cnnzoo.create_model("resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (1, 2048, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (1, 2048)
    model.reset_classifier(0)
    assert model(x).shape == (1, 2048)
    model.reset_classifier(5)
    assert model(x).shape == (1, 5) and model.get_classifier().out_features == 5


def test_resnext_uses_grouped_convolutions():
    assert meta_count("resnext50_32x4d") == 25_028_904
    assert meta_count("resnext101_32x8d") == 88_791_336
    with torch.device("meta"):
        model = cnnzoo.create_model("resnext50_32x4d")
    conv2 = model.layer1[0].conv2
    assert conv2.groups == 32 and conv2.in_channels == 128


def test_zero_init_last_and_stochastic_depth():
    model = cnnzoo.create_model("resnet20_cifar", zero_init_last=True)
    assert all(int(torch.count_nonzero(b.bn2.weight)) == 0 for b in model.layer1)
    model = cnnzoo.create_model("resnet20_cifar", drop_path_rate=0.2)
    rates = [b.drop_path.drop_prob for s in ("layer1", "layer2", "layer3") for b in getattr(model, s)
             if not isinstance(b.drop_path, nn.Identity)]
    assert rates == pytest.approx([0.2 * i / 8 for i in range(1, 9)])
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), model(x))


def test_block_given_by_name_and_bad_options():
    model = ResNet(block="bottleneck", layers=(1, 1), widths=(8, 16), stem="cifar", stem_width=8, num_classes=4)
    assert isinstance(model.layer1[0], Bottleneck) and model.num_features == 64
    with pytest.raises(ValueError, match="unknown block"):
        ResNet(block="nope")
    with pytest.raises(ValueError, match="same length"):
        ResNet(layers=(1, 1), widths=(8,))
    with pytest.raises(ValueError, match="stem must be one of"):
        ResNet(stem="tiny")
    with pytest.raises(cnnzoo.UnknownOptionError, match="resnet20_cifar.*'shortcuts'"):
        cnnzoo.create_model("resnet20_cifar", shortcuts="A")
