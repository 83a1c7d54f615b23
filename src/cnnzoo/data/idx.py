"""MNIST-style IDX files (LeCun et al.): MNIST and Fashion-MNIST (Xiao, Rasul & Vollgraf 2017).

An IDX file is two zero bytes, a type code, the number of dimensions, the big-endian uint32
sizes and then the big-endian data. The four standard files (`train-images-idx3-ubyte`,
`train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`) are found in a
folder, plain or gzipped, also under the `train-images.idx3-ubyte` spelling some mirrors use.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
           0x0E: np.dtype(">f8")}
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
SYSTEM_DIRS = {"mnist": Path("/usr/share/datasets/mnist"), "fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); use the original MNIST-format files")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_DTYPES[data[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path} holds {len(data)} bytes but its header promises {expected}; the file is damaged")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, prefix: str, kind: str) -> Path:
    ndim = 3 if kind == "images" else 1
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            candidate = root / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}"
            if candidate.is_file():
                return candidate
    raise DataError(f"{root} has no {prefix}-{kind}-idx{ndim}-ubyte[.gz]; put the four standard IDX files there")


def is_idx_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("train-images*idx3-ubyte*"))


def _split(root: Path, prefix: str) -> dict[str, torch.Tensor]:
    images, labels = read_idx(_find(root, prefix, "images")), read_idx(_find(root, prefix, "labels"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    images = torch.from_numpy(images.astype(np.uint8))[:, None]  # a writable copy
    return {"images": images, "labels": torch.from_numpy(labels.astype(np.int64))}


def read_idx_folder(root: Path, classes: list[str] | None = None) -> dict:
    splits = {"train": _split(root, "train"), "test": _split(root, "t10k")}
    n_classes = int(max(s["labels"].max() for s in splits.values())) + 1
    classes = classes if classes and len(classes) >= n_classes else [str(i) for i in range(n_classes)]
    total = sum(len(s["labels"]) for s in splits.values())
    return {"classes": classes, "splits": splits, "bad_images": [], "total": total}
