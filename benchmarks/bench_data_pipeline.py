"""Data-pipeline benchmark: cnnzoo's device-resident pipeline against the common DataLoader one.

On ResNet-20 (CIFAR) and CIFAR-10 (JPEG) from ../shared/data/cifar10-jpg.tar.gz it measures,
in one run and for fp32 and for channels_last + bf16 autocast:
- ours:     training steps fed by DeviceLoader + BatchAugment (crop pad 4 + flip, on the device);
- model:    the same steps on one fixed, already-augmented batch: the pure model-step time;
- common:   the same steps fed by torch.utils.data.DataLoader (2 workers) over the JPEG files,
            with per-sample PIL random crop (pad 4) + flip and numpy normalisation, i.e. what
            torchvision's ImageFolder + RandomCrop + RandomHorizontalFlip + ToTensor + Normalize do;
and the loaders alone (no model); "loader/step" is our loader's time alone over the model step's,
a steadier estimate of the data share on a noisy machine. Times are per batch after warm-up batches (DataLoader worker
start-up excluded), the median of interleaved repeats, extrapolated to one epoch of the
45,000-image training split (351 batches of 128).

    python benchmarks/bench_data_pipeline.py --limit-batches 40
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import cnnzoo
from cnnzoo.data import BatchAugment, DeviceLoader, load_dataset

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-batches", type=int, default=40, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="each measurement is the median of this many")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the common pipeline")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=None, help="dataset cache (default ~/.cache/cnnzoo)")
    p.add_argument("--fresh-cache", action="store_true", help="decode into an empty cache to time the first load")
    p.add_argument("--decode-workers", default="2", help="worker processes for the first load, e.g. 1,2,4")
    p.add_argument("--modes", default="fp32,cl_bf16")
    p.add_argument("--steps", default="eager", help="eager and/or graphs (CUDA graphs of forward+backward, CUDA only)")
    return p.parse_args()


# ---------- the common pipeline ----------

class JpegFolder(torch.utils.data.Dataset):
    """ImageFolder + RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, per sample."""

    def __init__(self, files: list[tuple[str, int]], mean, std, pad: int = 4):
        self.files, self.pad = files, pad
        self.mean = np.array(mean, np.float32).reshape(1, 1, -1)
        self.std = np.array(std, np.float32).reshape(1, 1, -1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path, label = self.files[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
        w, h = img.size
        img = ImageOps.expand(img, self.pad, fill=0)
        x0, y0 = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
        img = img.crop((x0, y0, x0 + w, y0 + h))
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = (np.asarray(img, np.float32) / 255 - self.mean) / self.std
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), label


def extract_train_files(archive: Path, dest: Path) -> list[tuple[str, int]]:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    train = dest / "train"
    classes = sorted(p.name for p in train.iterdir())
    return [(str(f), i) for i, c in enumerate(classes) for f in sorted((train / c).iterdir())]


def common_loader(files, mean, std, args, device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(JpegFolder(files, mean, std), batch_size=args.batch_size, shuffle=True,
                                       num_workers=args.workers, pin_memory=device.type == "cuda",
                                       persistent_workers=args.workers > 0, drop_last=True)


# ---------- timing ----------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_model(args, device, channels_last: bool, amp: bool, graphs: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cnnzoo.create_model(args.model, num_classes=10, in_chans=3).to(device)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    model.train()
    if graphs:  # replays forward and backward as two CUDA graphs: no per-layer launch overhead
        sample = torch.randn(args.batch_size, 3, 32, 32, device=device)
        sample = sample.contiguous(memory_format=torch.channels_last) if channels_last else sample
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            model = torch.cuda.make_graphed_callables(model, (sample,))
    return model


def make_step(model, device, channels_last: bool, amp: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(batches, step, warmup: int, n: int, device) -> float:
    """Seconds per batch over `n` batches after `warmup` ones (step=None: only fetch the batch)."""
    it = iter(batches)
    for _ in range(warmup):
        x, y = next(it)
        step and step(x, y)
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        x, y = next(it)
        if step:
            step(x, y)
    sync(device)
    return (time.perf_counter() - start) / n


def repeat_batch(x, y):
    while True:
        yield x, y


def measure(res: dict, key: str, batches_fn, step, args, device) -> None:
    res.setdefault(key, []).append(timed(batches_fn(), step, args.warmup, args.limit_batches, device))


def run_mode(mode: str, graphs: bool, bundle, files, args, device) -> dict:
    channels_last = amp = mode == "cl_bf16"
    model = build_model(args, device, channels_last, amp, graphs)
    step = make_step(model, device, channels_last, amp)
    aug = BatchAugment(mean=bundle.mean, std=bundle.std, crop_padding=4, hflip=True)
    ours = DeviceLoader(bundle.train, args.batch_size, shuffle=True, device=device, augment=aug, mean=bundle.mean,
                        std=bundle.std, drop_last=True, channels_last=channels_last)
    if len(ours) < args.warmup + args.limit_batches:
        raise SystemExit(f"--limit-batches + --warmup exceed the {len(ours)} batches of an epoch")
    common = common_loader(files, bundle.mean, bundle.std, args, device)
    fixed = next(iter(ours))

    def next_epoch():
        ours.set_epoch(ours.epoch + 1)
        return ours

    res: dict = {}
    for _ in range(args.repeats):  # interleaved, so drifts in clocks or load hit every variant alike
        measure(res, "ours", next_epoch, step, args, device)
        measure(res, "model", lambda: repeat_batch(*fixed), step, args, device)
        measure(res, "ours_loader", next_epoch, None, args, device)
        measure(res, "common", lambda: common, step, args, device)
        measure(res, "common_loader", lambda: common, None, args, device)
    out = {k: statistics.median(v) for k, v in res.items()}
    out["batches_per_epoch"] = len(ours)
    return out


# ---------- report ----------

def _images_per_s(batch_size: int, seconds: float) -> str:
    return f"{batch_size / seconds:,.0f} img/s"


def report(results: dict, args, device, load: dict) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\ndevice {device} ({name}), model {args.model}, batch {args.batch_size}, {args.limit_batches} timed "
          f"batches after {args.warmup} warm-up, median of {args.repeats}, common pipeline: {args.workers} workers")
    first = "decode + cache write" if not load["first_cached"] else "already cached"
    firsts = ", ".join(f"{t:.1f} s with {w} worker{'s' * (w != 1)}" for w, t in load["first"].items())
    print(f"dataset load: first {firsts} ({first}); cached {load['cached']:.2f} s")
    head = ("mode", "ours epoch", "model-only", "data share", "loader/step", "common epoch", "speed-up",
            "ours loader", "common loader")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for mode, r in results.items():
        n = r["batches_per_epoch"]
        share = max(0.0, 1 - r["model"] / r["ours"])
        cells = (mode, f"{r['ours'] * n:.1f} s", f"{r['model'] * n:.1f} s", f"{share:.1%}",
                 f"{r['ours_loader'] / r['model']:.1%}", f"{r['common'] * n:.1f} s",
                 f"{r['common'] / r['ours']:.2f}x", _images_per_s(args.batch_size, r["ours_loader"]),
                 _images_per_s(args.batch_size, r["common_loader"]))
        print("| " + " | ".join(cells) + " |")
    for kind in args.steps.split(","):
        a, b = results.get(f"fp32/{kind}"), results.get(f"cl_bf16/{kind}")
        if a and b:
            print(f"{kind}: channels_last + bf16 vs fp32: ours {a['ours'] / b['ours']:.2f}x, "
                  f"model-only {a['model'] / b['model']:.2f}x, common {a['common'] / b['common']:.2f}x")


def load_times(args) -> tuple[object, dict]:
    """First load (decode + cache write; into a fresh cache per worker count with --fresh-cache), then cached."""
    load = {"first": {}}
    for workers in map(int, args.decode_workers.split(",")):
        cache = tempfile.mkdtemp(prefix="cnnzoo-bench-cache-") if args.fresh_cache else args.cache_dir
        start = time.perf_counter()
        bundle = load_dataset(args.data, cache_dir=cache, num_workers=workers)
        load["first"][workers] = time.perf_counter() - start
        load["first_cached"] = bundle.from_cache
        start = time.perf_counter()
        bundle = load_dataset(args.data, cache_dir=cache)
        load["cached"] = time.perf_counter() - start
        if args.fresh_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return bundle, load


def main() -> None:
    args = parse_args()
    # make_graphed_callables' side-stream warm-up leaves this harmless autograd notice
    warnings.filterwarnings("ignore", "The AccumulateGrad node's stream")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.model not in cnnzoo.list_models():
        print(f"{args.model} is not registered yet; using lenet5_relu")
        args.model = "lenet5_relu"
    bundle, load = load_times(args)
    print(bundle.describe())
    with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-jpg-") as tmp:
        files = extract_train_files(Path(args.data), Path(tmp))
        results = {f"{mode}/{kind}": run_mode(mode, kind == "graphs", bundle, files, args, device)
                   for kind in args.steps.split(",") for mode in args.modes.split(",")}
    report(results, args, device, load)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
