"""What a set of published weights is: the `WeightsEntry` record and its error type.

A network's weights are only usable with the preprocessing they were trained with and the
class names their outputs stand for, so both travel with the entry (torchvision's `Weights`
enums and timm's `pretrained_cfg` do the same). Entries are frozen data; the table of them
is in `catalogue.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from ..errors import CnnzooError

# File names too generic to share one cache folder (every Hub repository has `model.safetensors`).
GENERIC_FILE_NAMES = frozenset({"model.safetensors", "pytorch_model.bin", "model.pth", "model.pt"})


class WeightsError(CnnzooError):
    """Weights that cannot be found, fetched, verified or fitted to a model."""


@dataclass(frozen=True)
class Preprocessing:
    """How images were prepared when the weights were evaluated by their publisher.

    Evaluation resizes the shorter side to `input_size / crop_pct` with `interpolation`, takes
    the centre `input_size` crop and normalises with `mean`/`std` (timm's convention).
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file and everything needed to use it faithfully.

    `sha256` is the hash as far as the publisher states it: torchvision (and torch.hub
    convention files) put the first 8+ hex digits in the file name, which is what is stored;
    `None` where the publisher names no hash in the URL (Hugging Face Hub files), said in
    `hash_note`. `model_args` are the options that reproduce the publisher's conventions.
    """

    tag: str
    architecture: str
    source: str  # torchvision | timm | akamaster | official
    url: str
    sha256: str | None
    license: str
    format: str  # pth | safetensors | th | legacy-pickle
    preprocessing: Preprocessing | None
    classes: str | None  # imagenet1k | cifar10 | None (not a classifier)
    top1: float | None
    top1_source: str
    hash_note: str = ""
    size_bytes: int | None = None
    model_args: tuple[tuple[str, Any], ...] = ()
    notes: str = ""
    default: bool = False
    upstream_name: str = ""  # the publisher's name for the network (torchvision/timm builder)

    @property
    def file_name(self) -> str:
        """The cache file name: the URL's, or `<tag>.<ext>` where the URL's is generic."""
        name = PurePosixPath(urlparse(self.url).path).name
        if name in GENERIC_FILE_NAMES:
            return f"{self.tag}{PurePosixPath(name).suffix}"
        return name

    @property
    def source_tag(self) -> str:
        return self.tag.split(".", 1)[1]
