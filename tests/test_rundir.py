"""One run per directory, with real concurrent processes: a second `cnnzoo train` on a run
directory in use exits 2 naming the holder's PID, and a SIGKILLed run never blocks its resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnzoo._files import remove_stale_temporaries
from cnnzoo.engine.rundir import locked, new_run_dir
from conftest import REPO_ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cnnzoo(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnzoo", "train", "--progress", "off", *args], cwd=REPO_ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow  # three cnnzoo processes and a resumed run: about a minute here
def test_second_process_is_refused_and_a_killed_run_resumes(tmp_path):
    run = tmp_path / "run"
    first = cnnzoo("--out", str(run), "--epochs", "200")
    try:
        wait_for(run / "last.pt", first)
        second = cnnzoo("--out", str(run), "--epochs", "1")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert err.strip().splitlines() == [err.strip()] and f"(PID {first.pid})" in err and "in use" in err
        again = cnnzoo("--resume", str(run))  # a second resume of a live run is refused too
        _, err = again.communicate(timeout=120)
        assert again.returncode == 2 and f"(PID {first.pid})" in err
        assert first.poll() is None  # the first run went on
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    reached = torch.load(run / "last.pt", weights_only=True)["epoch"]
    resumed = cnnzoo("--resume", str(run), "--epochs", str(reached + 1))  # the kernel released the dead run's lock
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming from" in out and torch.load(run / "last.pt", weights_only=True)["epoch"] == reached + 1


def test_lock_refuses_in_process_and_is_released_on_exit(tmp_path):
    with locked(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        child = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from cnnzoo.engine.rundir import locked\nwith locked(Path(sys.argv[1])): pass",
                                str(tmp_path)], capture_output=True, text=True, env=ENV)
        assert child.returncode != 0 and "RunDirBusyError" in child.stderr and str(os.getpid()) in child.stderr
    with locked(tmp_path):  # released: taken again at once
        pass


def test_runs_started_together_get_their_own_directories(tmp_path):
    made = {new_run_dir("lenet5", "digits", tmp_path) for _ in range(5)}
    assert len(made) == 5 and all(p.is_dir() for p in made)


def test_only_a_dead_process_temporaries_are_removed(tmp_path):
    target = tmp_path / "last.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = tmp_path / f".last.pt.tmp-{os.getppid()}"
    gone = tmp_path / f".last.pt.tmp-{dead.pid}"
    live.write_bytes(b"partial")
    gone.write_bytes(b"partial")
    remove_stale_temporaries(target)
    assert live.exists() and not gone.exists()
