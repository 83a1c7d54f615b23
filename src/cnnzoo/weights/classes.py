"""Class names of the datasets published weights were trained on.

ImageNet-1k's 1000 names ship as package data (`imagenet_classes.txt`, torchvision's list in
index order); CIFAR-10's ten are short enough to write here.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from .entry import WeightsError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    text = files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_names(dataset: str) -> tuple[str, ...]:
    if dataset == "imagenet1k":
        return imagenet_classes()
    if dataset == "cifar10":
        return CIFAR10_CLASSES
    raise WeightsError(f"unknown class list {dataset!r}")
