"""CIFAR-10 / CIFAR-100 in the official "python version" format (Krizhevsky 2009).

The official archives `cifar-10-python.tar.gz` and `cifar-100-python.tar.gz` hold pickled
dicts with a `data` array (N x 3072 uint8, channel-major 32x32) and `labels` / `fine_labels`.
They are read from the .tar.gz directly or from the extracted folder, with an unpickler that
only lets numpy rebuild its arrays (the official files are pickles; nothing else may run).
An archive with an official name is verified against its published MD5 first.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    archive: str
    md5: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


CIFAR10 = CifarSpec("cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                    tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta", "labels",
                    "label_names")
CIFAR100 = CifarSpec("cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
                     ("train",), "test", "meta", "fine_labels", "fine_label_names")
SPECS = {s.name: s for s in (CIFAR10, CIFAR100)}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows exactly what numpy needs to rebuild an ndarray; refuses every other global."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch file")
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _unpickle(data: bytes, source: str) -> dict[str, object]:
    try:
        raw = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise DataError(f"{source} is not a CIFAR python batch file ({err})") from None
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def detect(path: Path) -> CifarSpec | None:
    """The CIFAR variant stored at `path` (archive or folder), or None."""
    if path.is_dir():
        for spec in SPECS.values():
            if path.name == spec.folder or (path / spec.folder).is_dir() or (path / spec.meta).is_file() and (
                    path / spec.test).is_file():
                return spec
        return None
    if path.name in {s.archive for s in SPECS.values()}:
        return next(s for s in SPECS.values() if s.archive == path.name)
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError):
        return None
    top = PurePosixPath(first.name).parts[0] if first and PurePosixPath(first.name).parts else ""
    return next((s for s in SPECS.values() if s.folder == top), None)


def md5sum(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, spec: CifarSpec) -> None:
    if path.name == spec.archive and (got := md5sum(path)) != spec.md5:
        raise DataError(f"checksum mismatch for {path}: MD5 {got}, the official archive has {spec.md5}; "
                        "the file is damaged or not the official one: delete it and download again")


def _read_members(path: Path, spec: CifarSpec) -> dict[str, bytes]:
    wanted = {*spec.train, spec.test, spec.meta}
    if path.is_dir():
        root = path if (path / spec.meta).is_file() else path / spec.folder
        return {n: (root / n).read_bytes() for n in wanted if (root / n).is_file()}
    found = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read the archive {path}: {err}; delete it and download again") from None
    return found


def _batch(files: dict[str, bytes], names: tuple[str, ...], spec: CifarSpec, source: str) -> dict[str, torch.Tensor]:
    parts = [_unpickle(files[n], f"{source}:{n}") for n in names]
    data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
    labels = np.concatenate([np.asarray(p[spec.label_key], dtype=np.int64) for p in parts])
    return {"images": torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), "labels": torch.from_numpy(labels)}


def read_cifar(path: Path, spec: CifarSpec) -> dict:
    """Verify (official archive name) and decode into the cache payload form."""
    verify(path, spec)
    files = _read_members(path, spec)
    missing = sorted({*spec.train, spec.test, spec.meta} - set(files))
    if missing:
        raise DataError(f"{path} lacks the {spec.name} files {missing}; it is incomplete: download it again")
    meta = _unpickle(files[spec.meta], f"{path}:{spec.meta}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec.names_key]]
    splits = {"train": _batch(files, spec.train, spec, str(path)), "test": _batch(files, (spec.test,), spec, str(path))}
    total = sum(len(s["labels"]) for s in splits.values())
    return {"classes": classes, "splits": splits, "bad_images": [], "total": total}


def find_local(spec: CifarSpec, roots: list[Path]) -> Path | None:
    for root in roots:
        for candidate in (root / spec.archive, root / spec.folder):
            if candidate.exists():
                return candidate
    return None


def download(spec: CifarSpec, root: Path) -> Path:
    """Fetch the official archive with a progress bar, verify its MD5, then move it into place."""
    from tqdm.auto import tqdm

    root.mkdir(parents=True, exist_ok=True)
    dest = root / spec.archive
    fd, tmp = tempfile.mkstemp(prefix=spec.archive + ".", suffix=".part", dir=root)
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {spec.archive}") as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        if (got := md5sum(Path(tmp))) != spec.md5:
            raise DataError(f"downloaded {spec.url} has MD5 {got}, expected {spec.md5}; try again later")
        os.replace(tmp, dest)
    except OSError as err:
        raise DataError(f"could not download {spec.url} ({err}); download it by hand into {root} "
                        f"or pass the path of your copy") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
