"""Attention maps: every attention type in cnnzoo.layers.attention is read after one forward pass,
sorted into stages, and drawn; the command refuses a model without attention."""

from __future__ import annotations

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.viz import attention_maps, has_matplotlib
from cnnzoo.viz.attention import last_per_stage

needs_matplotlib = pytest.mark.skipif(not has_matplotlib(), reason="matplotlib is not installed (pip install 'cnnzoo[viz]')")
STAGES = 3  # resnet20_cifar: three stages at 32, 16 and 8 px

# attention type -> the kinds of map it records
KINDS = {"se": {"channel"}, "cbam": {"channel", "spatial"}, "bam": {"spatial"}, "ge": {"spatial"}, "sk": {"branch"}}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(attn: str):
    torch.manual_seed(0)
    kwargs = {"attn_kwargs": {"extent": 2}} if attn == "ge" else {}
    return create_model("resnet20_cifar", num_classes=4, attn_layer=attn, **kwargs)


@pytest.mark.parametrize("attn", sorted(KINDS))
def test_maps_are_read_for_every_attention_type(attn):
    model = _model(attn).train()
    images = torch.randn(3, 3, 32, 32)
    maps = attention_maps(model, images)
    assert model.training, "the model's mode is restored"
    assert {m.kind for m in maps} == KINDS[attn]
    for item in maps:
        assert item.values.shape[0] == 3 and torch.isfinite(item.values).all()
        assert item.values.min() >= 0 and item.values.max() <= 1  # sigmoid gates, softmax weights
        if item.kind == "branch":
            assert torch.allclose(item.values.sum(dim=1), torch.ones(3, item.values.shape[2]), atol=1e-5)
        if item.kind == "channel":
            assert item.values.shape[1] == item.feature_shape[0]
    for kind in KINDS[attn]:
        stages = last_per_stage(maps, kind)
        expected = STAGES - 1 if attn == "bam" else STAGES  # BAM sits between stages: two bottlenecks
        assert len(stages) == expected
        assert len({s.feature_shape for s in stages}) == len(stages)


def test_no_attention_no_maps():
    assert attention_maps(create_model("resnet20_cifar"), torch.randn(1, 3, 32, 32)) == []


@needs_matplotlib
@pytest.mark.parametrize("attn", ["se", "cbam", "sk"])
def test_pictures_have_a_panel_per_stage(attn, tmp_path):
    from PIL import Image

    from cnnzoo.viz import plot_attention

    model = _model(attn)
    shown = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    plots = plot_attention(model, shown.float() / 255, shown, tmp_path, labels=["a", "b"])
    by_name = {p.path.name: p for p in plots}
    expected = {"se": {"attention_channel.png"}, "cbam": {"attention_channel.png", "attention_spatial.png"},
                "sk": {"attention_branch.png"}}[attn]
    assert set(by_name) == expected
    for plot in plots:
        assert Image.open(plot.path).size == plot.size
    if "attention_channel.png" in by_name:
        assert by_name["attention_channel.png"].panels == STAGES
    if "attention_spatial.png" in by_name:
        assert by_name["attention_spatial.png"].panels == 2 * (1 + STAGES)  # per image: itself + a map per stage


@needs_matplotlib
def test_command_draws_attention_and_refuses_a_model_without(tmp_path, capsys):
    from PIL import Image

    from cnnzoo.cli.main import main

    Image.fromarray(torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8).numpy()).save(tmp_path / "x.png")

    def explain(model):
        code = main(["explain", "attention", model, str(tmp_path / "x.png"), "-o", str(tmp_path / model)])
        return code, capsys.readouterr().err

    code, err = explain("seresnet20_cifar")
    assert code == 0, err
    assert (tmp_path / "seresnet20_cifar" / "attention_channel.png").is_file()
    code, err = explain("resnet20_cifar")
    assert code == 2 and "no attention modules" in err
