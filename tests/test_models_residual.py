"""Residual families beyond ResNet: PreResNet, ResNeXt, DenseNet, Shake-Shake, and attention
plugged into every residual class by configuration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers.attention import BAM, CBAM, GatherExcite, SelectiveKernel, SqueezeExcite, attn_names
from cnnzoo.layers.residual import PreActBasicBlock, PreActBottleneck
from cnnzoo.layers.shake import shake_shake


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return n_params(cnnzoo.create_model(name, **kwargs))


# Exact counts of the reference implementations (torchvision; timm for the SE nets).
EXACT = {
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "densenet121": 7_978_856, "densenet169": 14_149_480, "densenet201": 20_013_928, "densenet161": 28_681_000,
    "seresnet18": 11_779_624, "seresnet50": 28_088_024, "seresnext50_32x4d": 27_559_896,
}
# Counts the papers state (in millions, rounded).
PAPERS = {
    "densenet_bc100_k12_cifar": 0.8, "densenet_bc190_k40_cifar": 25.6, "sknet50": 27.5, "cbam_resnet50": 28.09,
    "resnext29_8x64d_cifar": 34.4, "resnext29_16x64d_cifar": 68.1, "preresnet164_cifar": 1.7,
    "preresnet1001_cifar": 10.2, "shake_resnet26_2x32d_cifar": 2.9, "shake_resnet26_2x64d_cifar": 11.7,
    "shake_resnet26_2x96d_cifar": 26.2,
}


@pytest.mark.parametrize("name, count", EXACT.items())
def test_exact_reference_counts(name, count):
    assert meta_count(name) == count
    assert cnnzoo.model_info(name)["ref_params"] == count


@pytest.mark.parametrize("name, millions", PAPERS.items())
def test_counts_stated_in_the_papers(name, millions):
    params = meta_count(name)
    assert abs(params / 1e6 - millions) / millions < 0.05, params
    assert cnnzoo.model_info(name)["ref_params"] == params


ISSUE_NAMES = (
    [f"preresnet{d}_cifar" for d in (20, 32, 44, 56, 110, 164, 1001, 1202)]
    + [f"preresnet{d}" for d in (18, 34, 50, 101, 152)]
    + ["resnext29_8x64d_cifar", "resnext29_16x64d_cifar", "resnext29_32x4d_cifar", "resnext50_32x4d",
       "resnext101_32x8d", "densenet121", "densenet169", "densenet201", "densenet161", "densenet_bc100_k12_cifar",
       "densenet_bc190_k40_cifar", "shake_resnet26_2x32d_cifar", "shake_resnet26_2x64d_cifar"]
    + [f"seresnet{d}" for d in (18, 34, 50, 101, 152)] + [f"seresnet{d}_cifar" for d in (20, 32, 44, 56, 110)]
    + ["seresnext50_32x4d", "se_resnext29_8x64d_cifar", "se_resnext29_16x64d_cifar", "bam_resnet50",
       "cbam_resnet18", "cbam_resnet50", "cbam_resnext29_8x64d_cifar", "cbam_resnext29_16x64d_cifar",
       "ge_resnext29_8x64d_cifar", "ge_resnext29_16x64d_cifar", "ge_resnet50", "sknet50",
       "sk_resnext29_16x32d_cifar", "sk_resnext29_16x64d_cifar"]
)


def test_every_issue_model_is_registered_with_paper_and_count():
    registered = set(cnnzoo.list_models())
    assert [n for n in ISSUE_NAMES if n not in registered] == []
    for name in ISSUE_NAMES:
        info = cnnzoo.model_info(name)
        assert info["paper"]["arxiv"] and info["ref_params"] and info["ref_source"]
        assert info["input_style"] == ("cifar" if name.endswith("_cifar") else "imagenet")


def _modules(model: nn.Module, cls: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, cls)]


ATTN_CLASSES = {"se": SqueezeExcite, "cbam": CBAM, "bam": BAM, "ge": GatherExcite, "sk": SelectiveKernel}
SMALL_RESIDUAL = ["resnet20_cifar", "preresnet20_cifar", "preresnet164_cifar", "resnext29_32x4d_cifar",
                  "shake_resnet26_2x32d_cifar"]


@pytest.mark.parametrize("base", SMALL_RESIDUAL)
@pytest.mark.parametrize("attn", ["se", "cbam", "bam", "ge", "sk"])
def test_attention_plugs_into_every_residual_class(base, attn):
    torch.manual_seed(0)
    model = cnnzoo.create_model(base, attn_layer=attn, num_classes=7)
    modules = _modules(model, ATTN_CLASSES[attn])
    num_blocks = sum(len(getattr(model, s)) for s in model.stage_names)
    if attn == "bam":  # one per stage boundary
        assert len(modules) == len(model.stage_names) - 1
    elif attn == "sk" and base.startswith("shake"):  # one SK conv per branch
        assert len(modules) == 2 * num_blocks
    else:
        assert len(modules) == num_blocks
    assert n_params(model) > n_params(cnnzoo.create_model(base, num_classes=7)) or attn == "ge"
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(m.last_map is not None for m in modules)


def test_imagenet_combination_and_placement_override():
    with torch.device("meta"):
        cbam50 = cnnzoo.create_model("resnet50", attn_layer="cbam")
        se_stage = cnnzoo.create_model("resnet50", attn_layer="se", attn_placement="stage")
        bam_block = cnnzoo.create_model("resnet18", attn_layer="bam", attn_placement="block")
    assert n_params(cbam50) == meta_count("cbam_resnet50")
    assert len(_modules(cbam50, CBAM)) == 16
    assert len(_modules(se_stage, SqueezeExcite)) == 3 and isinstance(se_stage.layer3.attn, SqueezeExcite)
    assert len(_modules(bam_block, BAM)) == 8
    with pytest.raises(ValueError, match="replaces the block's conv"):
        cnnzoo.create_model("resnet18", attn_layer="sk", attn_placement="stage")
    with pytest.raises(ValueError, match="unknown attn_layer"):
        cnnzoo.create_model("resnet18", attn_layer="eca")


def test_bam_sits_between_stages():
    with torch.device("meta"):
        model = cnnzoo.create_model("bam_resnet50")
    assert [type(getattr(model, f"layer{i}")[-1]).__name__ for i in (1, 2, 3, 4)] == ["BAM", "BAM", "BAM", "Bottleneck"]
    assert model.layer2.attn.channel_gate[0].in_channels == 512


def test_sknet50_replaces_the_grouped_conv():
    with torch.device("meta"):
        model = cnnzoo.create_model("sknet50")
    sk = model.layer1[0].conv2
    assert isinstance(sk, SelectiveKernel) and len(sk.branches) == 2
    assert [b.conv.groups for b in sk.branches] == [32, 32] and sk.fc_reduce.conv.out_channels == 32


def test_preresnet_special_cases():
    model = cnnzoo.create_model("preresnet164_cifar")
    first, second = model.layer1[0], model.layer1[1]
    assert isinstance(first, PreActBottleneck)
    assert isinstance(first.bn1, nn.Identity)  # the stem's BN-ReLU is the first unit's pre-activation
    assert isinstance(second.bn1, nn.BatchNorm2d)
    assert isinstance(model.final_norm[0], nn.BatchNorm2d)  # extra BN-ReLU after the last unit
    projection = model.layer2[0].downsample
    assert [type(m) for m in projection] == [nn.Conv2d]  # no BN on a pre-activation shortcut
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [18, 18, 18]
    assert isinstance(cnnzoo.create_model("preresnet20_cifar").layer1[0], PreActBasicBlock)


def test_preresnet_block_adds_nothing_after_the_addition():
    block = PreActBasicBlock(8, 8).eval()
    x = -torch.rand(1, 8, 5, 5)  # negative: any ReLU after the add would show
    with torch.no_grad():
        branch = block.conv2(block.act2(block.bn2(block.conv1(block.act1(block.bn1(x))))))
        torch.testing.assert_close(block(x), branch + x)


def test_shake_shake_differs_between_train_and_eval():
    model = cnnzoo.create_model("shake_resnet26_2x32d_cifar")
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    assert not torch.allclose(a, b)


def test_shake_shake_mixes_forward_and_backward_with_independent_per_image_weights():
    torch.manual_seed(0)
    x1 = torch.ones(6, 3, 4, 4, requires_grad=True)
    x2 = torch.zeros(6, 3, 4, 4, requires_grad=True)
    out = shake_shake(x1, x2, training=True)
    alpha = out.detach()  # alpha * 1 + (1 - alpha) * 0
    out.sum().backward()
    beta = x1.grad
    torch.testing.assert_close(x1.grad + x2.grad, torch.ones_like(x1))
    for coeff in (alpha, beta):
        per_image = coeff.flatten(1)
        torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))  # one per image
        assert bool(((per_image > 0) & (per_image < 1)).all())
        assert per_image[:, 0].unique().numel() == 6
    assert not torch.allclose(alpha, beta)
    torch.testing.assert_close(shake_shake(x1, x2, training=False), 0.5 * (x1 + x2))


def test_shake_shake_shortcut_and_stem():
    model = cnnzoo.create_model("shake_resnet26_2x32d_cifar")
    assert isinstance(model.act1, nn.Identity)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [4, 4, 4]
    assert type(model.layer2[0].downsample).__name__ == "ShakeShortcut"
    assert model.eval()(torch.randn(2, 3, 15, 17)).shape == (2, 10)


def test_densenet_bc_layout():
    model = cnnzoo.create_model("densenet_bc100_k12_cifar")
    blocks = [getattr(model.features, f"denseblock{i}") for i in (1, 2, 3)]
    assert [len(b) for b in blocks] == [16, 16, 16]
    layer = blocks[0].denselayer1
    assert layer.conv1.out_channels == 48 and layer.conv2.out_channels == 12  # bottleneck 4k, growth k
    assert model.features.transition1.conv.in_channels == 24 + 16 * 12
    assert model.features.transition1.conv.out_channels == (24 + 16 * 12) // 2  # compression 0.5
    x = torch.randn(2, 3, 9, 13)
    out = model.eval()(x)
    assert out.shape == (2, 10)


def test_densenet_keeps_torchvision_names():
    with torch.device("meta"):
        keys = set(cnnzoo.create_model("densenet121").state_dict())
    for key in ("features.conv0.weight", "features.norm0.weight", "features.denseblock1.denselayer1.conv1.weight",
                "features.transition3.conv.weight", "features.denseblock4.denselayer16.norm2.running_mean",
                "features.norm5.bias"):
        assert key in keys


def test_attention_names_cover_the_issue():
    assert set(attn_names()) == set(ATTN_CLASSES)
