"""DeviceLoader: batches of a split that lives on the training device, in a replayable order.

The whole uint8 split is moved to the device once; a batch is an index into it, so there are
no workers, no pinned-memory copies and no per-sample Python work. The epoch's order is a
pure function of (seed, epoch), computed on the CPU so CPU and GPU runs see the same batches,
and the augmentation generators are seeded from (seed, epoch, chunk or batch index): resuming at
batch k of epoch e replays exactly the batches an uninterrupted run would have produced.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from .augment import BatchAugment
from .bundle import ImageSplit
from .transforms import normalize

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby (seed, epoch, batch) apart


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), stable across processes and platforms."""
    x = 0
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
    return torch.randperm(n, generator=gen)


CHUNK_BYTES = 256 << 20  # augmented float32 images prepared at once on an accelerator


class DeviceLoader:
    """Iterates `(images, targets)` batches of a split kept on `device`.

    On an accelerator the per-image augmentation runs on chunks of several batches at once
    (`batches_per_chunk`, by default as many as fit in 256 MiB of float32 output; 1 on the CPU):
    a batch then costs a slice instead of a dozen kernel launches, which matters when a small
    model's step is itself only launch overhead. Mixup/cutmix still pair images within a batch.

    `state_dict()` = {"epoch", "position" (batches already yielded this epoch), "seed",
    "batches_per_chunk"}; after `load_state_dict`, the next iteration starts at that batch and
    reproduces it exactly. Finishing an epoch moves on to the next one, so a plain
    `for epoch...: for batch in loader` loop needs no `set_epoch`. Save the state after a batch
    has been trained on: `position` counts it as done.
    """

    def __init__(self, split: ImageSplit, batch_size: int, *, shuffle: bool, device: torch.device | str,
                 augment: BatchAugment | None, mean: Sequence[float], std: Sequence[float], drop_last: bool = False,
                 seed: int = 0, channels_last: bool = False, batches_per_chunk: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.mean, self.std = augment, tuple(mean), tuple(std)
        self.seed, self.channels_last = int(seed), channels_last
        self.batches_per_chunk = batches_per_chunk or self._auto_chunk()
        self.epoch, self.position = 0, 0
        self._gen = torch.Generator(device=self.device)

    def _auto_chunk(self) -> int:
        if self.device.type == "cpu":
            return 1
        batch_bytes = self.batch_size * self.images[0].numel() * 4
        return max(1, CHUNK_BYTES // max(batch_bytes, 1))

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch, except that a position restored by
        `load_state_dict` for this very epoch is kept (so calling it on resume is harmless)."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batches_per_chunk": self.batches_per_chunk}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self.batches_per_chunk = int(state.get("batches_per_chunk", self.batches_per_chunk))

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.device)
        return epoch_permutation(self.num_samples, self.seed, self.epoch).to(self.device)

    def _seeded(self, *parts: int) -> torch.Generator:
        return self._gen.manual_seed(derive_seed(self.seed, self.epoch, *parts))

    def _prepare(self, index: torch.Tensor, chunk: int) -> torch.Tensor:
        """Normalised (and, with an augment, transformed) float images of one chunk."""
        images = self.images[index]
        if self.augment is None:
            x = normalize(images, self.mean, self.std)
        elif isinstance(self.augment, BatchAugment):
            x = self.augment.transform(images, self._seeded(chunk, 2), index=index, epoch=self.epoch)
        else:
            return images  # a plain callable augments whole batches in _finish
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _finish(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        aug = self.augment
        if aug is None or (isinstance(aug, BatchAugment) and not aug.mixes):
            return x, labels
        if isinstance(aug, BatchAugment):
            x, labels = aug.mix(x, labels, self._seeded(step, 3))
        else:
            x, labels = aug(x, labels, self._seeded(step, 3))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, bs, k, total = self._order(), self.batch_size, self.batches_per_chunk, len(self)
        while self.position < total:
            chunk = self.position // k
            first, last = chunk * k, min(chunk * k + k, total)
            index = order[first * bs:last * bs]
            x = self._prepare(index, chunk)
            for step in range(self.position, last):
                lo, hi = (step - first) * bs, (step - first + 1) * bs
                batch = self._finish(x[lo:hi], self.labels[index[lo:hi]], step)
                self.position = step + 1
                yield batch
        self.epoch, self.position = self.epoch + 1, 0
