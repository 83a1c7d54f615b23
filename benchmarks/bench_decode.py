"""Decode throughput of the streaming data path: images/s that StreamLoader's workers deliver.

Reads an image folder (default: the first --limit images of ../shared/data/cifar10-jpg.tar.gz,
unpacked once into a temporary folder) through `cnnzoo.data.stream.StreamLoader` with 1, 2, ...
worker processes: decode (Pillow), resize the short side and centre-crop to --image-size,
collate, normalise. No model. Each count runs --repeats times, interleaved with the others;
the median is reported, after one untimed epoch that starts the workers' page cache.

    python benchmarks/bench_decode.py --workers 1,2 --image-size 224
    python benchmarks/bench_decode.py --workers 1,2,16 --data /data/imagenet/train --image-size 224
"""

from __future__ import annotations

import argparse
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from cnnzoo.data.stream import StreamLoader, open_stream

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="an image folder, or a .tar(.gz) of one to unpack")
    p.add_argument("--limit", type=int, default=2000, help="images unpacked from an archive")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,16")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


def unpack(archive: Path, limit: int, into: Path, classes: int = 10) -> Path:
    """About `limit` JPEGs of `archive`'s train/ part, limit/classes from each class folder, as a folder."""
    taken: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and "train" in parts[:-2] and member.name.lower().endswith(".jpg")):
                continue
            label = parts[-2]
            if taken.get(label, 0) < limit // classes:
                tar.extract(member, into, filter="data")
                taken[label] = taken.get(label, 0) + 1
                if sum(taken.values()) >= limit:
                    break
    return next(p for p in into.rglob("train") if p.is_dir())


def epoch_rate(folder: Path, workers: int, args: argparse.Namespace) -> float:
    bundle = open_stream(str(folder), image_size=args.image_size, val_fraction=0.0, seed=0, num_workers=2)
    loader = StreamLoader(bundle.train, args.batch_size, num_workers=workers, shuffle=True, augment=None,
                          mean=bundle.mean, std=bundle.std, device="cpu")
    start = time.perf_counter()
    images = sum(len(y) for _, y in loader)
    return images / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data)
        if not data.exists():
            raise SystemExit(f"{data} does not exist; pass --data FOLDER_OR_ARCHIVE")
        folder = unpack(data, args.limit, Path(tmp)) if data.is_file() else data
        epoch_rate(folder, counts[0], args)  # untimed: the page cache
        rates = {n: [] for n in counts}
        for _ in range(args.repeats):
            for n in counts:
                rates[n].append(epoch_rate(folder, n, args))
    print(f"{folder.name}: decode + resize + centre-crop to {args.image_size} px, batch {args.batch_size}, "
          f"median of {args.repeats}")
    base = statistics.median(rates[counts[0]]) / counts[0]
    for n in counts:
        rate = statistics.median(rates[n])
        print(f"{n:>3} worker(s): {rate:8.0f} images/s  ({rate / (n * base):.2f} of linear)")


if __name__ == "__main__":
    main()
