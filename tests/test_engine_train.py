"""A real (short) training run on the digits, and the pieces of the training step."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnzoo.engine import runtime as runtime_module
from cnnzoo.engine.task import _TASKS as task_registry
from cnnzoo.engine.config import Config, OptimConfig, config_from_dict
from cnnzoo.engine.optim import RMSpropTF, build_optimizer, param_groups
from cnnzoo.engine.progress import Progress
from cnnzoo.engine.trainer import train
from cnnzoo.engine.weights_init import load_initial_weights
from cnnzoo.models.base import AuxLogits
from cnnzoo.registry import create_model
from cnnzoo.tasks.classification import ClassificationTask

QUIET = Progress("off", log=lambda line: None)


class SpyTask(ClassificationTask):
    """Records every evaluation: which split, and how many training steps had been taken.
    It stands in for the classification task in the task registry while the run trains."""

    calls: list = []
    steps = 0
    current_split = None

    def build_data(self, cfg, device):
        data = super().build_data(cfg, device)
        data.val, data.test = _Tagged(data.val, "val"), _Tagged(data.test, "test")
        return data

    def loss_fn(self, cfg):
        inner = super().loss_fn(cfg)

        def loss(model, batch):
            SpyTask.steps += 1
            return inner(model, batch)

        return loss

    def evaluator(self, cfg, meta, *, final):
        return _SpyEvaluator(super().evaluator(cfg, meta, final=final), "evaluate_test" if final else "evaluate")


class _Tagged:
    """A loader that says which split it is when iterated."""

    def __init__(self, loader, split):
        self.loader, self.split = loader, split

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        SpyTask.current_split = self.split
        return iter(self.loader)


class _SpyEvaluator:
    def __init__(self, inner, kind):
        self.inner, self.kind = inner, kind

    def update(self, model, batch):
        self.inner.update(model, batch)

    def compute(self):
        SpyTask.calls.append((self.kind, SpyTask.current_split, SpyTask.steps))
        return self.inner.compute()

    def report(self):
        return self.inner.report()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    SpyTask.calls, SpyTask.steps = [], 0
    cfg = config_from_dict({"schedule": {"epochs": 5}, "runtime": {"out": str(out), "seed": 1}})
    real = task_registry["classify"]
    task_registry["classify"] = SpyTask
    try:
        result = train(cfg, progress=QUIET)
    finally:
        task_registry["classify"] = real
    return cfg, result, list(SpyTask.calls)


def test_short_digits_run_learns(run):
    _, result, _ = run
    assert result.test["acc"] > 0.90
    assert result.state.epoch == 5 and result.state.step == 5 * 21


def test_validation_selects_and_test_is_seen_once_at_the_end(run):
    _, result, calls = run
    val_calls = [c for c in calls if c[1] == "val"]
    test_calls = [c for c in calls if c[1] == "test"]
    assert [c[0] for c in val_calls] == ["evaluate"] * 5  # once per epoch, never with TTA
    assert test_calls == [("evaluate_test", "test", 5 * 21)]  # once, after the last step
    assert calls[-1] == test_calls[0]
    # best.pt is the epoch with the best validation accuracy (ties: lower validation loss)
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    best = max(rows, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"])))
    report = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert report["checkpoint"] == "best.pt" and report["selected_by"] == "val_acc"
    assert report["epoch"] == int(best["epoch"]) == result.state.best["epoch"]
    # and the reported test accuracy is that of best.pt's weights, not of the final ones
    ckpt = torch.load(result.run_dir / "best.pt", weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == report["epoch"]
    model = create_model("lenet5", num_classes=10, in_chans=1)
    model.load_state_dict(ckpt["model"])
    model.eval()
    from cnnzoo.data import load_dataset, normalize

    bundle = load_dataset("digits")
    with torch.no_grad():
        logits = model(normalize(bundle.test.images, ckpt["preprocessing"]["mean"], ckpt["preprocessing"]["std"]))
    acc = (logits.argmax(1) == bundle.test.labels).float().mean().item()
    assert acc == pytest.approx(report["test"]["acc"], abs=1e-6)


def test_run_directory_contents(run):
    cfg, result, _ = run
    d = result.run_dir
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt", "test_metrics.json"} <= {p.name for p in d.iterdir()}
    saved = config_from_dict(yaml.safe_load((d / "config.yaml").read_text()))
    # amp "auto" on a CPU with bf16 hardware is stored as what the probe chose (engine.amp_probe)
    assert saved.runtime.amp == cfg.runtime.amp or (cfg.runtime.amp == "auto" and saved.runtime.amp in ("off", "bf16"))
    assert dataclasses.replace(saved, runtime=dataclasses.replace(saved.runtime, amp=cfg.runtime.amp)) == cfg
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    ckpt = torch.load(d / "last.pt", weights_only=True, map_location="cpu")  # plain data only
    for key in ("model", "optimizer", "scheduler", "scaler", "loader", "rng", "config", "epoch", "step",
                "model_name", "num_classes", "in_chans", "fingerprint", "classes", "preprocessing", "task"):
        assert key in ckpt, key
    assert (ckpt["model_name"], ckpt["num_classes"], ckpt["in_chans"], ckpt["task"]) == ("lenet5", 10, 1, "classify")
    assert ckpt["preprocessing"]["input_size"] == [1, 32, 32]
    assert ckpt["state"]["best"]["metric"] == "val_acc"


def test_init_from_keeps_mismatched_classifier_fresh(run):
    _, result, _ = run
    model = create_model("lenet5", num_classes=4, in_chans=1)
    fresh_fc = model.fc.weight.clone()
    report = load_initial_weights(model, result.run_dir / "best.pt")
    trained = torch.load(result.run_dir / "best.pt", weights_only=True, map_location="cpu")["model"]
    assert torch.equal(model.features[0].weight, trained["features.0.weight"])
    assert torch.equal(model.fc.weight, fresh_fc)
    assert "kept fresh: fc.weight, fc.bias" in report


def test_frozen_backbone_trains_only_the_classifier(tmp_path):
    # freezing needs weights to freeze (model.pretrained or model.init_from): a seeded fresh model's
    runtime_module.seed_everything(0)
    start = create_model("resnet20_cifar", num_classes=10, in_chans=1).state_dict()
    torch.save(start, tmp_path / "start.pt")
    cfg = config_from_dict({"model": {"name": "resnet20_cifar", "freeze_backbone": True,
                                      "init_from": str(tmp_path / "start.pt")},
                            "schedule": {"epochs": 1, "max_steps": 3},
                            "runtime": {"out": str(tmp_path / "r")}, "data": {"batch_size": 32}})
    result = train(cfg, progress=QUIET)
    end = torch.load(result.run_dir / "last.pt", weights_only=True, map_location="cpu")["model"]
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}  # BN running statistics included


def test_aux_logits_loss_value():
    w = torch.randn(3, 4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])

    class Aux(nn.Module):
        def forward(self, inp):
            return AuxLogits(inp @ w, (inp @ w * 2, inp @ w - 1), 0.3)

    loss_fn = ClassificationTask().loss_fn(config_from_dict({"regularization": {"label_smoothing": 0.1}}))
    loss, _ = loss_fn(Aux(), (x, y))
    ce = lambda z: F.cross_entropy(z, y, label_smoothing=0.1)  # noqa: E731
    expected = ce(x @ w) + 0.3 * (ce(x @ w * 2) + ce(x @ w - 1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_targets_accuracy_uses_dominant_class():
    loss_fn = ClassificationTask().loss_fn(Config())
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    soft = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    _, metrics = loss_fn(lambda x: x, (logits, soft))
    assert metrics["acc"].item() == pytest.approx(0.5)


def test_no_weight_decay_on_norm_and_bias():
    model = create_model("resnet20_cifar", num_classes=10)
    groups = param_groups(model, 1e-4, no_decay_norm_bias=True)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = build_optimizer(model, OptimConfig(name="sgd", nesterov=True, no_decay_norm_bias=True))
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[1]["weight_decay"] == 0.0


def test_rmsprop_tf_update_matches_tensorflow_formula():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3])]
    ms, mom, value = torch.ones(2), torch.zeros(2), p.detach().clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.045 * g / torch.sqrt(ms + 1.0)
        value = value - mom
    assert torch.allclose(p.detach(), value, atol=1e-7)


def test_unknown_model_option_names_the_config_key(tmp_path):
    from cnnzoo.engine.config import ConfigError

    cfg = config_from_dict({"regularization": {"drop_path_rate": 0.1}, "runtime": {"out": str(tmp_path / "x")}})
    with pytest.raises(ConfigError, match=r"regularization\.drop_path_rate: model 'lenet5': does not take option"):
        train(cfg, progress=QUIET)
    assert not (tmp_path / "x").exists()  # refused before a run directory was made


def test_default_config_is_used_without_arguments():
    assert Config().model.name == "lenet5" and Config().data.dataset == "digits"


def test_seed_makes_runs_repeatable(tmp_path):
    def final_weights(seed, name):
        cfg = config_from_dict({"schedule": {"epochs": 1}, "regularization": {"drop_rate": 0.2},
                                "runtime": {"seed": seed, "out": str(tmp_path / name)}})
        return train(cfg, progress=QUIET), torch.load(tmp_path / name / "last.pt", weights_only=True, map_location="cpu")["model"]

    (r1, a), (r2, b), (_, c) = final_weights(3, "a"), final_weights(3, "b"), final_weights(4, "c")
    assert all(torch.equal(a[k], b[k]) for k in a) and r1.test == r2.test
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tensorboard_events_when_available(tmp_path, monkeypatch):
    import sys
    import types

    scalars = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, log_dir, purge_step=None):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    cfg = config_from_dict({"schedule": {"epochs": 2}, "runtime": {"out": str(tmp_path / "r"), "log_every": 10}})
    train(cfg, progress=QUIET)
    tags = {tag for tag, _ in scalars}
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "step/loss"} <= tags
    assert ("val/acc", 42) in scalars  # per epoch, at the optimiser step reached
