"""Bounded resources on untrusted input: files of a few hundred bytes (or kilobytes) that claim
gigabytes (a tensor bigger than its bytes, a compressed record, an input size, a class list, a
model larger than its weights, a legacy pickle's storage sizes, channel and layer counts, an
image's pixel count) are refused with one line naming the file, and refusing each of them peaks
under 300 MB of memory above the baseline.

The peaks are measured in one child process that imports cnnzoo once and then forks a grandchild
per file: a forked process starts its peak (ru_maxrss) at its current size, so the baseline is
cnnzoo imported and nothing loaded, and each file is measured alone.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnzoo._limits import LimitError, check_torch_file
from cnnzoo.data.decode import decode_image

BUDGET_MB = 300
GIGA_ELEMENTS = 10**9  # 4 GB of float32


# ---------------------------------------------------------------------------- crafting files


class _Storage:
    """Stands for a tensor storage in a hand-written pickle: pickled as a persistent id."""

    def __init__(self, pid: tuple):
        self.pid = pid


class _Tensor:
    """Pickles as torch's `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

    def __init__(self, numel: int, *, legacy: bool = False):
        tail = (None,) if legacy else ()
        self.storage = _Storage(("storage", torch.FloatStorage, "0", "cpu", numel, *tail))
        self.numel = numel

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (self.numel,), (1,), False,
                                                 collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_zip(path: Path, obj, record: bytes = b"\0" * 16, compress: int = zipfile.ZIP_STORED,
              inflated: int = 0) -> Path:
    """A torch zip checkpoint holding `obj`, whose storage "0" is `record` (or `inflated` zero
    bytes, streamed into a compressed record)."""
    with zipfile.ZipFile(path, "w", compress) as z:
        z.writestr("archive/data.pkl", _pickled(obj))
        z.writestr("archive/byteorder", "little")
        with z.open("archive/data/0", "w", force_zip64=True) as out:
            out.write(record)
            for _ in range(inflated >> 20):
                out.write(bytes(1 << 20))
        z.writestr("archive/version", "3\n")
    return path


def legacy_file(path: Path, obj, counts: dict[str, int]) -> Path:
    """A pre-1.6 torch file: magic, protocol, system info, the pickle, storage keys, then each
    storage's element count (its bytes are missing: only the declared sizes matter here)."""
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(_pickled(obj))
        pickle.dump(list(counts), f, protocol=2)
        f.writelines(struct.pack("<q", count) for count in counts.values())
    return path


def patch_declared_size(path: Path, name: str, size: int) -> Path:
    """Make the zip's central directory and local header declare `size` bytes for record `name`."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + length] == name.encode():
            struct.pack_into("<II", data, at + 20, size, size)
            local = struct.unpack_from("<I", data, at + 42)[0]
            struct.pack_into("<II", data, local + 18, size, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (its data is one pixel's worth)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR follows the 8-byte signature and its header
    import zlib

    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@contextlib.contextmanager
def main_module_class(cls: type):
    """Pickle `cls` as the training script's `__main__.<name>`, as the official DnCNN files do."""
    main = sys.modules["__main__"]
    cls.__module__, had = "__main__", hasattr(main, cls.__name__)
    setattr(main, cls.__name__, cls)
    try:
        yield
    finally:
        if not had:
            delattr(main, cls.__name__)


class DnCNN(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.dncnn = nn.Sequential(*layers)


def official_like(path: Path, layers: list[nn.Module]) -> Path:
    with main_module_class(DnCNN):
        torch.save(DnCNN(layers), path, _use_new_zipfile_serialization=False)
    return path


def edited_checkpoint(run: Path, path: Path, edit) -> Path:
    ckpt = torch.load(run / "last.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------------------- the cases


def crafted_cases(tmp: Path, run: Path) -> dict[str, list[str]]:
    """kind -> the cnnzoo arguments that load the crafted file."""
    image = tmp / "img.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    out = str(tmp / "out.png")

    def predict(path: Path) -> list[str]:
        return ["predict", str(path), str(image)]

    def denoise(path: Path) -> list[str]:
        return ["denoise", str(path), str(image), out]

    def huge_input(c):
        c["meta"]["input_size"] = c["preprocessing"]["input_size"] = [1, 100_000, 100_000]

    def huge_model(c):
        c["model_name"] = c["config"]["model"]["name"] = "vgg19_bn"

    def many_classes(c):
        c["classes"] = c["meta"]["classes"] = [str(i) for i in range(100_001)]

    def expanded_weight(c):
        c["model"]["conv1.weight"] = torch.zeros(1).expand(GIGA_ELEMENTS)

    wide = nn.Conv2d(1, 4, 3)
    wide.in_channels = wide.out_channels = 100_000
    mid, bn = nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64)
    deep = [nn.Conv2d(1, 64, 3), *[m for _ in range(3000) for m in (mid, bn, nn.ReLU())], nn.Conv2d(64, 1, 3)]
    return {
        "zip record smaller than its tensor": predict(torch_zip(tmp / "numel.pt", {"w": _Tensor(GIGA_ELEMENTS)})),
        "zip record compressed": predict(torch_zip(tmp / "deflated.pt", {"w": _Tensor(100_000_000)}, record=b"",
                                                   compress=zipfile.ZIP_DEFLATED, inflated=400 << 20)),
        "zip record larger than the file": predict(patch_declared_size(
            torch_zip(tmp / "declared.pt", {"w": _Tensor(500_000_000)}), "archive/data/0", 2_000_000_000)),
        "tensor larger than its storage": predict(edited_checkpoint(run, tmp / "expanded.pt", expanded_weight)),
        "stored input size": predict(edited_checkpoint(run, tmp / "input.pt", huge_input)),
        "class list": predict(edited_checkpoint(run, tmp / "classes.pt", many_classes)),
        "model larger than its weights": predict(edited_checkpoint(run, tmp / "vgg.pt", huge_model)),
        "legacy storage sizes": denoise(legacy_file(tmp / "legacy.pth", {"w": _Tensor(GIGA_ELEMENTS, legacy=True)},
                                                    {"0": GIGA_ELEMENTS})),
        "legacy DnCNN channel counts": denoise(official_like(tmp / "wide.pth", [wide, nn.ReLU(), nn.Conv2d(4, 4, 3),
                                                                               nn.BatchNorm2d(4), nn.Conv2d(4, 1, 3)])),
        "legacy DnCNN layer count": denoise(official_like(tmp / "deep.pth", deep)),
        "image pixel count": predict(run / "last.pt")[:2] + [str(png_claiming(tmp / "bomb.png", 100_000, 100_000))],
    }


CHILD = r"""
import contextlib, io, json, os, resource, sys
import torch
torch.set_num_threads(1)
import cnnzoo
from cnnzoo.cli import main as cli
cli.build_parser()  # imports every subcommand
import cnnzoo.engine.evaluate, cnnzoo.engine.predict, cnnzoo.engine.checkpoint_schema  # noqa: E401
cases = json.load(open(sys.argv[1]))
results = {}
for kind, argv in cases.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except BaseException as exc:
                code = f"uncaught {type(exc).__name__}: {exc}"
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        os.write(write, json.dumps({"code": code, "stderr": err.getvalue(), "peak_mb": peak}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        results[kind] = json.loads(f.read() or '{"code": "child died", "stderr": "", "peak_mb": -1}')
    os.waitpid(pid, 0)
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, digits_run) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("crafted")
    cases = crafted_cases(tmp, digits_run)
    (tmp / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "cases.json")], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    report = "\n".join(f"  {kind}: exit {r['code']}, peak {r['peak_mb']:.1f} MB" for kind, r in results.items())
    print(f"\npeak memory above baseline when refusing each crafted file:\n{report}")
    return results


EXPECTED = {  # kind -> (exit code, words the one-line message must contain)
    "zip record smaller than its tensor": (2, "numel.pt"),
    "zip record compressed": (2, "is compressed"),
    "zip record larger than the file": (2, "more than the file's"),
    "tensor larger than its storage": (2, "model.conv1.weight claims 1,000,000,000 elements"),
    "stored input size": (2, "meta.input_size[1] should be a whole number in [1, 1,024]"),
    "class list": (2, "meta.classes should be a list of at most 100,000 values"),
    "model larger than its weights": (2, "describes a model larger than the weights it holds"),
    "legacy storage sizes": (2, "declare 4,000,000,008 bytes"),
    "legacy DnCNN channel counts": (2, "records 100000 -> 100000 channels"),
    "legacy DnCNN layer count": (2, "describes a model larger than the weights it holds"),
    "image pixel count": (1, "more than the 64-megapixel limit"),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_a_crafted_file_is_refused_within_the_memory_budget(refusals, kind):
    result = refusals[kind]
    code, words = EXPECTED[kind]
    assert result["code"] == code, result
    assert words in result["stderr"], result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert result["peak_mb"] < BUDGET_MB, f"{kind}: {result['peak_mb']:.0f} MB above baseline"


def test_torch_files_are_checked_before_torch_reads_them(tmp_path):
    deflated = torch_zip(tmp_path / "d.pt", {"w": _Tensor(4)}, record=bytes(16), compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(LimitError, match="is compressed"):
        check_torch_file(deflated)
    real = tmp_path / "real.pt"
    torch.save({"w": torch.ones(3)}, real)
    check_torch_file(real)  # what torch writes passes


def test_the_image_limit_is_configurable(tmp_path, monkeypatch, pillow_limit):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 2000), np.uint8)).save(path)
    assert decode_image(str(path)).shape == (10, 2000, 1)
    monkeypatch.setenv("CNNZOO_MAX_IMAGE_MEGAPIXELS", "0.01")
    with pytest.raises(LimitError, match="2000x10 pixels"):
        decode_image(str(path))
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's global is the process's, not cnnzoo's to lower


@pytest.fixture
def pillow_limit():
    return Image.MAX_IMAGE_PIXELS
