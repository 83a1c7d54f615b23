"""The shared CIFAR-10 (JPEG) tarball loads as it is, and its second load comes from the uint8 cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnzoo.data import load_dataset

TARBALL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.skipif(not TARBALL.is_file(), reason=f"{TARBALL} is absent (the shared data folder)")
def test_cifar10_jpg_tarball_loads_and_caches():
    # the user's default cache: the first run decodes 60,000 JPEGs (~15 s on 2 cores), later runs read the cache
    first = load_dataset(str(TARBALL), val_fraction=0.1, seed=0, num_workers=2)
    second = load_dataset(str(TARBALL), val_fraction=0.1, seed=0)
    assert second.from_cache and first.fingerprint == second.fingerprint
    assert first.classes == CLASSES and first.input_size == (3, 32, 32)
    assert (len(first.train), len(first.val), len(first.test)) == (45000, 5000, 10000)
    assert torch.bincount(first.test.labels).tolist() == [1000] * 10
    assert torch.bincount(first.val.labels).tolist() == [500] * 10
    assert first.bad_images == [] and torch.equal(first.val.images, second.val.images)
    assert first.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.005)  # CIFAR-10's known statistics
