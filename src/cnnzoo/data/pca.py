"""The principal components of a training set's RGB colours, for AlexNet's PCA lighting noise.

Krizhevsky et al. 2012 ("ImageNet Classification with Deep Convolutional Neural Networks",
section 4.1) perform PCA on the set of RGB pixel values of the training set and, to each
training image, add multiples of the principal components (`augment.pca_lighting`). The 3x3
covariance is computed here once, exactly (integer sums in float64, chunk by chunk), in [0, 1]
units, and cached next to the dataset's uint8 cache: the key is the dataset's fingerprint (the
same one that keys the decoded images) plus what selects the training split, so editing the
source or changing the split recomputes it, and nothing else does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .cache import cache_path, default_cache_dir, load_cache, save_cache

log = logging.getLogger(__name__)


def rgb_covariance(images: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The C x C covariance of the pixel values (in [0, 1]) of uint8 images [N, C, H, W]."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    products = torch.zeros(c, c, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        pixels = images[start:start + chunk].transpose(0, 1).reshape(c, -1).to(torch.float64)
        total += pixels.sum(1)
        products += pixels @ pixels.T  # integer values < 2^53: exact
        count += pixels.shape[1]
    mean = total / count
    return (products / count - mean[:, None] * mean[None, :]) / 255.0**2


def rgb_pca(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues [C], eigenvectors [C, C] as columns) of the colour covariance, largest first, float32."""
    values, vectors = torch.linalg.eigh(rgb_covariance(images))
    order = values.argsort(descending=True)
    return values[order].clamp_min(0).float(), vectors[:, order].float()


def _pca_problem(payload: dict) -> str | None:
    """What is wrong with a cached colour PCA (3 eigenvalues, a 3 x 3 basis, finite), or None."""
    vals, vecs = payload.get("eigvals"), payload.get("eigvecs")
    if not (isinstance(vals, torch.Tensor) and isinstance(vecs, torch.Tensor)):
        return "no eigenvalues and eigenvectors"
    if vals.shape != (3,) or vecs.shape != (3, 3) or not (vals.isfinite().all() and vecs.isfinite().all()):
        return f"eigenvalues {tuple(vals.shape)} and eigenvectors {tuple(vecs.shape)}, not (3,) and (3, 3) finite"
    return None


def cached_rgb_pca(images: torch.Tensor, *, fingerprint: str, options: dict[str, Any],
                   cache_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`rgb_pca(images)`, read from / written to a small file beside the dataset cache, keyed by the
    dataset's `fingerprint` and the `options` that chose these training images (split, sizes)."""
    key = {**options, "kind": "rgb-pca", "shape": "x".join(map(str, images.shape))}
    path = cache_path(cache_dir or default_cache_dir(), "rgb-pca", fingerprint, key)
    payload = load_cache(path, check=_pca_problem)
    if payload is not None and {"eigvals", "eigvecs"} <= set(payload):
        return payload["eigvals"].clone(), payload["eigvecs"].clone()
    eigvals, eigvecs = rgb_pca(images)
    log.info("colour principal components of %d training images: eigenvalues %s (cached in %s)", images.shape[0],
             ", ".join(f"{v:.4g}" for v in eigvals.tolist()), path)
    save_cache(path, {"eigvals": eigvals, "eigvecs": eigvecs})
    return eigvals, eigvecs
