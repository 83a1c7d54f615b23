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


def rank_share(order: torch.Tensor, rank: int, world_size: int, *, pad: bool) -> torch.Tensor:
    """Process `rank`'s part of an epoch's order, by torch's DistributedSampler rule: with `pad`,
    the order is extended by its own first items to a multiple of `world_size` (so every process
    gets ceil(n / world) samples and a few samples are seen twice per epoch); without, it is cut to
    a multiple (floor(n / world) each, a few samples unseen this epoch). Process r takes items
    r, r + world, r + 2 world, ...: the union of the processes' k-th batches of b is then the k-th
    batch of b x world of the one-process order."""
    n = order.numel()
    if pad:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            order = torch.cat([order, order.repeat(math.ceil((total - n) / max(n, 1)))[:total - n]])
    else:
        order = order[:n - n % world_size]
    return order[rank::world_size]


def eval_share(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Process `rank`'s part of an evaluated split: every sample exactly once over all processes."""
    return torch.arange(n)[rank::world_size]


CHUNK_BYTES = 256 << 20  # augmented float32 images prepared at once on an accelerator


def check_world_size(state: dict, world_size: int) -> None:
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise ValueError(f"this data position was saved by {saved} process(es) and cannot continue with {world_size}")


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
        self.rank, self.world_size, self.train_share = 0, 1, True
        self._gen = torch.Generator(device=self.device)

    def shard(self, rank: int, world_size: int, *, train: bool) -> None:
        """Serve only process `rank`'s share (`rank_share` for training, padded to equal shares;
        `eval_share` for evaluation) in batches of batch_size / world_size (rounded up for evaluation)."""
        if world_size <= 1:
            return
        if train and self.batch_size % world_size:
            raise ValueError(f"batch size {self.batch_size} does not divide among {world_size} processes")
        self.rank, self.world_size, self.train_share = int(rank), int(world_size), train
        self.batch_size = self.batch_size // world_size if train else math.ceil(self.batch_size / world_size)

    def _auto_chunk(self) -> int:
        if self.device.type == "cpu":
            return 1
        batch_bytes = self.batch_size * self.images[0].numel() * 4
        return max(1, CHUNK_BYTES // max(batch_bytes, 1))

    @property
    def num_samples(self) -> int:
        """Samples this process serves per epoch (all of them for one process)."""
        n, world = int(self.labels.shape[0]), self.world_size
        if world == 1:
            return n
        if not self.train_share:
            return len(range(self.rank, n, world))
        return n // world if self.drop_last else math.ceil(n / world)

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
                "batches_per_chunk": self.batches_per_chunk, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        check_world_size(state, self.world_size)
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self.batches_per_chunk = int(state.get("batches_per_chunk", self.batches_per_chunk))

    def _order(self) -> torch.Tensor:
        n = int(self.labels.shape[0])
        if self.world_size > 1 and not self.train_share:
            return eval_share(n, self.rank, self.world_size).to(self.device)
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = rank_share(order, self.rank, self.world_size, pad=not self.drop_last)
        return order.to(self.device)

    def _seeded(self, *parts: int) -> torch.Generator:
        # each process draws its own augmentations; one process keeps the historical stream
        rank = (self.rank, self.world_size) if self.world_size > 1 else ()
        return self._gen.manual_seed(derive_seed(self.seed, self.epoch, *parts, *rank))

    def _prepare(self, images: torch.Tensor, chunk: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised (and, with an augment, transformed) float images of one chunk of uint8 images;
        `index`, their positions in the split, drives alternating flips (None: random flips)."""
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
            x = self._prepare(self.images[index], chunk, index)
            for step in range(self.position, last):
                lo, hi = (step - first) * bs, (step - first + 1) * bs
                batch = self._finish(x[lo:hi], self.labels[index[lo:hi]], step)
                self.position = step + 1
                yield batch
        self.epoch, self.position = self.epoch + 1, 0
