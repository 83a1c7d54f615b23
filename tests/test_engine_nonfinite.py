"""A NaN injected into the loss for real: the run stops (or skips a bounded number of steps) and
never writes a poisoned model to last.pt or best.pt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnzoo.engine.config import config_from_dict
from cnnzoo.engine.progress import Progress
from cnnzoo.engine.resume import NonFiniteLossError, Run
from cnnzoo.engine.trainer import train
from faults import nan_loss_at

REPO = Path(__file__).resolve().parents[1]
QUIET = Progress("off", log=lambda line: None)


def cfg(out, epochs=2, skip=0):
    return config_from_dict({"schedule": {"epochs": epochs},
                             "runtime": {"out": str(out), "skip_nonfinite": skip, "tensorboard": False}})


def all_finite(state_dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_nan_stops_the_run_and_leaves_checkpoints_untouched(tmp_path):
    with nan_loss_at({30}), pytest.raises(NonFiniteLossError) as info:  # step 30 is in epoch 2 (21 per epoch)
        train(cfg(tmp_path / "run"), progress=QUIET)
    message = str(info.value)
    assert "non-finite loss (nan) at epoch 2, step 30" in message
    assert "--skip-nonfinite N" in message and "left as they were" in message
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True, map_location="cpu")
        assert ckpt["step"] == 21 and all_finite(ckpt["model"])  # epoch 1's, not touched since


def test_skip_nonfinite_skips_a_bounded_number_of_steps(tmp_path):
    with nan_loss_at({5, 6}):
        result = train(cfg(tmp_path / "run", epochs=1, skip=2), progress=QUIET)
    assert result.state.skipped == 2
    assert result.state.step == 21 - 2  # the two bad batches were not applied
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True, map_location="cpu")
    assert all_finite(ckpt["model"]) and result.test["acc"] > 0.3


def test_more_bad_steps_than_allowed_stops(tmp_path):
    with nan_loss_at({3, 4, 5}), pytest.raises(NonFiniteLossError, match="after skipping 2 bad step"):
        train(cfg(tmp_path / "run", epochs=1, skip=2), progress=QUIET)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_poisoned_weights_are_never_saved(tmp_path):
    from cnnzoo.engine import resume

    run = tmp_path / "run"
    train(cfg(run, epochs=1), progress=QUIET)
    before = (run / "last.pt").read_bytes()
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    poisoned = Run(cfg=None, task=None, meta=None, model=model, optimizer=None, schedule=None, scaler=None,
                   loader=None, run_dir=run)
    with pytest.raises(NonFiniteLossError, match=r"weight.*last.pt was not overwritten"):
        resume.save_checkpoint(poisoned, resume.TrainState(step=99), "last.pt")
    assert (run / "last.pt").read_bytes() == before


def test_cli_reports_nan_in_one_line_with_exit_code_1(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "faults.py"), "2", "train", "--epochs", "1", "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnzoo train: stopped: non-finite loss (nan) at epoch 1, step 2")
