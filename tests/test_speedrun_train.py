"""The speedrun pieces inside a real training run, and the CLI's threads, wait policy and decode progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli import main as cli_main
from cnnzoo.cli.main import main
from cnnzoo.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_SPEEDRUN = ["--config", "cifar10_speedrun", "--data", "digits", "--batch-size", "256", "--no-report",
                 "--progress", "log", "--set", "model.kwargs={widths: [8, 16, 16]}", "--set", "model.whiten_images=300",
                 "--set", "model.whiten_bias_epochs=1", "--set", "optim.lookahead_every=2"]


@pytest.mark.slow  # two short runs of the recipe: about 30 CPU-seconds here
def test_speedrun_recipe_trains_with_frozen_whitening_and_lookahead(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY_SPEEDRUN, "--epochs", "1", "--out", str(out)]) == 0
    first = load_checkpoint(out / "last.pt")
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    said = capsys.readouterr()
    said = said.out + said.err  # the banner and results go to stdout, progress to stderr
    assert "first convolution whitened from the 2x2 patches of 300 training images" in said
    assert re.search(r"^test \(last\.pt, epoch 2: no validation split\): .*acc [\d.]+%", said, re.MULTILINE)
    second = load_checkpoint(out / "last.pt")
    weights, before = second["model"], first["model"]
    w = weights["whiten.conv.weight"]
    assert torch.equal(w, before["whiten.conv.weight"]) and torch.equal(w[4:], -w[:4])  # whitened, then frozen
    assert torch.equal(weights["whiten.conv.bias"], before["whiten.conv.bias"])  # trained in epoch 1 only
    assert not torch.equal(weights["groups.group1.conv1.weight"], before["groups.group1.conv1.weight"])
    assert torch.equal(weights["groups.group1.norm1.weight"], torch.ones(8))  # shift-only batch norm
    average = second["weight_average"]["average"]
    assert all(torch.equal(average[k], weights[k]) for k in average)  # the run ends on the lookahead average


def test_threads_and_decode_progress_in_a_subprocess(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    run = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--data", str(tmp_path / "imgs"), "--threads", "1",
                          "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--no-report", "--progress", "log",
                          "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "TERM": "dumb"}, check=False)
    assert run.returncode == 0, run.stderr
    assert re.search(r"^decoding imgs: 32/32 images in [\d.]+s", run.stderr, re.MULTILINE)  # on stderr, before training
    assert "cached the decoded images in" in run.stderr
    # the precision is the probe's on a CPU with bf16 hardware (a timing: either may win for LeNet-5)
    assert re.search(r"^training: .*, cpu, 1 thread, (fp32|bf16 autocast)$", run.stdout + run.stderr, re.MULTILINE)
    assert "decoding" not in run.stdout


def test_train_and_eval_restart_with_passive_openmp_wait(monkeypatch, tmp_path):
    started = []
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(cli_main.os, "execv", lambda exe, argv: started.append((argv, os.environ["OMP_WAIT_POLICY"])))
    monkeypatch.setattr("cnnzoo.engine.runtime.keep_freed_memory", lambda: True)  # not in the test process
    threads_wanted = cli_main._threads_wanted
    monkeypatch.setattr(cli_main, "_threads_wanted", lambda args: 2)  # as on a 2-CPU machine
    monkeypatch.setattr(sys, "argv", ["cnnzoo", "train", "--print-config"])
    assert main() == 0  # execv was replaced, so the command goes on here
    assert started == [([sys.executable, "-m", "cnnzoo", "train", "--print-config"], "PASSIVE")]
    monkeypatch.setattr(cli_main, "_threads_wanted", threads_wanted)
    for quick in (["list", "lenet*"], ["train", "--threads", "1", "--print-config"]):  # nothing spins: no restart
        started.clear()
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(sys, "argv", ["cnnzoo", *quick])
        assert main() == 0 and started == []


FAULTS_PROBE = """
import resource, sys
import torch
from cnnzoo.engine.runtime import keep_freed_memory

def faults_of_second_use():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB: above glibc's largest mmap threshold
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_second_use()
if not keep_freed_memory():
    sys.exit(3)
# the fewest of three later uses: one use was once re-faulted while the machine was under memory
# pressure from a parallel test worker (cause not found); without the setting every use is
print(default, faults_of_second_use(), min(faults_of_second_use() for _ in range(3)))
"""


def test_keep_freed_memory_stops_refaulting_large_blocks():
    run = subprocess.run([sys.executable, "-c", FAULTS_PROBE], capture_output=True, text=True, timeout=120, cwd=REPO,
                         check=False)
    if run.returncode == 3:
        pytest.skip("not glibc: keep_freed_memory does nothing here")
    assert run.returncode == 0, run.stderr
    default, _first, second = map(int, run.stdout.split())
    assert default > 10_000  # 64 MB mapped and faulted in again, page by page
    assert second < 1_000  # the freed block is reused as it is
