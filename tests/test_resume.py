"""Exact resume: a run stopped in the middle of an epoch and resumed ends bit-identical to a straight run."""

from __future__ import annotations

import argparse
import signal

import pytest
import torch
from PIL import Image

from cnnzoo.cli.main import terminal_logging
from cnnzoo.cli.train import build_config, register
from cnnzoo.engine.config import config_from_dict
from cnnzoo.engine.progress import Progress
from cnnzoo.engine.trainer import ResumeError, load_resume, train

RAW = {
    "regularization": {"drop_rate": 0.3, "cutout": 8, "label_smoothing": 0.1},  # dropout + augmentation RNG
    "schedule": {"epochs": 3, "name": "cosine", "warmup": 1},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
    "runtime": {"seed": 7},
}
STOP_AT = 30  # optimiser step 30 = batch 9 of epoch 2 (21 batches per epoch)


class SignalAt(Progress):
    """Sends this process a real SIGINT after the n-th training step (the trainer's handler catches it)."""

    def __init__(self, step: int):
        super().__init__("off", log=lambda line: None)
        self.step, self.count = step, 0

    def loop(self, total, desc, *, initial=0):
        tracker = super().loop(total, desc, initial=initial)
        if desc.startswith("epoch"):
            update = tracker.update

            def counting(images, metrics=None):
                update(images, metrics)
                self.count += 1
                if self.count == self.step:
                    signal.raise_signal(signal.SIGINT)

            tracker.update = counting
        return tracker


def config(out, **extra):
    raw = {k: dict(v) for k, v in RAW.items()}
    raw["runtime"] = {**raw["runtime"], "out": str(out), **extra}
    return config_from_dict(raw)


def parse(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    quiet = Progress("off", log=lambda line: None)
    straight = train(config(base / "straight"), progress=quiet)
    stopped = train(config(base / "stopped", save_every_steps=7), progress=SignalAt(STOP_AT))
    interrupted_ckpt = torch.load(base / "stopped" / "last.pt", weights_only=True, map_location="cpu")
    resumed = train(config(base / "stopped", save_every_steps=7), resume=load_resume(base / "stopped"),
                    progress=quiet)
    return straight, stopped, interrupted_ckpt, resumed


def test_stop_happens_mid_epoch_with_a_checkpoint(runs):
    _, stopped, ckpt, _ = runs
    assert stopped.interrupted == signal.SIGINT and stopped.exit_code == 130
    assert ckpt["step"] == STOP_AT
    assert (ckpt["state"]["epoch"], ckpt["state"]["batch"]) == (1, 9)
    assert {k: ckpt["loader"][k] for k in ("epoch", "position", "seed")} == {"epoch": 1, "position": 9, "seed": 7}
    assert ckpt["state"]["running"]["count"] > 0  # the partial epoch's running metrics travel too


def test_resumed_weights_are_bit_identical(runs):
    straight, _, _, resumed = runs
    a = torch.load(straight.run_dir / "last.pt", weights_only=True, map_location="cpu")
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True, map_location="cpu")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert a["scheduler"] == b["scheduler"]


def test_resumed_metrics_and_best_are_identical(runs):
    straight, _, _, resumed = runs
    drop = {"time", "images_per_s"}  # wall-clock columns
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in straight.state.history]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in resumed.state.history]
    assert rows_a == rows_b and len(rows_a) == 3
    assert straight.state.best == resumed.state.best
    assert straight.test == resumed.test
    assert (resumed.run_dir / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs, no duplicates


def _folder_dataset(root):
    for split in ("train", "test"):
        for c, cls in enumerate(("a", "b", "c")):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("L", (32, 32), color=40 * c + i).save(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("flags, names", [
    (["--model", "lenet5_relu"], ["model.name: 'lenet5' in the checkpoint, 'lenet5_relu' now"]),
    (["--val-fraction", "0.2"], ["data.val_fraction"]),
    (["--seed", "3"], ["runtime.seed"]),
    (["--data", "FOLDER", "--workers", "0"], ["number of classes: 10 in the checkpoint, 3 in this data", "dataset:"]),
])
def test_resume_refuses_another_model_or_data(runs, tmp_path, flags, names):
    _, _, _, resumed = runs
    flags = [str(_folder_dataset(tmp_path / "imgs")) if f == "FOLDER" else f for f in flags]
    before = (resumed.run_dir / "last.pt").read_bytes()
    cfg, resume = build_config(parse("--resume", str(resumed.run_dir), *flags))
    with pytest.raises(ResumeError) as info:
        train(cfg, resume=resume, progress=Progress("off", log=lambda line: None))
    for name in names:
        assert name in str(info.value)
    assert (resumed.run_dir / "last.pt").read_bytes() == before


def test_resume_falls_back_when_last_is_damaged(runs, tmp_path, capsys):
    _, _, _, resumed = runs
    run = tmp_path / "copy"
    run.mkdir()
    for f in resumed.run_dir.glob("*.pt"):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])  # truncated, as if the disk filled
    with terminal_logging():  # the CLI's way of showing the library's warnings
        resume = load_resume(run)
    assert resume.path.name != "last.pt"
    assert "truncated, corrupt or not a PyTorch checkpoint" in capsys.readouterr().err
