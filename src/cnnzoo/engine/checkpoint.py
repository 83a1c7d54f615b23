"""Checkpoints that survive being killed mid-write, and loading that runs no foreign code.

A save goes to a temporary file in the same directory, is flushed and fsynced, and is then
renamed over the target (`os.replace` is atomic on POSIX), so `last.pt` is always either the
old or the new complete file. The file being replaced is kept as `<stem>.prev.pt`: a second
good checkpoint to fall back to if the newest one is later damaged.

Loading uses `torch.load(weights_only=True)`: tensors, dicts, lists and numbers only. A file
that needs arbitrary classes is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import remove_stale_temporaries, temporary_for
from .._limits import LimitError, check_torch_file
from ..errors import CnnzooError

log = logging.getLogger(__name__)
RESUME_CANDIDATES = ("last.pt", "last.prev.pt", "best.pt", "best.prev.pt")


class CheckpointError(CnnzooError):
    """A checkpoint that cannot be written, read or trusted; the message names the file."""


def previous_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj: Any, path: str | os.PathLike, *, keep_previous: bool = True) -> None:
    """Write `obj` with torch.save so that a crash at any moment leaves a loadable file.

    On failure (a full disk, an exception inside torch.save) the temporary file is removed,
    the existing checkpoint is untouched, and CheckpointError says so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_for(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _link_replace(path, previous_path(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, Exception):
            kept = " The previous checkpoint is intact." if path.exists() else ""
            raise CheckpointError(f"could not write checkpoint {path}: {_describe_write_error(err, path)}.{kept}") from err
        raise


def _describe_write_error(err: Exception, path: Path) -> str:
    # torch.save's zip writer turns a full disk into "unexpected pos ..."; say what happened.
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(path.parent).free
        if free < 1 << 20:
            return f"no space left on device ({free:,} bytes free in {path.parent}; {err})"
    return str(err)


def _link_replace(src: Path, dst: Path) -> None:
    """Make `dst` another name for `src`'s current file, atomically (hard link, then rename)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links: a copy is still atomic via the rename
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu",
                    required_keys: tuple[str, ...] = ("model",)) -> dict:
    """Load a cnnzoo checkpoint safely; every failure is a CheckpointError naming the file.

    `trust=True` allows arbitrary pickled classes (only for files from a trusted source).
    `required_keys` tells a cnnzoo checkpoint from a foreign file (pass () to load anything).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never completely written")
    try:
        check_torch_file(path)
    except LimitError as err:
        raise CheckpointError(str(err)) from None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        detail = str(err).strip().splitlines()
        reason = next((line for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0] if detail else "")
        raise CheckpointError(
            f"{path} holds pickled Python objects that cnnzoo will not unpickle ({reason.strip()}). "
            "If you trust where the file came from, pass --trust-checkpoint."
        ) from None
    except Exception as err:  # zip, legacy-pickle and memo errors all mean a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is truncated, corrupt or not a PyTorch checkpoint ({first})") from None
    missing = [k for k in required_keys if not (isinstance(obj, dict) and k in obj)]
    if missing:
        found = f"a dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{path} is not a cnnzoo checkpoint: it holds {found}, without {', '.join(missing)}")
    return obj


def find_resume_checkpoint(run_dir: str | os.PathLike, *, trust: bool = False,
                           check: Callable[[Path, dict], None] | None = None) -> tuple[Path, dict]:
    """The most advanced loadable checkpoint of a run, warning about the ones that failed.

    `run_dir` may also be a checkpoint file. Progress is compared by the stored `step`.
    `check(path, ckpt)` raises CheckpointError for a loadable file whose contents are unusable.
    """
    run_dir = Path(run_dir)

    def load(path: Path) -> dict:
        ckpt = load_checkpoint(path, trust=trust)
        if check is not None:
            check(path, ckpt)
        return ckpt

    if run_dir.is_file():
        return run_dir, load(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    good, failures = [], []
    for name in RESUME_CANDIDATES:
        candidate = run_dir / name
        if not candidate.exists():
            continue
        try:
            good.append((candidate, load(candidate)))
        except CheckpointError as err:
            failures.append(str(err))
    if not good:
        reasons = "; ".join(failures) or f"no checkpoint ({', '.join(RESUME_CANDIDATES)}) found"
        raise CheckpointError(f"nothing to resume in {run_dir}: {reasons}")
    path, ckpt = max(good, key=lambda item: (int(item[1].get("step", -1)), item[0].name.startswith("last")))
    for failure in failures:
        log.warning("%s; resuming from %s instead", failure, path)
    return path, ckpt


def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states, in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    # random.setstate needs tuples; a round trip through some formats gives lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Write weights as safetensors (no pickle at all), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CheckpointError(f"could not write weights {path}: {err}") from err


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (state_dict, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None

