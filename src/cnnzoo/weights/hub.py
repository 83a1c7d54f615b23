"""Where weights files live and how they arrive: the cache folder and `download`.

Files sit at `$CNNZOO_HOME/weights/<file name>` (default `~/.cache/cnnzoo`). Nothing is ever
fetched implicitly: a missing file is a one-line error naming the URL and the exact path to
put it at, and `download` (what `cnnzoo weights download` calls) is the only network access.
A transfer streams into a temporary file in the same folder, is checked against the length
the server announced and the hash the publisher states, and only then is renamed into place
(`os.replace`, atomic on one file system), so a failed or corrupt transfer never leaves a
file under the final name. `CNNZOO_WEIGHTS_BASE_URL` (or `base_url=`) swaps the publisher's
host for a mirror that serves the same file names (used by the tests' local HTTP server).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from .entry import WeightsEntry, WeightsError

CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$CNNZOO_HOME` (default `~/.cache/cnnzoo`)."""
    return Path(os.environ.get("CNNZOO_HOME") or Path.home() / ".cache" / "cnnzoo")


def cached_path(entry: WeightsEntry) -> Path:
    return cache_dir() / "weights" / entry.file_name


def is_cached(entry: WeightsEntry) -> bool:
    return cached_path(entry).is_file()


def source_url(entry: WeightsEntry, base_url: str | None = None) -> str:
    base = base_url or os.environ.get("CNNZOO_WEIGHTS_BASE_URL")
    return f"{base.rstrip('/')}/{entry.file_name}" if base else entry.url


def require_cached(entry: WeightsEntry) -> Path:
    """The cached file, or a WeightsError saying where to get it and where to put it."""
    path = cached_path(entry)
    if not path.is_file():
        raise WeightsError(
            f"{entry.tag} is not downloaded: run `cnnzoo weights download {entry.tag}`, "
            f"or fetch {entry.url} and put it at {path}"
        )
    return path


def verify_hash(digest: str, entry: WeightsEntry, what: str) -> None:
    if entry.sha256 and not digest.startswith(entry.sha256):
        raise WeightsError(f"{what}: sha256 {digest[:12]}... does not start with the published {entry.sha256}")


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
    return sha.hexdigest()


def download(entry: WeightsEntry, *, base_url: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch the entry's file into the cache (verified, atomic); a cached file is verified and kept."""
    path = cached_path(entry)
    if path.is_file():  # placed by hand or fetched before: check it, keep it
        verify_hash(file_sha256(path), entry, str(path))
        return path
    url = source_url(entry, base_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _transfer(url, out, progress=progress, timeout=timeout)
        verify_hash(digest, entry, url)
        os.replace(tmp, path)
    except WeightsError:
        tmp.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, HTTPException, OSError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise WeightsError(f"download of {url} failed ({reason}); nothing was written to {path}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _transfer(url: str, out, *, progress: bool, timeout: float) -> str:
    """Stream `url` into `out`; the sha256 of what arrived. A short body is an error."""
    sha = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                  disable=not progress, desc=url.rsplit("/", 1)[-1]) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                sha.update(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise WeightsError(f"download of {url} was cut short ({received:,} of {total:,} bytes); nothing was kept")
    return sha.hexdigest()
