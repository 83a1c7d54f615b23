"""Grad-CAM: a finite map of the input's size for every registered classification family, the
automatic choice of layer, named layers, and a model where the answer is known (digits drawn
on one half of a blank canvas: the map must peak on that half)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model, list_models, model_info
from cnnzoo.errors import CnnzooError
from cnnzoo.viz import gradcam, has_matplotlib
from cnnzoo.viz.gradcam import default_target_layer, spatial_layers
from conftest import meta_model, n_params

needs_matplotlib = pytest.mark.skipif(not has_matplotlib(), reason="matplotlib is not installed (pip install 'cnnzoo[viz]')")


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second thread only adds synchronisation, which on a busy
    two-core machine costs 20x (measured: 0.45 s instead of 0.02 s per training step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CLASSIFIERS = [n for n in list_models() if model_info(n)["task"] == "classify"]


def _families() -> dict[str, list[str]]:
    families = defaultdict(list)
    for name in CLASSIFIERS:
        families[model_info(name)["family"]].append(name)
    return dict(families)


def _small_input(name: str, batch: int = 1) -> torch.Tensor:
    """The model's declared test or minimum size, else its own (CIFAR-style) or 64x64 (ImageNet-style)."""
    info = model_info(name)
    size = info.get("test_input_size") or info.get("min_input_size") or (
        info["input_size"] if info["input_style"] == "cifar" else (info["input_size"][0], 64, 64))
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def _check_maps(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    model.train()  # Grad-CAM must switch to eval mode (no auxiliary heads) and back
    x = _small_input(name)
    cam = gradcam(model, x)
    assert model.training
    assert cam.maps.shape == (x.shape[0], *x.shape[-2:])
    assert torch.isfinite(cam.maps).all() and cam.maps.min() >= 0 and cam.maps.max() <= 1
    assert cam.probs.shape == (x.shape[0], 5) and len(cam.targets) == x.shape[0]


@pytest.mark.parametrize("family", sorted(_families()))
def test_every_family_gets_a_finite_map_of_the_input_size(family):
    smallest = min(_families()[family], key=lambda n: n_params(meta_model(n)))
    _check_maps(smallest)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_model_gets_a_finite_map(name):
    _check_maps(name)


def test_default_layer_is_the_last_map_larger_than_one_pixel():
    model = create_model("lenet5").eval()
    x = torch.randn(1, 1, 32, 32)
    layer = default_target_layer(model, x)
    shapes = spatial_layers(model, x)
    names = [n for n, _ in shapes]
    chosen = dict(shapes)[layer]
    assert chosen[2] > 1 and chosen[3] > 1
    later = shapes[len(names) - 1 - names[::-1].index(layer) + 1:]
    assert all(s[2] == 1 and s[3] == 1 for _, s in later), "a later module has a larger map"


def test_named_layer_and_unknown_layer():
    model = create_model("lenet5")
    cam = gradcam(model, torch.randn(2, 1, 32, 32), target_layer="features.0")
    assert cam.layer == "features.0" and cam.layer_size == (28, 28)
    with pytest.raises(CnnzooError, match="cnnzoo summary"):
        gradcam(model, torch.randn(1, 1, 32, 32), target_layer="features.99")
    with pytest.raises(CnnzooError, match="4-D"):
        gradcam(model, torch.randn(1, 1, 32, 32), target_layer="fc")


def test_layer_followed_by_an_inplace_relu_and_frozen_weights():
    model = create_model("resnet20_cifar", num_classes=4)
    for p in model.parameters():
        p.requires_grad_(False)
    bn = next(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    cam = gradcam(model, torch.randn(2, 3, 32, 32), target_layer=bn, targets=[1, 2])
    assert cam.targets == [1, 2] and torch.isfinite(cam.maps).all()


# ---------------------------------------------------------------------------- the known answer


STEPS = 400  # about 7 s on one CPU thread


class TinyCNN(nn.Module):
    """Three convolutions and a global average pool: every position of the last map feeds the class.
    Bias-free, so the blank half of the canvas has no activation of its own: the only evidence for
    the class is the digit, wherever it is."""

    def __init__(self, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.ReLU(),
        )
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _digits_on_one_side(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [n,1,32,32], digit labels 0-3, side: 0 left / 1 right): a 14x14 digit somewhere in one half."""
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=4)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(digits.target), (n,), generator=gen)
    small = torch.tensor(digits.images, dtype=torch.float32)[pick, None] / 16
    glyphs = F.interpolate(small, size=(14, 14), mode="bilinear", align_corners=False)
    side = torch.randint(0, 2, (n,), generator=gen)
    top = torch.randint(0, 32 - 14, (n,), generator=gen)
    left = torch.randint(0, 16 - 14 + 1, (n,), generator=gen) + 16 * side
    canvas = torch.zeros(n, 1, 32, 32)
    for i in range(n):
        canvas[i, :, top[i]:top[i] + 14, left[i]:left[i] + 14] = glyphs[i]
    return canvas, torch.tensor(digits.target)[pick], side


def test_gradcam_peaks_on_the_side_where_the_digit_is():
    torch.manual_seed(0)
    model = TinyCNN(4)
    images, labels, _ = _digits_on_one_side(1024, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(STEPS):
        index = torch.randint(0, len(labels), (32,))
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_images, test_labels, side = _digits_on_one_side(64, seed=2)
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean()
    assert accuracy > 0.8, f"the tiny model did not learn the digits ({accuracy:.2f})"
    maps = gradcam(model, test_images).maps
    left_mass, right_mass = maps[..., :16].sum((1, 2)), maps[..., 16:].sum((1, 2))
    on_digit_side = torch.where(side == 0, left_mass > right_mass, right_mass > left_mass)
    assert on_digit_side.float().mean() >= 0.9, f"map peaks on the digit's half for {on_digit_side.float().mean():.0%}"


# ---------------------------------------------------------------------------- pictures and the command


@needs_matplotlib
def test_overlay_png_and_command(tmp_path, capsys):
    from PIL import Image

    from cnnzoo.cli.main import main
    from cnnzoo.viz import plot_gradcam

    model = create_model("lenet5")
    image = torch.randint(0, 255, (1, 32, 32), dtype=torch.uint8)
    cam = gradcam(model, (image[None].float() / 255 - 0.3) / 0.3)
    plot = plot_gradcam(image, cam, 0, tmp_path / "overlay.png")
    assert plot.panels == 2 and Image.open(plot.path).size == plot.size
    Image.fromarray(image[0].numpy()).save(tmp_path / "digit.png")
    code = main(["explain", "gradcam", "lenet5", str(tmp_path / "digit.png"), "--layer", "features.3",
                 "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "features.3" in out and (tmp_path / "out" / "digit-gradcam.png").is_file()


def test_gradcam_keeps_no_activation_alive():
    """The map's layer output must be freed when gradcam returns: kept from its own hook, it held
    the whole autograd graph in a cycle (~300 MB per call for a ResNeXt-29, never collected)."""
    import gc
    import weakref

    model = create_model("resnet20_cifar", num_classes=5)
    layer = default_target_layer(model.eval(), torch.randn(1, 3, 32, 32))
    seen = []
    model.get_submodule(layer).register_forward_hook(lambda m, i, out: seen.append(weakref.ref(out)))
    gradcam(model, torch.randn(1, 3, 32, 32), target_layer=layer)
    gc.collect()
    assert seen and all(ref() is None for ref in seen)
