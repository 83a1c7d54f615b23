"""The papers' training and test procedures, each checked against its definition: AlexNet's PCA
lighting noise, VGG/ResNet scale augmentation, VGG's initialisation, ResNet-110's constant
warm-up, dense (fully convolutional) evaluation, GoogLeNet's 144 crops; and the paper recipes."""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model
from cnnzoo.cli.train import build_config, register
from cnnzoo.data import BatchAugment, load_dataset
from cnnzoo.data.augment import pca_lighting, scale_boxes, scale_crop_flip
from cnnzoo.data.pca import cached_rgb_pca, rgb_covariance, rgb_pca
from cnnzoo.engine.config import (
    ConfigError,
    ScheduleConfig,
    find_recipe,
    load_recipe,
    shipped_recipes,
)
from cnnzoo.engine.schedulers import lr_curve, lr_factor_fn
from cnnzoo.engine.tta import crop144_views, dense_logits, tta_logits, whole_image_sizes
from cnnzoo.layers.head import FCHead
from cnnzoo.models.base import ZooModel

PAPER_RECIPES = sorted(name for name in shipped_recipes() if name.startswith("paper/"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- PCA lighting


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(seed), dtype=torch.float64))
    return q.float()


def test_rgb_covariance_is_the_pixel_covariance_in_unit_range():
    images = torch.randint(0, 256, (7, 3, 5, 6), generator=gen(1), dtype=torch.uint8)
    pixels = images.transpose(0, 1).reshape(3, -1).double() / 255
    expected = torch.cov(pixels, correction=0)
    assert torch.allclose(rgb_covariance(images, chunk=3), expected, atol=1e-12)
    values, vectors = rgb_pca(images)
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, expected.float(), atol=1e-6)
    assert values[0] >= values[1] >= values[2]


def test_pca_noise_lies_along_the_eigenvectors_with_the_stated_scale():
    # The shift added to an image is sum_i alpha_i lambda_i p_i with alpha_i ~ N(0, 0.1^2): its
    # covariance over many images has the eigenvectors p_i and the eigenvalues (0.1 lambda_i)^2.
    eigvals, eigvecs, std, n = torch.tensor([0.2, 0.05, 0.01]), random_rotation(3), 0.1, 20000
    images = torch.full((n, 3, 2, 2), 100.0)
    shifted = pca_lighting(images, eigvals, eigvecs, std, gen(4))
    shift = (shifted - images) / 255
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # one colour shift per image
    coefficients = shift[:, :, 0, 0] @ eigvecs  # alpha_i lambda_i along each eigenvector
    alphas = coefficients / eigvals
    assert alphas.mean(0).abs().max() < 0.005
    assert torch.allclose(alphas.std(0), torch.full((3,), std), rtol=0.03)
    assert torch.corrcoef(alphas.T).sub(torch.eye(3)).abs().max() < 0.03  # drawn independently
    values, vectors = torch.linalg.eigh(torch.cov(shift[:, :, 0, 0].T.double()))
    assert torch.allclose(values.flip(0).float(), (std * eigvals) ** 2, rtol=0.06)
    assert (vectors.flip(1).float().T @ eigvecs).abs().diagonal().min() > 0.999


def test_pca_is_cached_beside_the_dataset_and_keyed_by_its_fingerprint(tmp_path, monkeypatch):
    images = torch.randint(0, 256, (20, 3, 4, 4), generator=gen(5), dtype=torch.uint8)
    first = cached_rgb_pca(images, fingerprint="abc", options={"split_seed": 0}, cache_dir=tmp_path)
    (path,) = tmp_path.glob("rgb-pca-*.pt")

    def refuse(_images):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr("cnnzoo.data.pca.rgb_pca", refuse)
    again = cached_rgb_pca(images, fingerprint="abc", options={"split_seed": 0}, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(AssertionError, match="recomputed"):  # another source or split: another key
        cached_rgb_pca(images, fingerprint="abd", options={"split_seed": 0}, cache_dir=tmp_path)
    assert path.is_file()


# ---------------------------------------------------------------------------- scale augmentation


def test_scale_jitter_rescales_each_image_to_a_shorter_side_in_the_stated_range():
    images = torch.randint(0, 256, (64, 3, 40, 40), generator=gen(6), dtype=torch.uint8)
    out = scale_crop_flip(images, (24, 40), (16, 16), gen(7))
    side, y, x, flip = scale_boxes(64, 40, 40, (24, 40), (16, 16), gen(7))  # the same draws
    assert out.shape == (64, 3, 16, 16) and side.min() >= 24 and side.max() <= 40
    assert side.min() <= 26 and side.max() >= 38 and len(side.unique()) > 10  # the whole range is used
    for i in range(64):
        s, top, left = int(side[i]), int(y[i]), int(x[i])
        assert 0 <= top <= s - 16 and 0 <= left <= s - 16
        resized = F.interpolate(images[i:i + 1].float(), size=(s, s), mode="bilinear", align_corners=False)
        view = resized[..., top:top + 16, left:left + 16]
        view = view.flip(-1) if flip[i] else view
        assert torch.allclose(out[i:i + 1], view, atol=5e-3), i  # 0..255 units: float32 coordinates


def test_single_scale_at_the_stored_size_is_an_exact_crop():
    images = torch.randint(0, 256, (8, 3, 20, 20), generator=gen(8), dtype=torch.uint8)
    out = scale_crop_flip(images, (20, 20), (12, 12), gen(9), hflip=False)
    _, y, x, _ = scale_boxes(8, 20, 20, (20, 20), (12, 12), gen(9), hflip=False)
    for i in range(8):
        top, left = int(y[i]), int(x[i])
        assert torch.equal(out[i].round(), images[i, :, top:top + 12, left:left + 12].float())  # float32 rounding only


def test_training_with_scale_jitter_and_pca_lighting_keeps_images_at_s_max(tmp_path):
    bundle = load_dataset("digits", image_size=24, train_size=32, cache_dir=tmp_path)
    assert bundle.train.images.shape[-2:] == (32, 32) and bundle.val.images.shape[-2:] == (24, 24)
    assert bundle.input_size == (1, 24, 24) and bundle.large_images
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "digits", "--image-size", "24", "--set", "data.cache_dir=" + str(tmp_path),
                              "--set", "regularization.scale_jitter=[24,32]", "--set", "regularization.pca_lighting=0.1"])
    cfg, _ = build_config(args)
    from cnnzoo.tasks.classification import ClassificationTask

    data = ClassificationTask().build_data(cfg, torch.device("cpu"))
    augment = data.train.augment
    assert augment.scale_jitter == (24, 32) and augment.crop_size == (24, 24) and augment.lighting is not None
    assert data.train.images.shape[-1] == 32
    images, _ = next(iter(data.train))
    assert images.shape[1:] == (1, 24, 24)
    assert list(tmp_path.glob("rgb-pca-*.pt"))  # computed once, cached beside the dataset


def test_scale_jitter_smaller_than_the_crop_is_refused():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(ConfigError, match="scale_jitter"):
        build_config(parser.parse_args(["train", "--set", "regularization.scale_jitter=[40,30]"]))
    with pytest.raises(ConfigError, match="scale_jitter"):
        build_config(parser.parse_args(["train", "--set", "regularization.scale_jitter=[32]",
                                        "--set", "regularization.random_resized_crop=true"]))
    augment = BatchAugment(mean=(0.5,), std=(0.5,), scale_jitter=(24, 32), crop_size=(16, 16))
    assert "scale_jitter" in repr(augment)


# ---------------------------------------------------------------------------- initialisation, warm-up


def test_vgg_paper_init_has_the_stated_std_and_glorot_its_bound():
    model = create_model("vgg11_cifar", init="paper")
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() > 1 and p.numel() > 20000:
            assert p.std().item() == pytest.approx(0.01, rel=0.03), name
            assert p.mean().abs().item() < 5e-4, name
        elif name.endswith("bias") and "conv" in name:
            assert torch.count_nonzero(p) == 0, name
    model = create_model("vgg11_cifar", init="glorot")
    conv = model.features.conv3_1.conv
    fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= bound and conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    with pytest.raises(ValueError, match="init"):
        create_model("vgg11_cifar", init="xavier")


def test_constant_warmup_is_exactly_0_01_then_0_1_at_iteration_400():
    cfg, _ = build_config(_train_args("--config", "paper/resnet110_cifar10"))
    lrs = lr_curve(cfg.schedule, lr=cfg.optim.lr, steps_per_epoch=352, steps=402)
    assert all(lr == pytest.approx(0.01, rel=1e-12) for lr in lrs[:400])
    assert lrs[400] == lrs[401] == pytest.approx(0.1, rel=1e-12)
    factor = lr_factor_fn(cfg.schedule, 352, cfg.optim.lr)  # the same curve, further on
    assert [factor(t) for t in (399, 400, 31999, 32000)] == pytest.approx([0.1, 1.0, 1.0, 0.1], rel=1e-12)
    linear = lr_curve(ScheduleConfig(name="constant", unit="step", warmup=4, epochs=1), lr=0.1, steps_per_epoch=8)
    assert linear[:5] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def _train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


# ---------------------------------------------------------------------------- dense and multi-crop tests


class ToyFCNet(ZooModel):
    """conv 3x3 (no padding) -> FCHead pooling to 4x4: trained at 6x6, where the pool is an identity."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = FCHead(4, 5, pool_size=4, hidden=(6,), drop_rate=0.0)
        self.num_classes, self.in_chans, self.num_features = 5, 3, 6

    def forward_features(self, x):
        return self.features(x)


def test_dense_evaluation_equals_the_sliding_window_average():
    model = ToyFCNet().eval()
    x = torch.randn(2, 3, 9, 11, generator=gen(10))
    windows = [model(x[..., i:i + 6, j:j + 6]) for i in range(9 - 5) for j in range(11 - 5)]
    with torch.no_grad():
        assert torch.allclose(dense_logits(model, x), torch.stack(windows).mean(0), atol=1e-5)
        assert not torch.allclose(dense_logits(model, x), model(x), atol=1e-3)  # not the adaptive pool's average
        gap = create_model("resnet20_cifar", num_classes=5).eval()  # a global-pool head: the model itself
        y = torch.randn(1, 3, 40, 40, generator=gen(11))
        assert torch.equal(dense_logits(gap, y), gap(y))


def test_dense_tta_averages_softmax_over_sizes_and_flips():
    model = ToyFCNet().eval()
    x = torch.randn(2, 3, 10, 10, generator=gen(12))
    with torch.no_grad():
        got = tta_logits(model, x, "dense", sizes=(8, 12))
        probs = [dense_logits(model, F.interpolate(v, size=(s, s), mode="bilinear", align_corners=False,
                                                   antialias=s < 10)).softmax(1)
                 for s in (8, 12) for v in (x, x.flip(-1))]
    assert torch.allclose(got.exp(), torch.stack(probs).mean(0), atol=1e-5)


@pytest.mark.parametrize("hw", [(30, 40), (40, 30)])  # landscape: left/centre/right; portrait: top/centre/bottom
def test_googlenet_144_crops_are_144_distinct_views(hw):
    # The paper's geometry divided by 8 (sizes 256..352 -> 32..44, crop 224 -> 28) on a 4:3 image.
    x = torch.randn(1, 3, *hw, generator=gen(13))
    views = list(crop144_views(x, (32, 36, 40, 44), 28))
    assert len(views) == 144 and all(v.shape == (1, 3, 28, 28) for v in views)
    flat = torch.stack([v.flatten() for v in views])
    distances = torch.cdist(flat, flat) + torch.eye(144) * 1e9
    assert distances.min() > 1e-3  # no two views are the same


def test_whole_image_sizes_scale_the_papers_to_the_input():
    assert whole_image_sizes("dense", 224) == ((224, 256, 384, 480, 640), 224)
    assert whole_image_sizes("crop144", 224) == ((256, 288, 320, 352), 224)
    assert whole_image_sizes("dense", 32) == ((32, 37, 55, 69, 91), 32)
    assert whole_image_sizes("crop144", 32, (40, 44), 28) == ((40, 44), 28)


def test_eval_with_the_papers_tests_on_a_trained_run(tmp_path):
    from cnnzoo.engine.evaluate import evaluate_checkpoint
    from cnnzoo.engine.trainer import train

    cfg, _ = build_config(_train_args("--epochs", "1", "--max-steps", "3", "--out", str(tmp_path / "run"),
                                      "--progress", "off", "--no-report", "--tta", "dense",
                                      "--set", "eval.sizes=[32,36]"))
    result = train(cfg)
    tested = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["test"]
    dense = evaluate_checkpoint(result.run_dir / "best.pt")  # the run's own eval settings: dense at 32, 36
    assert dense.report.tta == "dense" and dense.metrics["acc"] == tested["acc"]
    assert dense.metrics["loss"] == pytest.approx(tested["loss"], rel=1e-6)
    plain = evaluate_checkpoint(result.run_dir / "best.pt", tta="none")
    assert dense.metrics["loss"] != plain.metrics["loss"]


def test_the_evaluator_runs_the_144_crops_and_the_combined_test():
    from cnnzoo.tasks.classification import ClassificationEvaluator

    model = ToyFCNet().eval()
    images, labels = torch.randn(3, 3, 8, 8, generator=gen(14)), torch.tensor([0, 1, 2])
    for tta, sizes in (("crop144", (8, 9, 10, 11)), ("dense_multicrop", (8, 10))):
        evaluator = ClassificationEvaluator([str(i) for i in range(5)], tta=tta, crop_size=6, sizes=sizes)
        with torch.no_grad():
            evaluator.update(model, (images, labels))
            if tta == "crop144":
                views = list(crop144_views(images, sizes, 6))
                expected = torch.stack([model(v).softmax(1) for v in views]).mean(0)
                assert torch.allclose(evaluator.logits(model, images).exp(), expected, atol=1e-6)
        assert evaluator.count == 3 and 0 <= evaluator.compute()["acc"] <= 1


# ---------------------------------------------------------------------------- the paper recipes


def test_paper_recipes_are_found_by_name_and_listed():
    assert len(PAPER_RECIPES) >= 20
    path = find_recipe("paper/resnet20_cifar10")
    assert path.is_file() and path.parent.name == "paper"
    with pytest.raises(ConfigError, match="paper/resnet20_cifar10"):
        find_recipe("paper/resnet20_cifar1")


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_every_paper_recipe_validates_and_builds_its_model(name):
    text = find_recipe(name).read_text()
    comment = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"arXiv \d{4}\.\d{4,5}|NeurIPS 2012|Proc\. IEEE", comment), "cite the paper"
    assert re.search(r"Paper: .*?(\d+\.\d+ ?(%|dB)|unverified)", comment), "state the published figure"
    cfg, _ = build_config(_train_args("--config", name))
    assert load_recipe(find_recipe(name))["model"]["name"] == cfg.model.name
    classes = 100 if "cifar100" in name else 1000 if "imagenet" in name else 10
    with torch.device("meta"):  # the architecture and its options, without allocating 100M+ weights
        options = dict(cfg.model.kwargs)
        if cfg.task == "classify":
            options["num_classes"] = classes
        model = create_model(cfg.model.name, **options)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_the_recipes_use_the_procedures_they_name():
    recipes = {name: load_recipe(find_recipe(name)) for name in PAPER_RECIPES}
    assert recipes["paper/vgg16_imagenet"]["regularization"]["scale_jitter"] == [256, 512]
    assert recipes["paper/vgg16_imagenet"]["eval"]["tta"] == "dense_multicrop"
    assert recipes["paper/alexnet_imagenet"]["regularization"]["pca_lighting"] == 0.1
    assert recipes["paper/googlenet_imagenet"]["schedule"] == {"name": "step", "step_size": 8, "gamma": 0.96,
                                                               "epochs": 250}
    assert recipes["paper/googlenet_imagenet"]["eval"]["tta"] == "crop144"
