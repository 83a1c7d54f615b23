"""`cnnzoo train` as a user runs it, and every kind of bad input: one line, exit code 2, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnzoo.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def test_train_subprocess_off_a_terminal(tmp_path):
    """Off a terminal (pipes) the progress is plain lines on stderr; the results (banner, epoch table,
    test accuracy) are on stdout (issue 16)."""
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--epochs", "3", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=180, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb", "COLUMNS": ""})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "run directory: " in text and "model: lenet5 (LeCun et al. 1998)" in text and "parameters: 61,706" in text
    assert re.search(r"^epoch 3/3 \| train loss [\d.]+ acc [\d.]+% \| val loss", text, re.M)
    progress = out.stderr.splitlines()  # at least one line per epoch, with the epoch's and the run's ETA
    for epoch in (1, 2, 3):
        assert any(re.match(rf"epoch {epoch}/3 \d+/\d+ loss .* img/s eta \d+:\d\d", line) for line in progress)
    assert "epoch 1/3 |" not in out.stderr and "test (" not in out.stderr
    match = re.search(r"^test \(best\.pt, epoch \d, chosen on val_acc [\d.]+%\): loss [\d.]+, acc ([\d.]+)%",
                      text, re.M)
    assert match and float(match.group(1)) > 80
    assert "\r" not in text + out.stderr  # no bar redraws in a log file
    assert (tmp_path / "run" / "best.pt").is_file()


def test_progress_bars_forced_off_a_terminal_do_not_crash(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--progress", "bar", "--out", str(tmp_path / "r")]) == 0
    assert "test (best.pt" in capsys.readouterr().out


def _folder(root: Path, layout: dict[str, int]) -> Path:
    """layout: 'train/a' -> number of images (0 makes an empty class folder)."""
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (16, 16), color=(i * 30, 10, 200)).save(root / sub / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--progress", "off"]) == 0
    return out


BAD_INPUTS = {
    "missing dataset path": (["--data", "/no/such/folder"], "dataset path /no/such/folder does not exist"),
    "unknown dataset name": (["--data", "cifar11"], "unknown dataset 'cifar11': did you mean cifar10"),
    "unknown model": (["--model", "resnet21_cifar"], "unknown model 'resnet21_cifar'; did you mean"),
    "option the model lacks": (["--drop-path-rate", "0.1"], "--drop-path-rate: model 'lenet5'"),  # issue 16: flags
    "empty class folder": (["--data", "EMPTY", "--workers", "0"], "class folder EMPTY/train/b has no images"),
    "train/val class mismatch": (["--data", "MISMATCH", "--workers", "0"],
                                 "train/val class mismatch in MISMATCH: val lacks ['b']"),
    "resume another architecture": (["--resume", "RUN", "--model", "resnet20_cifar"],
                                    "cannot resume RUN/last.pt: --model: 'lenet5' in the checkpoint, "
                                    "'resnet20_cifar' now"),
    "init from another architecture": (["--model", "resnet20_cifar", "--init-from", "RUN/last.pt"],
                                       "--init-from: no tensor of RUN/last.pt fits this model "
                                       "(it is a checkpoint of 'lenet5')"),
    "resume nothing": (["--resume", "NOWHERE"], "run directory NOWHERE does not exist"),
    "out holds a run": (["--out", "RUN"], "RUN already holds a run; continue it with `cnnzoo train --resume RUN`"),
    "unknown key": (["--set", "data.batchsize=3"], "unknown key 'data.batchsize' (did you mean 'data.batch_size'?)"),
    "wrong type": (["--set", "optim.lr=fast"], "optim.lr: expected a number, got 'fast' (str)"),
    "10-crop larger than images": (["--tta", "tencrop", "--set", "eval.crop_size=40", "--epochs", "1"],
                                   "eval.crop_size: a 40px 10-crop does not fit in 32x32 images"),
    "mixup on denoising": (["--task", "denoise", "--mixup", "0.2"],
                           "--mixup: needs a classification"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case, lenet_run, tmp_path, capsys):
    argv, expected = BAD_INPUTS[case]
    places = {"RUN": str(lenet_run), "NOWHERE": str(tmp_path / "nowhere"),
              "EMPTY": str(_folder(tmp_path / "empty", {"train/a": 3, "train/b": 0})),
              "MISMATCH": str(_folder(tmp_path / "mm", {"train/a": 3, "train/b": 3, "val/a": 2, "val/c": 2}))}
    argv = [next((a.replace(k, v) for k, v in places.items() if k in a), a) for a in argv]
    for k, v in places.items():
        expected = expected.replace(k, v)
    before = {p: p.stat().st_mtime_ns for p in lenet_run.iterdir()}
    code = main(["train", "--out", str(tmp_path / "new"), "--progress", "off", *argv]
                if "--out" not in argv and "--resume" not in argv else ["train", "--progress", "off", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cnnzoo train: error: "), err
    assert expected in err, err
    assert "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in lenet_run.iterdir()} == before  # the existing run is untouched


def test_resume_cli_subprocess_refuses_other_model(lenet_run):
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--resume", str(lenet_run), "--model", "vgg11"],
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"cnnzoo train: error: cannot resume {lenet_run}/last.pt")


def test_print_config_shows_resolved_values(capsys):
    assert main(["train", "--config", "resnet20_cifar10", "--epochs", "2", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "name: resnet20_cifar" in text and "epochs: 2" in text and "milestones:\n  - 32000" in text


def test_checkpoint_resumed_by_the_cli_continues(lenet_run, tmp_path, capsys):
    run = tmp_path / "copy"
    run.mkdir()
    for f in lenet_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    assert main(["train", "--resume", str(run), "--epochs", "2", "--progress", "log"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {run}/last.pt: epoch 2, batch 0, step 21" in out
    assert "epoch 2/2" in out and "epoch 1/2" not in out
    assert torch.load(run / "last.pt", weights_only=True, map_location="cpu")["epoch"] == 2
