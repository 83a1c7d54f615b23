"""The airbench-class parts (issue 18), each checked against its definition: weight averaging,
patch whitening, flip-and-translate TTA, alternating flips and reflect translation, the triangular
schedule, sgd_scaled's units, the CPU precision probe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data.augment import alternating_flips, crop_flip
from cnnzoo.engine.amp_probe import cached_choice, pick_fastest, probe_cpu_amp
from cnnzoo.engine.averaging import WeightAverage
from cnnzoo.engine.config import OptimConfig, ScheduleConfig
from cnnzoo.engine.optim import build_optimizer, scaled_sgd_settings
from cnnzoo.engine.schedulers import lr_curve
from cnnzoo.engine.tta import tta_logits
from cnnzoo.layers.whitening import image_patches, whiten_conv_


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


@pytest.mark.parametrize("lookahead", [False, True])
def test_weight_average_follows_its_formula(lookahead):
    model = nn.Linear(2, 1)
    _set(model, 1.0)
    avg = WeightAverage(model, every=2, base=0.9, power=1.0, total_steps=6, lookahead=lookahead)
    expected = 1.0
    for step in range(1, 7):
        _set(model, float(step * 10))  # what an optimiser step would have produced
        avg.after_step(model, step)
        if step % 2 == 0:
            d = 0.9 * (step / 6) ** 1.0
            expected = d * expected + (1 - d) * step * 10
        got = avg.average["weight"]
        assert torch.allclose(got, torch.full_like(got, expected))
        weight_now = model.weight.detach()
        if lookahead and step % 2 == 0:  # the weights jump to the average
            assert torch.allclose(weight_now, got)
        elif not lookahead:
            assert torch.allclose(weight_now, torch.full_like(weight_now, step * 10.0))
    if lookahead:  # at the last step the model holds the average
        assert torch.equal(model.weight.detach(), avg.average["weight"])


def _correlated_images(n: int = 64, size: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    x = x.cumsum(-1).cumsum(-2) / size  # neighbouring pixels strongly correlated
    return x + 0.5 * x[:, :1]  # and the channels too


def test_whitening_init_whitens_the_patches_of_a_batch():
    images = _correlated_images()
    conv = nn.Conv2d(3, 24, 2)
    used = whiten_conv_(conv, images, eps=1e-9)
    assert used == 12
    patches = image_patches(images, (2, 2)).double()
    moment = patches.T @ patches / len(patches)
    assert (moment - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5  # not white before
    out = patches @ conv.weight.detach().reshape(24, -1).double().T
    white = out.T @ out / len(out)
    assert torch.allclose(white[:12, :12], torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(conv.weight[12:], -conv.weight[:12]) and torch.equal(conv.bias, torch.zeros(24))


def test_whitening_a_narrower_conv_keeps_the_leading_directions():
    images = _correlated_images()
    wide, narrow = nn.Conv2d(3, 24, 2), nn.Conv2d(3, 6, 2)
    whiten_conv_(wide, images, eps=1e-9)
    assert whiten_conv_(narrow, images, eps=1e-9) == 3
    assert torch.allclose(narrow.weight[:3], wide.weight[:3], atol=1e-5)


def test_flip_translate_tta_averages_the_views_it_claims():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(45, 4)).eval()
    x = torch.randn(2, 3, 8, 8)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :8, :8], padded[..., 2:, 2:]
    views = [(x, 0.25), (x.flip(-1), 0.25), (up_left, 0.125), (up_left.flip(-1), 0.125),
             (down_right, 0.125), (down_right.flip(-1), 0.125)]
    with torch.no_grad():
        expected = sum(w * model(v).softmax(1) for v, w in views).log()
        got = tta_logits(model, x, "fliptranslate")
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(up_left[..., 1:, 1:], x[..., :7, :7])  # a shift, not a crop of something else


def test_alternating_flips_alternate_and_are_seeded():
    index = torch.arange(1000)
    first, second = alternating_flips(index, 0, seed=3), alternating_flips(index, 1, seed=3)
    assert torch.equal(first ^ second, torch.ones(1000, dtype=torch.bool))  # every image both ways in two epochs
    assert torch.equal(alternating_flips(index, 2, seed=3), first)
    assert 400 < int(first.sum()) < 600
    assert not torch.equal(alternating_flips(index, 0, seed=4), first)


def test_reflect_translation_and_given_flips():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (16, 3, 6, 6), dtype=torch.uint8)
    flips = torch.arange(16) % 2 == 0
    out = crop_flip(images, 0, True, gen, flips=flips)
    assert torch.equal(out[flips], images[flips].flip(-1)) and torch.equal(out[~flips], images[~flips])
    shifted = crop_flip(images, 2, False, gen, pad_mode="reflect")
    padded = F.pad(images.float(), (2,) * 4, mode="reflect").to(torch.uint8)
    windows = [padded[..., y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
    for i in range(16):
        assert any(torch.equal(shifted[i], w[i]) for w in windows)


def test_triangle_schedule_follows_its_formula():
    cfg = ScheduleConfig(name="triangle", epochs=1, pct_start=0.25, div_factor=5, min_lr=0.07)
    lrs = lr_curve(cfg, lr=1.0, steps_per_epoch=100)
    assert lrs[0] == pytest.approx(0.2) and lrs[25] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.2 + 0.8 * 10 / 25)
    assert lrs[60] == pytest.approx(1 + (0.07 - 1) * 35 / 75)
    assert lrs[99] == pytest.approx(1 + (0.07 - 1) * 74 / 75)


def test_sgd_scaled_converts_airbench_units_and_scales_norm_layers():
    lr, wd = scaled_sgd_settings(11.5, 0.0153, 0.85, 1024)
    assert lr == pytest.approx(11.5 / (1 + 1 / 0.15)) and lr * wd == pytest.approx(0.0153 / (1 + 1 / 0.15))
    assert scaled_sgd_settings(11.5, 0.0153, 0.85, 512)[0] == pytest.approx(lr / 2)  # per example
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, OptimConfig(name="sgd_scaled", lr=11.5, momentum=0.85, weight_decay=0.0153,
                                             norm_lr_scale=64), batch_size=1024)
    assert opt.defaults["nesterov"]
    conv_group, norm_group = opt.param_groups
    assert len(norm_group["params"]) == 2 and norm_group["lr"] == pytest.approx(64 * conv_group["lr"])
    assert norm_group["lr"] * norm_group["weight_decay"] == pytest.approx(conv_group["lr"] * conv_group["weight_decay"])


def test_probe_picks_the_faster_setting():
    clock = [0.0]

    def costs(seconds: float):
        def run() -> None:
            clock[0] += seconds
        return run

    timer = lambda: clock[0]  # a clock that only the candidates move
    assert pick_fastest({"fp32": costs(1.0), "bf16": costs(8.0)}, timer=timer)[0] == "fp32"
    name, times = pick_fastest({"fp32": costs(1.0), "bf16": costs(0.4)}, timer=timer)
    assert name == "bf16" and times == pytest.approx({"fp32": 1.0, "bf16": 0.4})


def test_probe_leaves_the_model_as_it_was_and_its_answer_is_cached(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name, _ = probe_cpu_amp(model, (2, 3, 8, 8), channels_last=True, repeats=1)
    assert name in ("fp32", "bf16")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    calls = []
    path = tmp_path / "probe.json"
    assert cached_choice(path, "k", lambda: calls.append(1) or "bf16") == ("bf16", False)
    assert cached_choice(path, "k", lambda: calls.append(1) or "fp32") == ("bf16", True)
    assert len(calls) == 1 and path.exists()
