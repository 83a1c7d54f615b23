"""The in-memory form of every dataset: uint8 image tensors plus labels, split three ways.

Whatever the source (sklearn digits, IDX, CIFAR pickles, JPEG folders), a dataset ends up as
`ImageSplit`s of uint8 `[N, C, H, W]` images and int64 labels, which is small enough to keep
on the accelerator for CIFAR-sized data and cheap to cache on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [{self.images.shape[0]}], got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSplit":
        return ImageSplit(self.images[index], self.labels[index])


@dataclass
class DatasetBundle:
    """A dataset's splits and what describes them; a streamed folder's splits are
    `stream.FileSplit`s (files and labels, decoded batch by batch) instead of ImageSplits."""

    name: str
    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    fingerprint: str
    bad_images: list[tuple[str, str]] = field(default_factory=list)
    # Additions to the agreed interface (all defaulted, so backward compatible):
    from_cache: bool = False  # True when the images came from the uint8 tensor cache
    large_images: bool = False  # train images stored larger than input_size, for random-resized crop

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        test = f", test {len(self.test)}" if self.test is not None else ""
        return (f"{self.name}: {self.num_classes} classes, {'x'.join(map(str, self.input_size))}, "
                f"train {len(self.train)}, val {len(self.val)}{test}")


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (keep, take) with `fraction` of every class in `take`.

    Each class gives round(fraction * n_c) samples (at least one when the class has two or
    more and fraction > 0, never all of them). Vectorised: a seeded random key per sample,
    a stable sort by class, then each sample's rank inside its class decides its side.
    """
    labels = labels.long().cpu()
    n = labels.numel()
    if fraction <= 0 or n == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    if fraction >= 1:
        raise ValueError(f"a split fraction must be below 1, got {fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    order = perm[torch.sort(labels[perm], stable=True).indices]
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts[labels[order]]
    want = torch.round(counts.double() * fraction).long()
    want = torch.where(counts >= 2, want.clamp(1, None), want).minimum((counts - 1).clamp(0, None))
    take = rank < want[labels]
    return torch.nonzero(~take).flatten(), torch.nonzero(take).flatten()


def carve(split: ImageSplit, fraction: float, seed: int) -> tuple[ImageSplit, ImageSplit]:
    keep, take = stratified_split(split.labels, fraction, seed)
    return split.subset(keep), split.subset(take)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, exact: from a 256-bin histogram of each channel."""
    if images.shape[0] == 0:
        raise DataError("cannot compute normalisation statistics of an empty training split")
    levels = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        p = hist / hist.sum()
        mean = (p * levels).sum()
        var = (p * (levels - mean) ** 2).sum()
        means.append(round(float(mean) / 255, 4))
        stds.append(round(max(float(var.sqrt()), 1.0) / 255, 4))  # a constant channel would divide by 0
    return tuple(means), tuple(stds)
