"""SIGINT / SIGTERM / SIGHUP sent to a running `cnnzoo train`: a checkpoint, the resume command, exit
130 / 143 / 129; during the final test, a stop within a batch and no partial test numbers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cnnzoo", "train", "--epochs", "300", "--out", str(out), "--progress", "log",
           "--set", "runtime.log_every=5", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 90) -> list[str]:
    """Lines printed until one matches `pattern` (the training loop is running by then)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    proc.kill()
    pytest.fail(f"no line matching {pattern!r} in:\n{''.join(lines)}")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_saves_prints_resume_command_and_exits(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = start(out)
    wait_for(proc, r"^epoch 1/300 \d+/\d+")  # a progress line from inside the first epoch
    proc.send_signal(sig)
    rc, text = finish(proc)
    assert rc == code, text
    assert f"stopped by {signal.Signals(sig).name}" in text
    assert f"cnnzoo train --resume {out}" in text
    assert "Traceback" not in text
    ckpt = torch.load(out / "last.pt", weights_only=True, map_location="cpu")
    assert ckpt["step"] >= 5 and ckpt["model_name"] == "lenet5"
    if sig == signal.SIGTERM:  # the printed command continues the run (here to a shortened end)
        done = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--resume", str(out), "--epochs",
                               str(ckpt["state"]["epoch"] + 1), "--progress", "log"],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        assert f"resuming from {out / 'last.pt'}" in done.stdout
        assert re.search(r"test \(best\.pt, epoch \d+, chosen on val_acc", done.stdout)


def test_second_ctrl_c_exits_at_once_leaving_loadable_checkpoints(tmp_path):
    out = tmp_path / "run"
    proc = start(out, "--save-every-steps", "1")  # saving all the time: the second signal lands near a save
    wait_for(proc, r"^epoch 1/300 \d+/\d+")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    rc, text = finish(proc)
    assert rc == 130, text
    assert "Traceback" not in text
    for name in ("last.pt", "last.prev.pt"):
        if (out / name).exists():
            torch.load(out / name, weights_only=True, map_location="cpu")
    assert not list(out.glob(".*.tmp-*"))  # no half-written temporary left behind


def test_a_stop_during_the_final_test_exits_with_the_signal(tmp_path):
    out = tmp_path / "run"
    # One epoch, then a deliberately slow test (batch 1, twelve 4x-upscaled views per image).
    proc = start(out, "--epochs", "1", "--set", "data.eval_batch_size=1", "--set", "eval.tta=multiscale",
                 "--set", "eval.scales=[4,4,4,4,4,4,4,4,4,4,4,4]")
    wait_for(proc, r"^test \d+/\d+")
    proc.send_signal(signal.SIGTERM)
    rc, text = finish(proc)
    assert rc == 143, text
    assert "stopped by SIGTERM during the final test" in text and f"cnnzoo eval {out / 'best.pt'}" in text
    assert not (out / "test_metrics.json").exists() and "Traceback" not in text


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.slow  # starts decoding all of CIFAR-10 (JPEG)
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_while_decoding_stops_within_seconds_and_says_so_once(tmp_path, shared_dir, sig, code):
    # Decoding CIFAR-10 (JPEG)'s 60,000 images takes tens of seconds here: stop it in the middle.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", "train", "--data",
                             str(shared_dir / "data" / "cifar10-jpg.tar.gz"), "--model", "resnet20_cifar",
                             "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 90
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # until the decoding workers run
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(sig)
    rc, text = finish(proc)
    assert rc == code, text
    assert time.monotonic() - sent < 20, "the decode was not cut short"
    assert text.count(signal.Signals(sig).name) == 1 and "before training started" in text, text
    assert "Traceback" not in text and not list(tmp_path.glob("cache/*.pt"))
