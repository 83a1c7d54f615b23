"""Atomic checkpoints and safe loading, with the faults injected for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cnnzoo.cli.main import terminal_logging
from cnnzoo.engine import checkpoint as ckpt_mod
from cnnzoo.engine.checkpoint import (
    CheckpointError, atomic_save, capture_rng_state, find_resume_checkpoint, load_checkpoint, load_weights,
    restore_rng_state, save_weights,
)


def _state(k: int, numel: int = 1000) -> dict:
    return {"model": {"w": torch.full((numel,), float(k))}, "step": k}


def test_atomic_save_roundtrip_keeps_previous(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save(_state(1), path)
    atomic_save(_state(2), path)
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def _failing_save(exc: BaseException):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half the bytes reached the disk, then the failure
        raise exc
    return save


@pytest.mark.parametrize("exc", [RuntimeError("injected failure inside torch.save"),
                                 OSError(28, "No space left on device")])
def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.pt"
    atomic_save(_state(1), path)
    monkeypatch.setattr(ckpt_mod.torch, "save", _failing_save(exc))
    with pytest.raises(CheckpointError, match="previous checkpoint is intact") as info:
        atomic_save(_state(2), path)
    assert str(path) in str(info.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


_SAVER = textwrap.dedent("""
    import sys, torch
    from cnnzoo.engine.checkpoint import atomic_save
    path = sys.argv[1]
    for k in range(1, 10**6):
        atomic_save({"model": {"w": torch.full((1_500_000,), float(k))}, "step": k}, path)
        if k == 1:
            print("ready", flush=True)
""")


def test_sigkill_during_save_never_loses_the_checkpoint(tmp_path):
    """Kill a process that saves in a loop; the checkpoint must load every time.

    A temporary file left behind proves the kill landed in the middle of a write.
    """
    trials, mid_write_hits = 0, 0
    deadline = time.monotonic() + 60
    while (mid_write_hits < 3 or trials < 6) and time.monotonic() < deadline:
        trials += 1
        path = tmp_path / f"trial{trials}" / "last.pt"
        path.parent.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.37 * (trials % 7) / 7)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write_hits += bool(list(path.parent.glob(".last.pt.tmp-*")))
        ckpt = load_checkpoint(path)
        assert torch.equal(ckpt["model"]["w"], torch.full((1_500_000,), float(ckpt["step"])))
    print(f"{trials} SIGKILL trials, {mid_write_hits} inside a write, all loadable")
    assert mid_write_hits >= 1, f"no kill landed inside a write in {trials} trials"


def test_truncated_checkpoint_error_names_file_and_resume_falls_back(tmp_path, capsys):
    path = tmp_path / "last.pt"
    atomic_save(_state(1), path)
    atomic_save(_state(2), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with terminal_logging():  # the CLI's way of showing the library's warnings
        found, ckpt = find_resume_checkpoint(tmp_path)
    assert found.name == "last.prev.pt" and ckpt["step"] == 1
    assert "resuming from" in capsys.readouterr().err


def test_resume_prefers_most_advanced_good_checkpoint(tmp_path):
    atomic_save(_state(3), tmp_path / "best.pt")
    atomic_save(_state(5), tmp_path / "last.pt")
    assert find_resume_checkpoint(tmp_path)[1]["step"] == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        find_resume_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"hello, I am a text file", "truncated, corrupt or not a PyTorch checkpoint"),
])
def test_foreign_files_are_refused_with_the_file_named(tmp_path, content, match):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_foreign_torch_file_is_not_a_cnnzoo_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a cnnzoo checkpoint"):
        load_checkpoint(path)
    assert load_checkpoint(path, required_keys=()).shape == (3,)


class _Payload:
    """Unpickling this runs a command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Benign:
    def __init__(self):
        self.value = 42


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "the pickle's code ran"


def test_trusted_checkpoint_with_custom_classes_loads(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": {}, "extra": _Benign()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True)["extra"].value == 42


def test_safetensors_roundtrip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "w.safetensors"
    save_weights(model.state_dict(), path, metadata={"architecture": "toy"})
    state, meta = load_weights(path)
    assert meta["architecture"] == "toy"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        (tmp_path / "bad.safetensors").write_bytes(b"garbage")
        load_weights(tmp_path / "bad.safetensors")


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    import numpy as np
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    atomic_save({"model": {}, "rng": state}, tmp_path / "r.pt")
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
