"""The engine's contracts: one evaluation path (the final test of a run and `cnnzoo eval` give
identical numbers on the same checkpoint, for both tasks), and a task added from a test file alone."""

from __future__ import annotations

import json
import re

import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.data import load_dataset
from cnnzoo.engine import DataMeta, Task, TaskData, get_task, register_task, task_names
from cnnzoo.engine.config import config_from_dict
from cnnzoo.engine.evaluate import evaluate_checkpoint
from cnnzoo.engine.progress import Progress
from cnnzoo.engine.trainer import train
from cnnzoo.registry import create_model

QUIET = Progress("off", log=lambda line: None)


def test_final_test_and_eval_agree_exactly_for_classification(tmp_path, capsys):
    cfg = config_from_dict({"schedule": {"epochs": 2}, "eval": {"tta": "hflip"},
                            "runtime": {"out": str(tmp_path / "run"), "tensorboard": False}})
    result = train(cfg, progress=QUIET)
    evaluation = evaluate_checkpoint(result.run_dir / "best.pt", progress=QUIET)
    assert evaluation.metrics == result.test  # same TTA, batches, precision: bit-identical floats
    assert evaluation.report.tta == "hflip"
    assert main(["eval", str(result.run_dir / "best.pt"), "--out", str(tmp_path / "ev")]) == 0
    printed = re.search(r"top-1 accuracy ([\d.]+)%", capsys.readouterr().out).group(1)
    assert printed == f"{100 * result.test['acc']:.2f}"
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["top1"] == result.test["acc"]


def _write_images(folder, count, size, seed):
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        image = torch.rand(*size, generator=gen).mul(255).to(torch.uint8)
        Image.fromarray(image.numpy()).save(folder / f"{i:02d}.png")


def test_final_test_and_eval_agree_exactly_for_denoising(tmp_path):
    _write_images(tmp_path / "data" / "train", 5, (48, 48), seed=0)
    _write_images(tmp_path / "data" / "set1", 2, (40, 44), seed=1)
    _write_images(tmp_path / "data" / "set2", 1, (36, 36), seed=2)
    cfg = config_from_dict({"task": "denoise", "model": {"name": "dncnn", "kwargs": {"depth": 3}},
                            "data": {"dataset": str(tmp_path / "data"), "batch_size": 8, "val_fraction": 0.2},
                            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
                            "schedule": {"epochs": 1}, "runtime": {"out": str(tmp_path / "run"), "tensorboard": False}})
    result = train(cfg, progress=QUIET)
    evaluation = evaluate_checkpoint(result.run_dir / "best.pt", progress=QUIET)
    assert evaluation.metrics == result.test
    assert {"set1_psnr", "set2_psnr", "psnr", "ssim"} <= set(result.test)
    assert [r.set_name for r in evaluation.report.sets] == ["set1", "set2"]


# ---------------------------------------------------------------------------- a toy task


class _Batches:
    """A minimal loader: fixed batches of (images, brightness), with the DeviceLoader protocol."""

    def __init__(self, images, batch_size):
        self.images, self.batch_size, self.position = images, batch_size, 0

    def __len__(self):
        return len(range(0, len(self.images), self.batch_size))

    def __iter__(self):
        for start in range(self.position * self.batch_size, len(self.images), self.batch_size):
            x = self.images[start:start + self.batch_size].float() / 255
            self.position += 1
            yield x, x.mean(dim=(1, 2, 3))
        self.position = 0

    def set_epoch(self, epoch):
        pass

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


class _MAE:
    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, model, batch):
        x, y = batch
        self.total += float((model(x)[:, 0] - y).abs().sum())
        self.count += len(y)

    def compute(self):
        return {"mae": self.total / max(self.count, 1)}

    def report(self):
        return self.compute()


class BrightnessTask(Task):
    """Regress each digit image's mean brightness: a task the package does not ship."""

    name = "toy_brightness"
    monitor = ("mae", "min")
    model_task = "classify"  # it trains the registry's classifiers with a one-output head
    default_model = "lenet5"

    def build_data(self, cfg, device):
        bundle = load_dataset("digits")
        meta = DataMeta(dataset="digits", fingerprint=bundle.fingerprint, in_chans=1, input_size=(1, 32, 32),
                        mean=(0.0,), std=(1.0,), sizes={"train": len(bundle.train), "val": len(bundle.val),
                                                        "test": len(bundle.test)}, details="brightness targets")
        return TaskData(_Batches(bundle.train.images, 64), _Batches(bundle.val.images, 256),
                        _Batches(bundle.test.images, 256), meta)

    def build_eval_data(self, cfg, meta, device, *, dataset=None, split="test"):
        bundle = load_dataset("digits")
        return _Batches(getattr(bundle, split).images, 256), "digits"

    def build_model(self, cfg, meta):
        return create_model(cfg.model.name, num_classes=1, in_chans=1)

    def loss_fn(self, cfg):
        def loss(model, batch):
            x, y = batch
            value = F.mse_loss(model(x)[:, 0], y)
            return value, {"loss": value.detach()}

        return loss

    def evaluator(self, cfg, meta, *, final):
        return _MAE()


def test_a_task_plugs_in_from_a_test_file_alone(tmp_path):
    register_task(BrightnessTask)
    assert "toy_brightness" in task_names() and isinstance(get_task("toy_brightness"), BrightnessTask)
    cfg = config_from_dict({"task": "toy_brightness", "optim": {"lr": 0.01}, "schedule": {"epochs": 2},
                            "runtime": {"out": str(tmp_path / "run"), "tensorboard": False}})
    result = train(cfg, progress=QUIET)
    assert result.state.epoch == 2 and set(result.test) == {"mae"}
    assert result.state.best["metric"] == "val_mae" and result.state.best["mode"] == "min"
    assert result.test["mae"] < 0.1  # mean brightness is about 0.3: it learned something
    assert evaluate_checkpoint(result.run_dir / "best.pt", progress=QUIET).metrics == result.test


def test_a_probed_precision_is_kept_by_eval_and_resume(tmp_path, monkeypatch):
    """On a CPU with bf16 hardware `amp: auto` probes; the run's checkpoints then name the choice,
    so `cnnzoo eval` repeats the final test in bf16 rather than falling back to fp32."""
    from cnnzoo.engine import amp_probe

    monkeypatch.setattr(amp_probe, "cpu_bf16_hardware", lambda: "avx512_bf16")
    monkeypatch.setattr(amp_probe, "probe_cpu_amp", lambda *a, **k: ("bf16", {}))
    cfg = config_from_dict({"schedule": {"epochs": 1}, "data": {"cache_dir": str(tmp_path / "cache")},
                            "runtime": {"out": str(tmp_path / "run"), "tensorboard": False, "amp": "auto"}})
    result = train(cfg, progress=QUIET)
    ckpt = torch.load(result.run_dir / "best.pt", weights_only=True)
    assert ckpt["config"]["runtime"]["amp"] == "bf16"
    assert evaluate_checkpoint(result.run_dir / "best.pt", progress=QUIET).metrics == result.test
    in_fp32 = evaluate_checkpoint(result.run_dir / "best.pt", amp="off", progress=QUIET).metrics
    assert in_fp32 != result.test and abs(in_fp32["acc"] - result.test["acc"]) < 0.05


def test_the_final_test_and_eval_run_the_folded_model():
    """BatchNorm folded into the convolutions (the fast inference path), same outputs within rounding."""
    from types import SimpleNamespace

    from cnnzoo.engine.evaluate import final_form
    from cnnzoo.engine.runtime import Runtime

    model = create_model("resnet20_cifar", num_classes=10).eval()
    runtime = Runtime(torch.device("cpu"), None, channels_last=True)
    folded = final_form(model, SimpleNamespace(input_size=(3, 32, 32)), runtime)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy: the original is kept
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert final_form(model, SimpleNamespace(input_size=(3, 32, 32)), runtime, fold_bn=False) is model
