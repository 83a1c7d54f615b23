"""Bounds on the numbers that come from files, checked before anything is allocated from them.

A checkpoint, a pickle, a cache file or an image is untrusted input: a 500-byte file can claim
a billion-element tensor, a ten-thousand-layer model or a 100,000 x 100,000 image. Every such
number is compared here with what the file itself can back, or with a fixed bound, before
memory is reserved for it; a file over a bound is refused with `LimitError` naming the file,
the number and the bound. docs/reliability.md lists the bounds.

- torch zip files (`check_torch_file`): every record is stored uncompressed (as torch writes
  them) and declares no more bytes than the file has, so nothing inflates past the file's size
  (torch itself compares each record with the tensor it is read into). A legacy (pre-1.6)
  file is left to torch, which compares each storage's declared size with the bytes left
  before reading it.
- model shapes and counts (`build_budget`): a model described by a file (its config, class
  list, channel counts, layer count) is first built on the meta device, where no memory is
  used, and the build is stopped as soon as it holds more tensors or elements than the file
  does; only a model every weight of which the file backs is then built for real.
- images (`max_image_pixels`): decoding is refused above CNNZOO_MAX_IMAGE_MEGAPIXELS
  (default 64), read from the header before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import CnnzooError

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_CHANNELS = 64  # input channels of a model (images are 1 or 3)
MAX_INPUT_SIDE = 1024  # pixels per side of a stored input size (a forward pass is run at it)
MAX_NAME_CHARS = 1_000  # a class name, a dataset name
DEFAULT_IMAGE_MEGAPIXELS = 64.0


class LimitError(CnnzooError):
    """A number read from a file is beyond what the file can back or beyond cnnzoo's bound."""


def max_image_pixels() -> int:
    """The most pixels an image may have to be decoded (CNNZOO_MAX_IMAGE_MEGAPIXELS, default 64)."""
    text = os.environ.get("CNNZOO_MAX_IMAGE_MEGAPIXELS", "")
    try:
        megapixels = float(text) if text.strip() else DEFAULT_IMAGE_MEGAPIXELS
    except ValueError:
        raise LimitError(f"CNNZOO_MAX_IMAGE_MEGAPIXELS={text!r} is not a number") from None
    return int(megapixels * 1_000_000)


def check_image_size(width: int, height: int) -> None:
    limit = max_image_pixels()
    if width * height > limit:
        raise LimitError(f"{width}x{height} pixels ({width * height / 1e6:,.1f} megapixels) is more than the "
                         f"{limit / 1e6:g}-megapixel limit; raise CNNZOO_MAX_IMAGE_MEGAPIXELS if the image is trusted")


def check_torch_file(path: Path) -> None:
    """Refuse a torch zip file whose records could inflate past its own size (see module docstring)."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load reports a damaged file in its own words
    declared = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise LimitError(f"{path}: record {record.filename} is compressed ({record.file_size:,} bytes inflated); "
                             "torch checkpoints store their records uncompressed")
        declared += record.file_size
        if declared > size:
            raise LimitError(f"{path}: its records declare {declared:,} bytes, more than the file's {size:,}")


class _Overspent(Exception):
    """Raised inside a meta-device build to stop it (turned into LimitError by `build_budget`)."""


@contextlib.contextmanager
def build_budget(tensors: int, elements: int, what: str) -> Iterator[None]:
    """Build models on the meta device, stopping as soon as they register more than `tensors`
    parameters and buffers or more than `elements` elements in all (a LimitError naming `what`)."""
    from torch.nn.modules import module as nn_module

    spent = {"tensors": 0, "elements": 0}

    def count(_module, _name, tensor):
        if tensor is None:
            return
        spent["tensors"] += 1
        spent["elements"] += tensor.numel()
        if spent["tensors"] > tensors or spent["elements"] > elements:
            raise _Overspent
        return

    handles = [nn_module.register_module_parameter_registration_hook(count),
               nn_module.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            yield
    except _Overspent:
        raise LimitError(f"{what} describes a model larger than the weights it holds ({tensors:,} tensors, "
                         f"{elements:,} elements): its sizes (classes, channels, layers, model options) do not "
                         "match its weights") from None
    finally:
        for handle in handles:
            handle.remove()


def check_backed(tensor: torch.Tensor, what: str) -> None:
    """A tensor rebuilt from a file may claim more elements than its storage holds (a zero stride
    repeats one value); any computation on it would then allocate the claimed size."""
    storage = tensor.untyped_storage().nbytes()
    needed = (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
    if tensor.numel() and needed > storage:
        raise LimitError(f"{what} claims {tensor.numel():,} elements but its storage holds {storage:,} bytes")


def backed_elements(tensors: list[torch.Tensor]) -> int:
    """Elements of distinct storage behind `tensors` (a tensor listed twice counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        key = storage.data_ptr() if storage.nbytes() else id(t)
        seen[key] = max(seen.get(key, 0), storage.nbytes() // max(t.element_size(), 1))
    return sum(seen.values())
