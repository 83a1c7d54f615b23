"""Transfer learning measured on CIFAR-10 (JPEG): a backbone trained on 5 classes, a new head on the other 5.

Reads ../shared/data/cifar10-jpg.tar.gz in place and writes two image folders under a temporary
directory (never into the repository):
  A = airplane, automobile, bird, cat, deer;   B = dog, frog, horse, ship, truck.
Then, through the `cnnzoo` command as a user would run it (CPU, OMP_NUM_THREADS threads,
OMP_WAIT_POLICY=PASSIVE):
  1. train resnet20_cifar on A from scratch;
  2. on B, with the same epochs and recipe for each:
     - head only, backbone from A      (--init-from A/best.pt --freeze-backbone)
     - head only, backbone random      (--init-from random.pt --freeze-backbone: a seeded fresh model)
     - full fine-tuning from A         (--init-from A/best.pt)
     - from scratch, all layers        (reference)
Each run selects best.pt on its validation split (10% of its training images) and tests it
once on B's (or A's) test split. Prints a markdown table with test accuracy, wall and CPU time.

    .venv/bin/python benchmarks/bench_transfer.py [--per-class-a 1500] [--per-class-b 300] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
CLASSES_A = ("airplane", "automobile", "bird", "cat", "deer")
CLASSES_B = ("dog", "frog", "horse", "ship", "truck")


def make_folders(tar_path: Path, root: Path, per_class_train: dict[str, int], per_class_test: int) -> None:
    """root/A and root/B, each train/<class>/ (the first N training images of the class) and
    test/<class>/ (the first `per_class_test` test images)."""
    group = {c: "A" for c in CLASSES_A} | {c: "B" for c in CLASSES_B}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or not parts[2].endswith(".jpg") or parts[1] not in group:
                continue
            split, cls, name = parts
            limit = per_class_train[group[cls]] if split == "train" else per_class_test
            if int(name.removesuffix(".jpg")) >= limit:
                continue
            out = root / group[cls] / split / cls
            out.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(tar.extractfile(member).read())


def cnnzoo(args: list[str], env: dict) -> tuple[float, float]:
    """Run `cnnzoo ...`; (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnzoo", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"cnnzoo {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("weights:", "initialised", "model:", "data:", "test (")):
            print("   ", line, flush=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def test_acc(run_dir: Path) -> tuple[float, int]:
    result = json.loads((run_dir / "test_metrics.json").read_text())
    return result["test"]["acc"], result["epoch"]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class-a", type=int, default=1500, help="training images per class of A")
    p.add_argument("--per-class-b", type=int, default=300, help="training images per class of B")
    p.add_argument("--per-class-test", type=int, default=1000, help="test images per class (1000 = all)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr-b", type=float, default=0.05, help="learning rate of the four runs on B")
    p.add_argument("--work", help="folder for the data and runs (default: a temporary folder)")
    args = p.parse_args()
    if not TAR.is_file():
        print(f"skipped: {TAR} not found (the shared CIFAR-10 (JPEG) archive; see ../shared/README.md)")
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE",
           "MKL_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}
    work = Path(args.work or tempfile.mkdtemp(prefix="cnnzoo-transfer-"))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} threads; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    data = work / "data"
    if not (data / "B" / "test").is_dir():
        make_folders(TAR, data, {"A": args.per_class_a, "B": args.per_class_b}, args.per_class_test)
    print(f"data in {data}: A {5 * args.per_class_a} train, B {5 * args.per_class_b} train, "
          f"{5 * args.per_class_test} test images each (CIFAR-10 (JPEG))", flush=True)

    common = ["--model", "resnet20_cifar", "--epochs", str(args.epochs), "--batch-size", "128", "--sched", "cosine",
              "--device", "cpu", "--progress", "off", "--seed", "0", "--set", "runtime.tensorboard=false"]
    runs = work / "runs"
    rows = []
    print("A: resnet20_cifar from scratch", flush=True)
    wall, cpu = cnnzoo(["train", *common, "--data", str(data / "A"), "--lr", "0.1", "--out", str(runs / "A")], env)
    acc, epoch = test_acc(runs / "A")
    rows.append(("A (5 classes): backbone from scratch", "all", acc, epoch, wall, cpu))

    # a seeded, never-trained network with B's 5-class head, for the random frozen baseline
    random_pt = work / "random.pt"
    subprocess.run([sys.executable, "-c", "import torch, cnnzoo; torch.manual_seed(0); "
                    f"torch.save(cnnzoo.create_model('resnet20_cifar', num_classes=5).state_dict(), {str(random_pt)!r})"],
                   env=env, check=True)
    best_a = str(runs / "A" / "best.pt")
    b = ["train", *common, "--data", str(data / "B"), "--lr", str(args.lr_b)]
    for label, trains, extra, name in (
        ("B: head only, backbone from A", "head", ["--init-from", best_a, "--freeze-backbone"], "B-head-A"),
        ("B: head only, random backbone", "head", ["--init-from", str(random_pt), "--freeze-backbone"], "B-head-random"),
        ("B: full fine-tuning from A", "all", ["--init-from", best_a], "B-full-A"),
        ("B: from scratch (reference)", "all", [], "B-scratch"),
    ):
        print(label, flush=True)
        wall, cpu = cnnzoo([*b, *extra, "--out", str(runs / name)], env)
        acc, epoch = test_acc(runs / name)
        rows.append((label, trains, acc, epoch, wall, cpu))

    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(f"resnet20_cifar, {args.epochs} epochs each, batch 128, SGD cosine (lr 0.1 on A, {args.lr_b} on B), "
          f"CPU fp32, {args.threads} threads\n")
    print("| run | trains | test acc. | best epoch | wall | CPU |")
    print("|---|---|---:|---:|---:|---:|")
    for label, trains, acc, epoch, wall, cpu in rows:
        print(f"| {label} | {trains} | {100 * acc:.2f}% | {epoch} | {wall:.0f} s | {cpu:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
