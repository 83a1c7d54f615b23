"""Layout options and conventions (issue 15): ResNet v1 against v1.5, SKNet-29 at the paper's
count, MobileNet V1's activation, squeeze-excite on Inception/MobileNet/DenseNet, and Keras'
way of counting BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch
from conftest import reference_libs
from torch import nn

from cnnzoo import create_model, model_info
from cnnzoo.analysis.receptive_field import receptive_fields
from cnnzoo.analysis.summary import summary
from cnnzoo.cli.main import main
from cnnzoo.layers.attention import SelectiveKernel, SqueezeExcite
from cnnzoo.layers.inception import InceptionModule, InceptionResidual


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def se_params(channels: int, reduction: int = 16) -> int:
    """FC C -> C/r and C/r -> C, with biases (the SE paper's block); C/r rounded to the nearest."""
    rd = int(channels / reduction + 0.5)
    return 2 * channels * rd + rd + channels


# ------------------------------------------------------------------------------ ResNet v1 / v1.5

# He et al. 2016, Table 1 (multiply-adds, 10^9); receptive fields of the Caffe models as
# published by Araujo, Norris & Sim 2019 (Distill), Table 1: 483 / 1027 / 1507.
PAPER_RESNETS = {50: (3.8, 483), 101: (7.6, 1027), 152: (11.3, 1507)}


def _layout_numbers(name: str) -> tuple[int, int, int]:
    model = meta_model(name)
    return n_params(model), summary(model, (3, 224, 224), depth=1).macs, receptive_fields(model).features.size[0]


def _check_resnet_layouts(depth: int) -> None:
    gmacs, field = PAPER_RESNETS[depth]
    params_v15, macs_v15, rf_v15 = _layout_numbers(f"resnet{depth}")
    params_v1, macs_v1, rf_v1 = _layout_numbers(f"resnet{depth}_v1")
    assert params_v1 == params_v15 == model_info(f"resnet{depth}_v1")["ref_params"]  # the stride moves, no weight
    assert rf_v1 == field and rf_v15 == field - 56  # v1.5's 3x3 sees every pixel the 1x1 skipped
    assert abs(macs_v1 / 1e9 - gmacs) / gmacs < 0.016  # the paper's figure, rounded
    assert abs(macs_v15 / 1e9 - gmacs) / gmacs > 0.016 and macs_v15 > macs_v1


def test_resnet50_v1_has_the_papers_receptive_field_and_macs():
    _check_resnet_layouts(50)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_resnet_v1_layouts(depth):
    _check_resnet_layouts(depth)


def test_v1_strides_the_first_1x1_and_takes_the_same_weights():
    v15, v1 = create_model("resnet50"), create_model("resnet50_v1")
    block15, block1 = v15.layer2[0], v1.layer2[0]
    assert (block15.conv1.stride, block15.conv2.stride) == ((1, 1), (2, 2))
    assert (block1.conv1.stride, block1.conv2.stride) == ((2, 2), (1, 1))
    v1.load_state_dict(v15.state_dict())  # strict: same keys and shapes
    # torchvision's ResNet-50 with its strides moved to the 1x1s computes what resnet50_v1 does.
    from cnnzoo.weights.converters import tv_resnet

    torchvision, _ = reference_libs()

    tv = torchvision.models.resnet50(weights=None).eval()
    for stage in (tv.layer2, tv.layer3, tv.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    v1.load_state_dict(tv_resnet(tv.state_dict()))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(v1.eval()(x), tv(x))


def test_stride_in_1x1_needs_a_bottleneck():
    with pytest.raises(ValueError, match="bottleneck"):
        create_model("resnet18", stride_in_1x1=True)


# ------------------------------------------------------------------------------ SKNet-29


def test_sknet29_has_the_papers_count_and_the_full_width_option():
    paper = meta_model("sk_resnext29_16x32d_cifar")
    assert n_params(paper) == model_info("sk_resnext29_16x32d_cifar")["ref_params"] == 27_740_298
    assert round(n_params(paper) / 1e6, 1) == 27.7  # Li et al. 2019, CIFAR table: SKNet-29 27.7M
    assert "paper" in model_info("sk_resnext29_16x32d_cifar")["ref_source"]
    sk = next(m for m in paper.modules() if isinstance(m, SelectiveKernel))
    convs = [branch.conv for branch in sk.branches]
    assert [(c.kernel_size, c.dilation, c.groups) for c in convs] == [((3, 3), (1, 1), 64), ((5, 5), (1, 1), 64)]
    full = meta_model("sk_resnext29_16x32d_cifar", attn_kwargs={"branch_groups": None, "dilated": True})
    assert n_params(full) == 37_546_122
    assert [b.conv.groups for b in next(m for m in full.modules() if isinstance(m, SelectiveKernel)).branches] == [16, 16]


# ------------------------------------------------------------------------------ MobileNet V1


def test_mobilenet_v1_activation_by_name_and_for_the_weights():
    paper, slim = create_model("mobilenet_v1_025"), create_model("mobilenet_v1_025", act_layer="relu6")
    acts = {type(m) for m in slim.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))}
    assert acts == {nn.ReLU6} and {type(m) for m in paper.modules() if isinstance(m, nn.ReLU6)} == set()
    assert slim.default_cfg["act_layer"] == "ReLU6" and paper.default_cfg["act_layer"] == "ReLU"
    slim.load_state_dict(paper.state_dict())  # the activation changes no weight
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 20  # ReLU6 clips, ReLU not
    assert slim.eval().stem(x).max() == 6 < paper.eval().stem(x).max()
    with pytest.raises(ValueError, match="unknown act_layer 'relu7'"):
        create_model("mobilenet_v1_025", act_layer="relu7")
    from cnnzoo.weights import build_model_for

    timm_v1 = build_model_for("mobilenet_v1.ra4_e3600_r224_in1k", num_classes=10)
    assert isinstance(timm_v1.stem.act, nn.ReLU6)


# ------------------------------------------------------------------------------ squeeze-excite


def test_se_mobilenet_matches_the_se_paper():
    base, se = meta_model("mobilenet_v1"), meta_model("se_mobilenet_v1")
    widths = [block.pw.conv.out_channels for block in base.blocks]
    assert n_params(se) == n_params(base) + sum(se_params(c) for c in widths) == model_info("se_mobilenet_v1")["ref_params"]
    assert round(n_params(se) / 1e6, 1) == 4.7  # Hu et al. 2018, Table 3: SE-MobileNet 4.7M
    assert all(isinstance(block.attn, SqueezeExcite) for block in se.blocks)


def test_se_bn_inception_gates_every_module():
    base, se = meta_model("bninception"), meta_model("se_bninception")
    modules = [m for m in se.modules() if isinstance(m, InceptionModule)]
    assert len(modules) == 10 and all(isinstance(m.attn, SqueezeExcite) for m in modules)
    assert n_params(se) == n_params(base) + sum(se_params(m.out_chs) for m in modules)
    assert n_params(se) == model_info("se_bninception")["ref_params"]
    # the gate scales the concatenation: a closed gate (sigmoid -> 0) silences the module
    module = create_model("se_bninception").features.inception3a.eval()
    nn.init.constant_(module.attn.fc2.bias, -1e4)
    with torch.no_grad():
        assert module(torch.randn(1, 192, 8, 8)).abs().max() == 0


def test_se_inception_resnet_v2_gates_every_residual_branch():
    base, se = meta_model("inception_resnet_v2"), meta_model("se_inception_resnet_v2")
    blocks = [m for m in se.modules() if isinstance(m, InceptionResidual)]
    assert len(blocks) == 40 and all(isinstance(b.attn, SqueezeExcite) for b in blocks)
    assert not any(isinstance(m.attn, SqueezeExcite) for m in se.modules() if isinstance(m, InceptionModule))
    assert n_params(se) == n_params(base) + sum(se_params(b.out_chs) for b in blocks)
    assert n_params(se) == model_info("se_inception_resnet_v2")["ref_params"]
    # the SE paper's Table 2: 11.75 -> 11.76 GFLOPs, SE costs under 0.1% of the network's work
    macs = [summary(m.eval(), (3, 299, 299), depth=1).macs for m in (base, se)]
    assert 0 < macs[1] / macs[0] - 1 < 1e-3
    # the gate sits on the branch, before the sum: a closed gate leaves act(x)
    block = create_model("se_inception_resnet_v2").features.block_a1.eval()
    nn.init.constant_(block.attn.fc2.bias, -1e4)
    x = torch.randn(1, 320, 9, 9)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


@pytest.mark.parametrize("name, where", [("mobilenet_v2_cifar", "expanded"), ("densenet_bc100_k12_cifar", "block")])
def test_attention_plugs_into_mobilenet_v2_and_densenet(name, where):
    model = create_model(name, attn_layer="se", num_classes=5)
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    if where == "expanded":  # one per inverted residual, on the expanded (depthwise) width
        assert [g.fc1.in_channels for g in gates] == [b.conv_dw.conv.out_channels for b in model.blocks]
    else:  # one per dense block, on its concatenated output
        assert [g.fc1.in_channels for g in gates] == [24 + 16 * 12, 108 + 16 * 12, 150 + 16 * 12]
    plain = create_model(name, num_classes=5)
    assert n_params(model) == n_params(plain) + sum(se_params(g.fc1.in_channels) for g in gates)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


# ------------------------------------------------------------------------------ Keras' count


def test_keras_counts_batchnorm_statistics_as_non_trainable(capsys):
    from cnnzoo.engine.optim import freeze_backbone

    model = meta_model("mobilenet_v2", num_classes=21)
    assert summary(model, (3, 32, 32), depth=1, keras=True).keras_counts() == (2_284_885, 2_250_773, 34_112)
    freeze_backbone(model)
    assert summary(model, (3, 32, 32), depth=1).keras_counts() == (2_284_885, 26_901, 2_257_984)
    assert main(["summary", "mobilenet_v2", "--num-classes", "21", "--freeze-backbone", "--depth", "1",
                 "--input-size", "3,32,32", "--keras"]) == 0
    out = capsys.readouterr().out
    assert "Total params:          2,284,885" in out and "Trainable params:      26,901\n" in out
    assert "Non-trainable params:  2,257,984" in out
