"""Per-process temporary files for atomic writes, shared by checkpoints and the dataset cache.

A write goes to `.<name>.tmp-<pid>` beside its target and is renamed over it. A temporary
left by a killed process is removed by the next writer; a live process's temporary is its
own business, so only dead owners' files are touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temporary_for(path: Path) -> Path:
    """This process's temporary file for `path`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            stale.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
