"""A real full disk: a 1 MiB tmpfs where the next checkpoint does not fit."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from cnnzoo.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_keeps_the_previous_checkpoint(tiny_disk):
    path = tiny_disk / "last.pt"
    atomic_save({"model": {"w": torch.ones(50_000)}, "step": 1}, path, keep_previous=False)  # ~200 KB
    with pytest.raises(CheckpointError, match="(?i)no space left on device") as info:
        atomic_save({"model": {"w": torch.ones(500_000)}, "step": 2}, path)  # ~2 MB: does not fit
    assert "previous checkpoint is intact" in str(info.value)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tiny_disk.iterdir()] == ["last.pt"], "a temporary file was left on the full disk"
