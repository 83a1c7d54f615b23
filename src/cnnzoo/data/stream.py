"""Streaming image folders: batches decoded by DataLoader worker processes, for data too large to decode into memory.

The in-memory path decodes a whole dataset into one uint8 tensor: CIFAR-10 at 224 px would take
about 7.5 GB and ImageNet about 450 GB. For an image folder whose decoded size would pass a
memory budget (or when asked), `open_stream` lists the files instead and `StreamLoader` decodes
each batch in `torch.utils.data.DataLoader` worker processes (decode, resize the short side,
centre-crop: the same `decode_image` and sizes as the in-memory path), then feeds the batch to
the same device-side augmentation as `DeviceLoader`, of which it is a subclass. So the order
(the seeded per-epoch permutation, split between processes by `rank_share`), the augmentation
draws and the resumable position are those of the in-memory loader: on the CPU the two give
identical batches.

Mean and standard deviation come from a seeded sample of `STATS_SAMPLE` training images, not from
all of them; the channel count from that sample too (grey images are repeated to 3 channels
when the sample holds colour).
"""

from __future__ import annotations

import hashlib
import logging
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .bundle import DatasetBundle, channel_stats, stratified_split
from .decode import decode_chunk, decode_many, match_channels
from .folder import _assign, is_archive, layout, list_folder
from .loader import DeviceLoader

log = logging.getLogger(__name__)
STATS_SAMPLE = 1000  # training images decoded to estimate the normalisation statistics
LARGE_IMAGE_MIN = 64  # as in datasets.py: larger images get the random-resized-crop pipeline
TRAIN_RESIZE_RATIO = 256 / 224
TEST_FRACTION, TEST_SEED = 0.2, 0


@dataclass
class FileSplit:
    """The files of one split and their labels; decoded `size` px square, centre-cropped to `crop`."""

    files: list[str]
    labels: torch.Tensor
    size: int
    crop: int
    channels: int = 3

    def __len__(self) -> int:
        return len(self.files)


def decoded_bytes(path: Path, image_size: int | None) -> tuple[int, int]:
    """(number of images, bytes their decoded uint8 form would take at image_size, 3 channels)."""
    files = list_folder(path).files
    side = image_size or 0
    if image_size and image_size > LARGE_IMAGE_MIN:
        side = round(image_size * TRAIN_RESIZE_RATIO)
    return len(files), len(files) * 3 * side * side


def should_stream(spec: str, mode: str, budget_gb: float, image_size: int | None) -> bool:
    """Whether `spec` streams: mode "on", or "auto" for a folder whose decoded images pass the budget."""
    path = Path(spec).expanduser()
    if mode == "off":
        return False
    folder = path.is_dir()
    if mode == "on":
        if not folder:
            why = "an archive cannot be read out of order; unpack it" if path.is_file() and is_archive(path) else \
                "only image folders stream"
            raise DataError(f"data.stream=on: {spec} is not a folder of images ({why}), or use --stream off")
        if not image_size:
            raise DataError("data.stream=on needs data.image_size (--image-size): streamed images are resized as "
                            "they are read")
        return True
    if not folder or not image_size:
        return False
    n, size = decoded_bytes(path, image_size)
    if size <= budget_gb * 2**30:
        return False
    log.info("%s: %d images would take %s MB decoded, more than data.memory_budget_gb=%g; streaming them from "
             "disk (--stream off to decode them all into memory)", spec, n, f"{size / 2**20:,.1f}", budget_gb)
    return True


def open_stream(spec: str, *, image_size: int, val_fraction: float, seed: int, num_workers: int) -> DatasetBundle:
    """List an image folder (train/val/test or class folders, as `read_folder` understands them),
    split it as the in-memory path does, and estimate its statistics from a sample: a
    DatasetBundle whose splits are FileSplits (listed, not decoded)."""
    path = Path(spec).expanduser()
    listing = list_folder(path)
    _, splits, classes = layout(listing, str(path))
    names, split_of, labels = _assign(listing, splits, classes)
    files = [str(path / n) for n in names]
    label_t = torch.tensor(labels, dtype=torch.long)
    parts = _split(files, split_of, label_t, val_fraction, seed)
    large = image_size > LARGE_IMAGE_MIN
    decode = round(image_size * TRAIN_RESIZE_RATIO) if large else image_size
    train = FileSplit(*parts["train"], size=decode, crop=decode)
    mean, std, channels = _sample_stats(train, seed, num_workers)
    made = {k: None if v is None else FileSplit(*v, size=decode, crop=image_size if large else decode,
                                                channels=channels) for k, v in parts.items()}
    made["train"].channels = channels
    digest = hashlib.sha256("\n".join(f"{n}\t{(path / n).stat().st_size}\t{(path / n).stat().st_mtime_ns}"
                                      for n in names).encode()).hexdigest()[:16]
    return DatasetBundle(name=f"folder:{path}", classes=classes, train=made["train"], val=made["val"],
                        test=made["test"], mean=mean, std=std, input_size=(channels, image_size, image_size),
                        fingerprint=f"stream-{digest}", large_images=large)


def _split(files: list[str], split_of: list[str], labels: torch.Tensor, val_fraction: float,
           seed: int) -> dict[str, tuple[list[str], torch.Tensor] | None]:
    """train/val/test as (files, labels): the folder's own splits, or carved by the seeded
    stratified split the in-memory path uses (test with a fixed seed, then val with `seed`)."""
    where = np.array(split_of)

    def pick(index) -> tuple[list[str], torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        return [files[i] for i in index.tolist()], labels[index]

    if "all" in set(split_of):
        rest, test = stratified_split(labels, TEST_FRACTION, TEST_SEED)
        keep, val = stratified_split(labels[rest], val_fraction, seed)
        return {"train": pick(rest[keep]), "val": pick(rest[val]), "test": pick(test) if len(test) else None}
    train = torch.from_numpy(np.nonzero(where == "train")[0])
    out = {"test": pick(np.nonzero(where == "test")[0]) if (where == "test").any() else None}
    if (where == "val").any():
        out.update(train=pick(train), val=pick(np.nonzero(where == "val")[0]))
    else:
        keep, val = stratified_split(labels[train], val_fraction, seed)
        out.update(train=pick(train[keep]), val=pick(train[val]))
    return out


def _sample_stats(train: FileSplit, seed: int, num_workers: int) -> tuple[tuple, tuple, int]:
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(train), generator=gen)[:STATS_SAMPLE].tolist()
    arrays, reasons = decode_many([(train.files[i], None) for i in chosen], size=train.size, num_workers=num_workers)
    good = [a for a in arrays if a is not None]
    if not good:
        raise DataError(f"none of {len(chosen)} sampled training images could be read (first: "
                        f"{train.files[chosen[0]]}: {reasons[0]})")
    channels = max(a.shape[2] for a in good)
    stacked = torch.from_numpy(np.stack([match_channels(a, channels) for a in good])).permute(0, 3, 1, 2)
    mean, std = channel_stats(stacked)
    return mean, std, channels


class _Decoded(Dataset):
    """Item i of a FileSplit: (uint8 C x H x W image or None, label, failure reason or None)."""

    def __init__(self, split: FileSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        s = self.split
        arrays, reasons = decode_chunk([(s.files[i], None)], s.size)
        if arrays[0] is None:
            return None, int(s.labels[i]), (s.files[i], reasons[0])
        arr = match_channels(arrays[0], s.channels)
        if s.crop != s.size:
            top = (s.size - s.crop) // 2
            arr = arr[top:top + s.crop, top:top + s.crop]
        return torch.from_numpy(np.array(arr)).permute(2, 0, 1), int(s.labels[i]), None  # a writable copy


def _collate(items: Sequence) -> tuple[torch.Tensor | None, torch.Tensor, list]:
    good = [(x, y) for x, y, bad in items if bad is None]
    bad = [b for _, _, b in items if b is not None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, torch.tensor([y for _, y in good], dtype=torch.long), bad


def _quiet_worker(_: int) -> None:
    # the training process handles Ctrl-C/SIGTERM (a checkpoint, then exit); workers only decode
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class StreamLoader(DeviceLoader):
    """DeviceLoader's batches, order, augmentation and position, with each batch decoded from disk
    by `num_workers` DataLoader workers (in this process when 0) instead of sliced from memory.

    `on_bad_image`: "error" stops at the first unreadable file, naming it; "skip" drops it from
    its batch (the batch is one image shorter) and warns. `timeout`: seconds to wait for a batch
    before a stuck worker is an error."""

    def __init__(self, split: FileSplit, batch_size: int, *, num_workers: int = 2, on_bad_image: str = "error",
                 timeout: float = 300.0, **kwargs):
        self.split, self.num_workers, self.on_bad_image, self.timeout = split, num_workers, on_bad_image, timeout
        self.skipped: list[tuple[str, str]] = []
        labels_only = SimpleNamespace(images=torch.empty(0, dtype=torch.uint8), labels=split.labels)
        super().__init__(labels_only, batch_size, batches_per_chunk=1, **kwargs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kind": "stream"}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "stream":
            raise ValueError("this data position belongs to an in-memory loader; resume with --stream off")
        super().load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, bs, total = self._order().cpu(), self.batch_size, len(self)
        batches = [order[s * bs:(s + 1) * bs].tolist() for s in range(self.position, total)]
        workers = {"num_workers": self.num_workers, "timeout": self.timeout, "worker_init_fn": _quiet_worker,
                       "persistent_workers": False} if self.num_workers > 0 else {}
        loader = DataLoader(_Decoded(self.split), batch_sampler=batches, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", **workers)
        for step, (images, labels, bad) in zip(range(self.position, total), loader):
            self._bad(bad)
            if images is None:
                self.position = step + 1
                continue
            x = self._prepare(images.to(self.device, non_blocking=True), step)
            batch = self._finish(x, labels.to(self.device, non_blocking=True), step)
            self.position = step + 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def _bad(self, bad: list) -> None:
        if not bad:
            return
        if self.on_bad_image != "skip":
            raise DataError(f"cannot read image {bad[0][0]}: {bad[0][1]}; fix or remove it, or skip unreadable "
                            "images with --on-bad-image skip")
        for name, reason in bad:
            log.warning("skipped unreadable image %s: %s", name, reason)
        self.skipped += bad


def loader_for(split, batch_size: int, *, num_workers: int, on_bad_image: str, **kwargs) -> DeviceLoader:
    """A StreamLoader for a FileSplit, a DeviceLoader for an in-memory ImageSplit (same keywords)."""
    if isinstance(split, FileSplit):
        return StreamLoader(split, batch_size, num_workers=num_workers, on_bad_image=on_bad_image, **kwargs)
    return DeviceLoader(split, batch_size, **kwargs)


__all__ = ["FileSplit", "StreamLoader", "decoded_bytes", "loader_for", "open_stream", "should_stream"]
