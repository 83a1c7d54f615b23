from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.models.base import ZooModel
from cnnzoo import UnknownModelError, UnknownOptionError, create_model, list_models, model_info
from cnnzoo.registry import Paper, _REGISTRY, build_model, register_model

PAPER = Paper("A Test Paper", 2024, "0000.00000")


class Tiny(ZooModel):
    def __init__(self, *, num_classes: int = 10, in_chans: int = 3, width: int = 4):
        super().__init__()
        self.in_chans, self.num_features = in_chans, width
        self.conv = nn.Conv2d(in_chans, width, 3)
        self._init_head(num_classes)

    def forward_features(self, x):
        return self.conv(x)


@pytest.fixture
def tiny_registered():
    @register_model(family="tiny", paper=PAPER, input_style="cifar", ref_params=123, ref_source="made up")
    def tiny_test_net(**kwargs):
        return build_model(Tiny, dict(width=4), kwargs)
    yield "tiny_test_net"
    del _REGISTRY["tiny_test_net"]


def test_duplicate_name_is_refused(tiny_registered):
    with pytest.raises(ValueError, match="already registered"):
        @register_model(family="tiny", paper=PAPER, input_style="cifar")
        def tiny_test_net(**kwargs):  # noqa: F811
            return Tiny(**kwargs)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean.*lenet5") as info:
        create_model("lenet_5")
    assert "lenet_5" in str(info.value)
    with pytest.raises(UnknownModelError, match="cnnzoo list"):
        model_info("zzzzzz")


def test_unknown_option_names_model_and_option():
    with pytest.raises(UnknownOptionError, match=r"model 'lenet5'.*'colour'"):
        create_model("lenet5", colour=True)
    with pytest.raises(UnknownOptionError, match="did you mean 'drop_rate'"):
        create_model("lenet5", drop_rat=0.1)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        create_model("lenet5", 10)  # type: ignore[misc]


def test_wildcards_and_filters(tiny_registered):
    assert list_models("lenet*") == ["lenet5", "lenet5_relu"]
    assert list_models("*_relu") == ["lenet5_relu"]
    assert list_models("no_such_*") == []
    assert list_models(family="tiny") == ["tiny_test_net"]
    assert "tiny_test_net" in list_models(input_style="cifar")
    assert "tiny_test_net" not in list_models(input_style="imagenet")
    assert list_models() == sorted(list_models())


def test_model_info_fields(tiny_registered):
    info = model_info("tiny_test_net")
    assert info["family"] == "tiny"
    assert info["paper"] == {"title": "A Test Paper", "year": 2024, "arxiv": "0000.00000", "authors": ""}
    assert info["input_style"] == "cifar" and info["input_size"] == (3, 32, 32)
    assert info["ref_params"] == 123 and info["ref_source"] == "made up"
    assert len(info["mean"]) == len(info["std"]) == 3


def test_default_cfg_travels_with_the_model(tiny_registered):
    model = create_model("tiny_test_net", num_classes=5, in_chans=1)
    assert model.default_cfg["architecture"] == "tiny_test_net"
    assert model.default_cfg["num_classes"] == 5
    assert model.default_cfg["input_size"] == (1, 32, 32)
    assert len(model.default_cfg["mean"]) == 1
    model.reset_classifier(3)
    assert model.default_cfg["num_classes"] == 3 and model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


def test_invalid_input_style_is_refused():
    with pytest.raises(ValueError, match="input_style"):
        register_model(family="x", paper=PAPER, input_style="mnist")


def test_lenet_variants_follow_the_paper():
    paper = create_model("lenet5")
    assert any(isinstance(m, nn.Tanh) for m in paper.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in paper.modules())
    relu = create_model("lenet5_relu")
    assert any(isinstance(m, nn.MaxPool2d) for m in relu.modules())
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())
    # C1-S2-C3-S4-C5 feature maps at 32x32: 6x28x28 -> 16x10x10 -> 120x1x1
    assert paper.forward_features(torch.zeros(1, 1, 32, 32)).shape == (1, 120, 1, 1)


def test_lenet_sparse_c3_table_blocks_connections():
    model = create_model("lenet5", c3_table=True)
    c3 = model.features[3]
    assert int(c3.mask.sum()) == 60  # Table I: 60 of the 6x16 S2->C3 connections
    effective = int((c3.weight * c3.mask).ne(0).sum()) + c3.bias.numel()
    assert effective == 1_516  # the paper's C3 parameter count
    x = torch.randn(2, 1, 32, 32)
    model(x).sum().backward()
    assert torch.all(c3.weight.grad[c3.mask.expand_as(c3.weight) == 0] == 0)
