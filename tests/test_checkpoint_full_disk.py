"""A real full disk: a 1 MiB tmpfs where the next checkpoint does not fit."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

from cnnzoo.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint


@contextlib.contextmanager
def small_tmpfs(mount_point, size: str):
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    with small_tmpfs(tmp_path / "tiny", "1m") as mount_point:
        yield mount_point


def test_full_disk_keeps_the_previous_checkpoint(tiny_disk):
    path = tiny_disk / "last.pt"
    atomic_save({"model": {"w": torch.ones(50_000)}, "step": 1}, path, keep_previous=False)  # ~200 KB
    with pytest.raises(CheckpointError, match="(?i)no space left on device") as info:
        atomic_save({"model": {"w": torch.ones(500_000)}, "step": 2}, path)  # ~2 MB: does not fit
    assert "previous checkpoint is intact" in str(info.value)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tiny_disk.iterdir()] == ["last.pt"], "a temporary file was left on the full disk"


def test_full_disk_while_caching_only_warns_and_leaves_nothing(tiny_disk, tmp_path, caplog):
    import logging

    import numpy as np
    from PIL import Image

    from cnnzoo.data import load_dataset

    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(40):  # 80 x 3 x 96 x 96 bytes: about 2 MB of pixels, twice the disk
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        bundle = load_dataset(str(folder), cache_dir=tiny_disk, num_workers=1)
    assert "could not write the dataset cache" in caplog.text
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test) if s is not None) == 80
    assert list(tiny_disk.iterdir()) == [], "a partial cache file was left on the full disk"


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", "2m") as mount_point:
        yield mount_point


def test_full_disk_during_training_stops_with_the_resume_command(small_disk):
    # LeNet-5's checkpoint (weights + momentum) is ~0.5 MB: best.pt and last.pt fit on the 2 MiB
    # disk, their next versions (the replaced ones kept as *.prev.pt) do not.
    run = small_disk / "run"
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--epochs", "5", "--out", str(run),
                          "--progress", "off", "--set", "runtime.tensorboard=false"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnzoo train: stopped: could not write to") and "Traceback" not in out.stderr
    assert f"cnnzoo train --resume {run}" in last and "last good checkpoint is kept" in last
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] >= 1
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name], "temporaries left on the full disk"
