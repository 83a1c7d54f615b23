"""One run per directory: a run claims its directory with an exclusive lock for its whole life.

Two `cnnzoo train` processes given the same `--out`, or two `--resume` of one run, would
otherwise interleave their checkpoints. The lock is `fcntl.flock` on `RUN_DIR/.lock`, which
the kernel releases when the process dies, so a killed run never blocks its own resume; the
file holds the owner's PID so that the refusal can name it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Iterator

from ..errors import CnnzooError

LOCK_NAME = ".lock"


class RunDirBusyError(CnnzooError):
    """Another live process holds the run directory."""


def new_run_dir(model: str, dataset: str, root: Path = Path("runs")) -> Path:
    """Claim a fresh `runs/<model>-<dataset>-<time>[-n]` (mkdir is the atomic claim, so two runs
    started in the same second get different folders)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.split(":")[-1]).name).strip("-") or "data"
    stem = f"{model}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CnnzooError(f"could not find a free run directory name under {root} for {stem}")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[Path]:
    """Hold the run directory's lock while inside; refuse at once if another process holds it."""
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take(fd, run_dir)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield run_dir
    finally:
        os.close(fd)  # closing releases the lock


def check_not_busy(run_dir: Path) -> None:
    """Refuse a run directory that a live process holds, without writing anything in it."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _take(fd, run_dir)
    finally:
        os.close(fd)


def _take(fd: int, run_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirBusyError(f"{run_dir} is in use by another cnnzoo process (PID {_holder(fd)}); wait for it "
                              "to finish, stop it, or choose another --out") from None


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
