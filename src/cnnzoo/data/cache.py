"""The uint8 tensor cache: decode a dataset once, reuse it while its source is unchanged.

A cache file is keyed by a fingerprint of the source (size, mtime and edge hash of the archive,
or of every file under a folder by its relative name) plus the decoding options, so editing,
replacing or touching the source invalidates it. The fingerprint does not include where the
source is: a dataset moved elsewhere (`mv`, `cp -a`, `rsync -a` keep the modification times)
keeps it, so a run finds its data again at a new path and the cache is reused. Files are written to a temporary name in the same folder,
fsynced and renamed, so a killed run never leaves a half-written cache behind, and they are
read with `torch.load(weights_only=True)`, which cannot run code from a tampered file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .._files import remove_stale_temporaries, temporary_for
from .._limits import LimitError, check_backed

CACHE_VERSION = 1

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    if os.environ.get("CNNZOO_CACHE_DIR"):
        return Path(os.environ["CNNZOO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnzoo"


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


EDGE_BYTES = 64 * 1024  # how much of each end of a file the fingerprint reads


def _stat_line(path: Path, rel: str) -> str:
    try:
        st = path.stat()
    except OSError:  # a dangling or looping symbolic link: its target is what it names
        return f"{rel}\t->\t{os.readlink(path) if path.is_symlink() else '?'}"
    return f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{_edges(path, st.st_size)}"


def _edges(path: Path, size: int) -> str:
    """A fast hash of a file's first and last blocks: an edit in place that keeps the size and
    the modification time (a restored timestamp, a rewritten header) still changes it."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        digest.update(f.read(EDGE_BYTES))
        if size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def source_fingerprint(path: str | Path) -> str:
    """Fingerprint of a file or of every file in a folder: relative name, size, mtime, and a hash
    of each file's first and last 64 KiB; not the location, so a moved dataset keeps it. An edit
    in the middle of a large file that keeps its size and mtime is the one change it cannot see:
    `touch` such a file (or delete its cache file) after the edit."""
    path = Path(path).resolve()
    if path.is_file():
        return _digest([_stat_line(path, "")])
    lines = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root, name)
            lines.append(_stat_line(full, str(full.relative_to(path))))
    return _digest(lines)


def cache_path(cache_dir: str | Path | None, name: str, fingerprint: str, options: dict[str, Any]) -> Path:
    opts = [f"{k}={options[k]}" for k in sorted(options)]
    key = _digest([f"v{CACHE_VERSION}", fingerprint, *opts])
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40]
    return Path(cache_dir or default_cache_dir()) / f"{safe}-{key}.pt"


def load_cache(path: Path, check: Callable[[dict], str | None] | None = None) -> dict | None:
    """The cached payload, or None when absent, stale in format or unreadable (then rebuilt).
    `check` says what is wrong with a payload's form (default: a decoded dataset's)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated or foreign file: warn and decode again
        log.warning("ignoring unreadable dataset cache %s: %s", path, err)
        return None
    if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
        return None
    problem = (check or payload_problem)(payload)
    if problem:  # loadable but not what cnnzoo writes (edited, or from a buggy version): decode again
        log.warning("ignoring malformed dataset cache %s (%s); it will be rebuilt", path, problem)
        return None
    return payload


SPLITS = ("all", "train", "val", "test")


def payload_problem(payload: dict) -> str | None:
    """What is wrong with a decoded payload's form ({"classes", "splits", "bad_images", "total"}), or None."""
    classes = payload.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "classes is not a non-empty list of names"
    splits = payload.get("splits")
    if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLITS):
        return f"splits should be some of {', '.join(SPLITS)}"
    shapes = set()
    for name, split in splits.items():
        images, labels = (split.get("images"), split.get("labels")) if isinstance(split, dict) else (None, None)
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            return f"splits.{name}.images is not a uint8 [N, C, H, W] tensor"
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            return f"splits.{name}.labels is not an int64 tensor of {images.shape[0]} labels"
        try:
            check_backed(images, f"splits.{name}.images")
            check_backed(labels, f"splits.{name}.labels")
        except LimitError as err:
            return str(err)
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
            return f"splits.{name}.labels are not in [0, {len(classes)})"
        shapes.add(tuple(images.shape[1:]))
    if len(shapes) > 1:
        return f"the splits' images have different shapes {sorted(shapes)}"
    bad = payload.get("bad_images", [])
    if not isinstance(bad, list) or not all(isinstance(b, (list, tuple)) and len(b) == 2 for b in bad):
        return "bad_images is not a list of (file, reason) pairs"
    total = payload.get("total", 0)
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        return "total is not a count"
    return None


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    # torch.save writes a view's whole storage; a split carved from a larger tensor must be copied.
    return t.clone() if t.untyped_storage().nbytes() != t.nbytes else t.contiguous()


def save_cache(path: Path, payload: dict) -> None:
    """Write atomically: temporary file in the same folder, fsync, rename. Failure only warns."""
    payload = {k: ({s: {n: _own_storage(t) for n, t in v.items()} for s, v in payload[k].items()}
                   if k == "splits" else v) for k, v in payload.items()}
    payload["version"] = CACHE_VERSION
    tmp = temporary_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # left by a run killed while writing this cache
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # a full disk makes torch's zip writer raise RuntimeError
        log.warning("could not write the dataset cache %s (%s); the data will be decoded again next time", path, err)
        with contextlib.suppress(OSError):
            tmp.unlink()
