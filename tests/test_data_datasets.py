"""Every dataset format on small files written here: IDX, official-format CIFAR, image folders."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_dataset, stratified_split
from cnnzoo.data.cifar import CIFAR10, md5sum
from cnnzoo.errors import CnnzooError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------- writers of tiny official-format files ----------

def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_idx_folder(root: Path, gz: bool, n_train: int = 40, n_test: int = 20) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        ext = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (images, labels)
    return out


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"test batch", b"labels": [int(i % 10) for i in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def make_cifar10(root: Path, as_tar: bool, name: str = "tiny-cifar-10.tar.gz") -> tuple[Path, dict]:
    """The official layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} pickles."""
    files = {f"data_batch_{i}": cifar_batch(10, i) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(10, 9)
    files["batches.meta"] = {b"label_names": [c.encode() for c in "abcdefghij"], b"num_vis": 3072,
                             b"num_cases_per_batch": 10}
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for fname, obj in files.items():
        (folder / fname).write_bytes(pickle.dumps(obj, protocol=2))
    if not as_tar:
        return root, files
    archive = root / name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive, files


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def id_image(i: int, size: int = 8) -> np.ndarray:
    """An RGB image whose first pixel encodes its id, so splits can be checked for overlap."""
    img = np.full((size, size, 3), 100, dtype=np.uint8)
    img[0, 0] = (i // 256, i % 256, 7)
    return img


def image_id(images: torch.Tensor) -> set[int]:
    return set((images[:, 0, 0, 0].long() * 256 + images[:, 1, 0, 0].long()).tolist())


def make_folder(root: Path, splits=("train", "test"), classes=("cat", "dog", "eel"), per_class: int = 10) -> Path:
    i = 0
    for split in splits:
        for c in classes:
            for _ in range(per_class):
                save_png(root / split / c / f"{i:04d}.png", id_image(i))
                i += 1
    return root


def make_tar(folder: Path, archive: Path, arcname: str = ".") -> Path:
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return archive


# ---------- digits ----------

def test_digits_default_is_32px_grey_with_fixed_test_split():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=1)
    assert a.input_size == (1, 32, 32) and a.train.images.dtype == torch.uint8
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.classes == [str(i) for i in range(10)]
    assert torch.equal(a.test.images, b.test.images)  # the test split does not move with the seed
    assert not torch.equal(a.val.images, b.val.images)
    assert int(a.train.images.max()) == 255 and 0 < a.mean[0] < 0.5


def test_digits_image_size_resizes():
    assert load_dataset("digits", image_size=16).train.images.shape[1:] == (1, 16, 16)


# ---------- IDX ----------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_plain_and_gzipped(tmp_path, gz):
    raw = make_idx_folder(tmp_path / "mnist", gz)
    b = load_dataset(str(tmp_path / "mnist"), val_fraction=0.25, cache_dir=tmp_path / "cache")
    assert b.name == "mnist" and b.input_size == (1, 28, 28)
    assert len(b.train) == 30 and len(b.val) == 10 and len(b.test) == 20
    assert torch.equal(b.test.images[:, 0], torch.from_numpy(raw["t10k"][0]))
    assert torch.equal(b.test.labels, torch.from_numpy(raw["t10k"][1]).long())


def test_idx_named_with_path_and_damaged_file(tmp_path):
    make_idx_folder(tmp_path / "m", gz=False)
    assert len(load_dataset(f"mnist:{tmp_path / 'm'}", cache_dir=tmp_path / "c").test) == 20
    f = tmp_path / "m" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(DataError, match="damaged"):
        load_dataset(f"mnist:{tmp_path / 'm'}", cache_dir=tmp_path / "c")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_found_automatically(tmp_path):
    b = load_dataset("fashion-mnist", cache_dir=tmp_path, val_fraction=0.1)
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    assert b.classes[0] == "T-shirt/top" and b.input_size == (1, 28, 28)
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10


# ---------- CIFAR ----------

@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar_official_format(tmp_path, as_tar):
    path, files = make_cifar10(tmp_path, as_tar)
    b = load_dataset(str(path), val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert b.name == "cifar10" and b.classes == list("abcdefghij") and b.input_size == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (40, 10, 10)
    expect = torch.from_numpy(files["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(b.test.images, expect)


def test_cifar_cache_reused_then_invalidated(tmp_path):
    path, _ = make_cifar10(tmp_path, as_tar=True)
    first = load_dataset(str(path), cache_dir=tmp_path / "cache")
    second = load_dataset(str(path), cache_dir=tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.train.images, second.train.images) and first.fingerprint == second.fingerprint
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    os.utime(path, ns=(1, 1))  # a changed mtime means a changed source
    third = load_dataset(str(path), cache_dir=tmp_path / "cache")
    assert not third.from_cache and third.fingerprint != first.fingerprint


def test_cifar_official_name_is_checksummed(tmp_path):
    path, _ = make_cifar10(tmp_path, as_tar=True, name=CIFAR10.archive)
    assert md5sum(path) != CIFAR10.md5
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(str(path), cache_dir=tmp_path / "cache")


def test_cifar_pickle_with_foreign_global_refused(tmp_path):
    root, _ = make_cifar10(tmp_path, as_tar=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")


def test_cifar_by_name_missing_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="download=True"):
        load_dataset("cifar10", cache_dir=tmp_path)


# ---------- image folders ----------

def test_folder_train_test_layout(tmp_path):
    root = make_folder(tmp_path / "ds")
    b = load_dataset(str(root), val_fraction=0.2, cache_dir=tmp_path / "cache", num_workers=0)
    assert b.classes == ["cat", "dog", "eel"] and b.input_size == (3, 8, 8)
    assert (len(b.train), len(b.val), len(b.test)) == (24, 6, 30)
    assert torch.bincount(b.val.labels).tolist() == [2, 2, 2]
    assert image_id(b.test.images) == set(range(30, 60))
    assert image_id(b.train.images) | image_id(b.val.images) == set(range(30))


def test_folder_with_val_folder_used_as_is(tmp_path):
    root = make_folder(tmp_path / "ds", splits=("train", "val", "test"), per_class=4)
    b = load_dataset(str(root), cache_dir=tmp_path / "cache", num_workers=0)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 12, 12)
    assert image_id(b.val.images) == set(range(12, 24))


def test_single_folder_split_is_stratified_and_disjoint(tmp_path):
    root = tmp_path / "flat"
    for i in range(100):
        save_png(root / ("ab"[i % 2]) / f"{i}.png", id_image(i))
    b = load_dataset(str(root), val_fraction=0.1, test_fraction=0.2, seed=3, cache_dir=tmp_path / "c", num_workers=0)
    ids = [image_id(s.images) for s in (b.train, b.val, b.test)]
    assert (len(b.train), len(b.val), len(b.test)) == (72, 8, 20)
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(100))
    assert torch.bincount(b.test.labels).tolist() == [10, 10]
    other = load_dataset(str(root), val_fraction=0.1, test_fraction=0.2, seed=4, cache_dir=tmp_path / "c")
    assert image_id(other.test.images) == ids[2] and image_id(other.val.images) != ids[1]


@pytest.mark.parametrize("suffix,arcname", [(".tar.gz", "."), (".tar", "."), (".tgz", "wrapped")])
def test_folder_archives(tmp_path, suffix, arcname):
    root = make_folder(tmp_path / "ds", per_class=4)
    archive = make_tar(root, tmp_path / f"ds{suffix}", arcname)
    b = load_dataset(str(archive), cache_dir=tmp_path / "cache", num_workers=2)
    assert b.classes == ["cat", "dog", "eel"] and len(b.test) == 12 and len(b.train) + len(b.val) == 12
    assert image_id(b.test.images) == set(range(12, 24))


def test_folder_mixed_sizes_need_image_size(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=2)
    save_png(root / "train" / "cat" / "big.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match="image_size"):
        load_dataset(str(root), cache_dir=tmp_path / "c", num_workers=0)
    b = load_dataset(str(root), image_size=16, cache_dir=tmp_path / "c", num_workers=0)
    assert b.train.images.shape[1:] == (3, 16, 16) and not b.large_images


def test_large_images_kept_larger_for_random_resized_crop(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(3):
                save_png(tmp_path / "big" / split / c / f"{i}.png", rng.integers(0, 256, (100, 140, 3), np.uint8))
    b = load_dataset(str(tmp_path / "big"), image_size=70, val_fraction=0.34, cache_dir=tmp_path / "c")
    assert b.large_images and b.input_size == (3, 70, 70)
    assert b.train.images.shape[1:] == (3, 80, 80)  # round(70 * 256 / 224)
    assert b.val.images.shape[1:] == (3, 70, 70) and b.test.images.shape[1:] == (3, 70, 70)


# ---------- errors ----------

def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), cache_dir=tmp_path)
    with pytest.raises(DataError, match="did you mean cifar10") as err:
        load_dataset("cifr10", cache_dir=tmp_path)
    assert isinstance(err.value, CnnzooError) and "\n" not in str(err.value)


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=2)
    (root / "train" / "fox").mkdir()
    (root / "test" / "fox").mkdir()
    (root / "train" / "fox" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train/fox has no images \(1 files with other extensions\)"):
        load_dataset(str(root), cache_dir=tmp_path / "c", num_workers=0)


def test_train_val_class_mismatch(tmp_path):
    root = make_folder(tmp_path / "ds", splits=("train", "val"), per_class=2)
    for f in (root / "val" / "eel").iterdir():
        f.unlink()
    (root / "val" / "eel").rmdir()
    save_png(root / "val" / "owl" / "x.png", id_image(0))
    with pytest.raises(DataError, match=r"class mismatch.*lacks \['eel'\], has extra \['owl'\]"):
        load_dataset(str(root), cache_dir=tmp_path / "c", num_workers=0)


# ---------- the split itself ----------

def test_stratified_split_proportions():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([100, 50, 10, 3])])
    keep, take = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[take]).tolist() == [20, 10, 2, 1]
    assert sorted(torch.cat([keep, take]).tolist()) == list(range(len(labels)))
    keep2, take2 = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(take, take2) and not torch.equal(take, stratified_split(labels, 0.2, seed=1)[1])


def test_channel_stats_of_bundle_match_direct_computation(tmp_path):
    b = load_dataset("digits")
    x = b.train.images.double() / 255
    assert b.mean[0] == pytest.approx(x.mean().item(), abs=1e-4)
    assert b.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-4)


def test_cache_write_failure_only_warns(tmp_path, caplog):
    make_idx_folder(tmp_path / "m", gz=True)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        b = load_dataset(str(tmp_path / "m"), cache_dir=blocker)
    assert "could not write the dataset cache" in caplog.text
    assert len(b.test) == 20


def test_unreadable_cache_is_rebuilt(tmp_path, caplog):
    make_idx_folder(tmp_path / "m", gz=True)
    load_dataset(str(tmp_path / "m"), cache_dir=tmp_path / "c")
    (cache_file,) = (tmp_path / "c").glob("*.pt")
    cache_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        b = load_dataset(str(tmp_path / "m"), cache_dir=tmp_path / "c")
    assert "ignoring unreadable dataset cache" in caplog.text
    assert not b.from_cache and load_dataset(str(tmp_path / "m"), cache_dir=tmp_path / "c").from_cache
