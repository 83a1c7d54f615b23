"""Archives are verified, not trusted: a flipped bit is an error naming the archive and nothing
is cached; unsafe member names are skipped and counted; huge or sparse members are refused by
their declared size before they are read; devices and FIFOs are refused at once."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data import load_dataset
from cnnzoo.errors import DataError


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_archive(path, extra=()) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for cls in ("a", "b"):
            for i in range(6):
                # incompressible pixels, so a flipped bit lands inside image data
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
                add(tar, f"{cls}/{i}.png", buf.getvalue())
        for name, payload in extra:
            add(tar, name, payload)


def test_a_flipped_bit_is_an_error_and_nothing_is_cached(tmp_path):
    archive = tmp_path / "data.tar.gz"
    make_archive(archive)
    load_dataset(str(archive), cache_dir=tmp_path / "ok-cache")  # the intact archive loads
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"cannot read the archive {archive}"):
        load_dataset(str(archive), cache_dir=tmp_path / "cache")
    assert not list(tmp_path.glob("cache/*.pt"))


def test_a_bad_crc_alone_is_caught(tmp_path):
    # Corrupt only the stored CRC-32 (the gzip trailer): the data inflates fine, so only reading to
    # the end of the stream can notice.
    archive = tmp_path / "data.tar.gz"
    make_archive(archive)
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="CRC check failed"):
        load_dataset(str(archive), cache_dir=tmp_path / "cache")


def test_unsafe_member_names_are_skipped_and_counted(tmp_path, caplog):
    archive = tmp_path / "data.tar.gz"
    make_archive(archive, extra=[("../evil.png", png_bytes(1)), ("/abs/evil.png", png_bytes(2)),
                                 ("a/../../evil.png", png_bytes(3))])
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        bundle = load_dataset(str(archive), cache_dir=tmp_path / "cache", val_fraction=0.0)
    splits = (bundle.train, bundle.val, bundle.test)
    assert bundle.classes == ["a", "b"] and sum(len(s) for s in splits if s is not None) == 12
    assert "skipped 3 member(s)" in caplog.text


def test_a_huge_declared_member_is_refused_before_reading(tmp_path, monkeypatch):
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "a/0.png", png_bytes(0))
        add(tar, "b/0.png", png_bytes(1))
        info = tarfile.TarInfo("a/huge.png")
        info.size = 50 * 2**30  # declared 50 GiB, nothing behind it
        tar.addfile(info)
    monkeypatch.setenv("CNNZOO_MAX_IMAGE_MB", "1")
    with pytest.raises(DataError, match=r"member a/huge.png declares 53,687,091,200 bytes"):
        load_dataset(str(archive), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_devices_and_fifos_are_refused_at_once(tmp_path, kind):
    target = "/dev/zero"
    if kind == "fifo":
        target = str(tmp_path / "pipe.tar.gz")
        os.mkfifo(target)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--data", target, "--epochs", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and "is not a regular file or folder" in out.stderr, out.stderr
    assert time.monotonic() - started < 60 and "Traceback" not in out.stderr


def test_an_edit_that_keeps_size_and_mtime_is_noticed(tmp_path):
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / cls / f"{i}.bmp")
    first = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert load_dataset(str(folder), cache_dir=tmp_path / "cache").from_cache
    target = folder / "a" / "0.bmp"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # one pixel, same size (BMP), then the old timestamp put back
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert not again.from_cache and again.fingerprint != first.fingerprint
