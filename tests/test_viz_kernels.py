"""Kernels and features: the first-layer grid, feature maps of a named layer, and the
depthwise-kernel health report (near-zero = max |w| below threshold x the layer's largest)."""

from __future__ import annotations

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.cli.main import main
from cnnzoo.errors import CnnzooError
from cnnzoo.viz import compare_depthwise, depthwise_health, depthwise_table, feature_maps, has_matplotlib
from cnnzoo.viz.kernels import NEAR_ZERO, is_depthwise

needs_matplotlib = pytest.mark.skipif(not has_matplotlib(), reason="matplotlib is not installed (pip install 'cnnzoo[viz]')")


def _with_weak_kernels(model, layer: str, scales: dict[int, float]):
    """Scale chosen kernels of `layer` so that their max |w| is `scale` x the layer's largest."""
    conv = model.get_submodule(layer)
    with torch.no_grad():
        peak = conv.weight.abs().max()
        for index, scale in scales.items():
            kernel = conv.weight[index]
            kernel.mul_(scale * peak / kernel.abs().max())
    return model


def test_near_zero_kernels_are_counted_relative_to_their_layer():
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_cifar")
    layer = next(n for n, m in model.named_modules() if is_depthwise(m))
    below, above = 0.5 * NEAR_ZERO, 2 * NEAR_ZERO
    _with_weak_kernels(model, layer, {0: below, 1: below, 2: 0.0, 3: above})
    report = {r.name: r for r in depthwise_health(model)}
    assert report[layer].near_zero == 3
    assert report[layer].fraction == pytest.approx(3 / report[layer].kernels)
    assert sum(r.near_zero for r in report.values()) == 3, "fresh layers have no near-zero kernels"
    assert depthwise_health(model, threshold=4 * NEAR_ZERO)[0].near_zero == 4
    table = depthwise_table(list(report.values()))
    assert table.rows[-1][:1] == ["total"] and table.rows[-1][3] == "3"
    assert "largest |weight|" in table.note


def test_only_depthwise_convolutions_are_reported():
    assert depthwise_health(create_model("resnet20_cifar")) == []
    layers = depthwise_health(create_model("mobilenet_v1_cifar"))
    assert len(layers) == 13  # MobileNet V1: 13 depthwise-separable blocks


def test_comparison_table_names_the_activations():
    models = {"v1": create_model("mobilenet_v1_cifar"), "v2": create_model("mobilenet_v2_cifar")}
    table = compare_depthwise(models)
    assert [row[0] for row in table.rows] == ["v1", "v2"]
    activations = {row[0]: row[1] for row in table.rows}
    assert "ReLU6" in activations["v2"] and activations["v1"] == "ReLU"


def test_feature_maps_of_a_named_layer():
    model = create_model("lenet5")
    maps = feature_maps(model, torch.randn(1, 32, 32), "features.0")
    assert maps.shape == (6, 28, 28)
    with pytest.raises(CnnzooError, match="cnnzoo summary"):
        feature_maps(model, torch.randn(1, 32, 32), "nope")


@needs_matplotlib
def test_kernel_grid_feature_grid_and_health_plot(tmp_path):
    from PIL import Image

    from cnnzoo.viz import plot_depthwise_health, plot_feature_maps, plot_first_layer_kernels

    grid = plot_first_layer_kernels(create_model("alexnet_cifar"), tmp_path / "kernels.png")
    first = next(m for m in create_model("alexnet_cifar").modules() if isinstance(m, torch.nn.Conv2d))
    assert grid.panels == min(first.out_channels, 96)
    maps = plot_feature_maps(torch.rand(10, 8, 8), tmp_path / "maps.png", "ten channels")
    health = plot_depthwise_health(depthwise_health(create_model("mobilenet_v2_cifar")), tmp_path / "dw.png")
    for plot in (grid, maps, health):
        assert Image.open(plot.path).size == plot.size
    assert (maps.panels, health.panels) == (10, 1)


def test_depthwise_command_table_and_refusal(tmp_path, capsys):
    def explain(*models):
        code = main(["explain", "depthwise", *models, "-o", str(tmp_path)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = explain("mobilenet_v1_cifar")
    assert code == 0 and "Near-zero" in out and "near-zero:" in out
    code, out, _ = explain("mobilenet_v1_cifar", "mobilenet_v2_cifar")
    assert code == 0 and "ReLU6" in out
    code, _, err = explain("resnet20_cifar")
    assert code == 2 and "no depthwise" in err
