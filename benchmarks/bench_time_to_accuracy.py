"""Time to accuracy on CIFAR-10 (JPEG): cnnzoo's `cifar10_speedrun` recipe against a minimal
plain-PyTorch reference of the same algorithm, in one process, interleaved.

The algorithm is airbench94's (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
arXiv 2404.00498; public code github.com/KellerJordan/cifar10-airbench). The reference below is
written from the paper's description in plain PyTorch, in one screen of code: the same network,
patch-whitening, optimiser, schedule, lookahead, augmentation and test-time augmentation, with a
hand-written batch loop over uint8 tensors. cnnzoo's side is `cnnzoo.engine.train` with the
recipe, exactly what `cnnzoo train --config cifar10_speedrun --epochs E` runs (run directory,
checkpoints, metrics; no report pictures), in the process settings the CLI makes (glibc's malloc
keeps freed memory), which the reference shares. Both read the same decoded uint8 images (decoded
once, before any timing), use the same thread count, and are timed from the call to the end of
the test (wall and process CPU time, all threads).

For each epoch budget E in --epochs the two run one after the other (the order alternating),
so a change in the machine's load hits both. Each (E, implementation) pair is a complete run
with its own schedule: accuracy against time is the curve of final test accuracies. The table
also gives, per budget, cnnzoo's wall time over the reference's; the target is at most 1.1x.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_time_to_accuracy.py \
        --epochs 1,2,4,8 --budget-minutes 120 --threads 2 --out bench-tta

Both run in one precision, `--amp fp32` or `--amp bf16` (default: bf16 autocast on a CPU with bf16
hardware, else fp32), so the ratio compares implementations, not precisions.

Quick check of the script itself (seconds, on the 8x8 digits): --data digits --batch-size 64
--epochs 1,2 --whiten-images 500.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"

# airbench94's hyperparameters (lr and weight decay per 1024 examples of a summed loss)
HYP = {"lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153, "bias_scaler": 64.0, "label_smoothing": 0.2, "whiten_bias_epochs": 3,
           "translate": 2, "lookahead_every": 5, "warmup": 0.23, "start": 0.2, "end": 0.07, "widths": (64, 256, 256), "bn_momentum": 0.4}


# ---------------------------------------------------------------------------- the plain-PyTorch reference


def reference_net(in_chans: int, num_classes: int) -> nn.Sequential:
    def conv(cin: int, cout: int) -> nn.Conv2d:
        layer = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(layer.weight[:min(cin, cout)])
        return layer

    def norm(c: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(c, eps=1e-12, momentum=HYP["bn_momentum"])
        bn.weight.requires_grad_(False)
        return bn

    layers, chs = [nn.Conv2d(in_chans, 8 * in_chans, 2), nn.GELU()], 8 * in_chans
    for width in HYP["widths"]:
        layers += [conv(chs, width), nn.MaxPool2d(2), norm(width), nn.GELU(),
                   conv(width, width), norm(width), nn.GELU()]
        chs = width
    head = nn.Linear(chs, num_classes, bias=False)
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), head, Scale(1 / 9))


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@torch.no_grad()
def whiten(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    k = conv.kernel_size[0]
    patches = images.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * k * k)
    values, vectors = torch.linalg.eigh((patches.T @ patches / len(patches)).double())
    filters = (vectors.flip(1) / (values.flip(0).clamp_min(0) + eps).sqrt()).T.float()
    filters = filters.reshape(-1, images.shape[1], k, k)
    conv.weight.copy_(torch.cat([filters, -filters]))
    conv.bias.zero_()
    conv.weight.requires_grad_(False)


def augment(images: torch.Tensor, epoch: int, flip_base: torch.Tensor, index: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    """Reflect-padded random translation by up to 2 px and the alternating flip."""
    pad = HYP["translate"]
    n, _, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    out = torch.empty_like(images)
    for oy in range(2 * pad + 1):  # one slice per shift, as airbench does
        for ox in range(2 * pad + 1):
            chosen = (dy == oy) & (dx == ox)
            out[chosen] = padded[chosen, :, oy:oy + h, ox:ox + w]
    flips = flip_base[index] ^ bool(epoch % 2)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


def autocast(precision: str):
    """bf16 autocast on the CPU (as cnnzoo's `runtime.amp: bf16`), or nothing for fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def reference_run(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  mean, std, *, epochs: int, batch_size: int, whiten_images: int, seed: int,
                  precision: str = "fp32") -> float:
    """Train and test the reference; returns the test accuracy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1) * 255, torch.tensor(std).view(1, -1, 1, 1) * 255

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - mean_t) / std_t).contiguous(memory_format=torch.channels_last)

    model = reference_net(train_x.shape[1], int(train_y.max()) + 1).to(memory_format=torch.channels_last)
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:whiten_images]
    whiten(model[0], normalize(train_x[pick]))
    steps_per_epoch = len(train_x) // batch_size
    total = steps_per_epoch * epochs
    gain = 1024 * (1 + 1 / (1 - HYP["momentum"]))
    lr = HYP["lr"] / gain * batch_size  # for a mean loss over the batch
    wd = HYP["weight_decay"] / HYP["lr"]
    norms = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters() if p.requires_grad]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in norms)]
    opt = torch.optim.SGD([{"params": others, "lr": lr, "weight_decay": wd},
                           {"params": norms, "lr": lr * HYP["bias_scaler"], "weight_decay": wd / HYP["bias_scaler"]}],
                          momentum=HYP["momentum"], nesterov=True)
    warm = max(1, math.floor(HYP["warmup"] * total))

    def factor(t: int) -> float:
        if t < warm:
            return HYP["start"] + (1 - HYP["start"]) * t / warm
        return 1 + (HYP["end"] - 1) * (t - warm) / max(total - warm, 1)

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    flip_base = torch.rand(len(train_x), generator=gen) < 0.5
    step = 0
    for epoch in range(epochs):
        model[0].bias.requires_grad_(epoch < HYP["whiten_bias_epochs"])
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for b in range(steps_per_epoch):
            index = order[b * batch_size:(b + 1) * batch_size]
            x = augment(normalize(train_x[index]), epoch, flip_base, index, gen)
            with autocast(precision):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), train_y[index], label_smoothing=HYP["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % HYP["lookahead_every"] == 0 or step == total:
                decay = 0.95 ** 5 * (step / total) ** 3 if step % HYP["lookahead_every"] == 0 else 1.0
                with torch.no_grad():
                    for name, value in model.state_dict().items():
                        if name in average:
                            average[name].lerp_(value, 1 - decay)
                            value.copy_(average[name])
    with autocast(precision):
        return reference_test(model, normalize, test_x, test_y, 2 * batch_size)


@torch.no_grad()
def reference_test(model: nn.Module, normalize, test_x: torch.Tensor, test_y: torch.Tensor, batch: int) -> float:
    """Flip-and-translate TTA: probabilities of the image and its mirror (1/4 each) and of the
    image shifted by one pixel both ways, with mirrors (1/8 each)."""
    model.eval()
    correct = 0
    for i in range(0, len(test_x), batch):
        x = normalize(test_x[i:i + batch])
        h, w = x.shape[-2:]
        padded = F.pad(x, (1,) * 4, mode="reflect")
        views = [(x, 0.25), (x.flip(-1), 0.25)]
        for top in (0, 2):
            view = padded[..., top:top + h, top:top + w]
            views += [(view, 0.125), (view.flip(-1), 0.125)]
        probs = sum(weight * model(view).float().softmax(1) for view, weight in views)
        correct += int((probs.argmax(1) == test_y[i:i + batch]).sum())
    return correct / len(test_x)


# ---------------------------------------------------------------------------- cnnzoo's side and the harness


def cnnzoo_run(args: argparse.Namespace, epochs: int, out_dir: Path) -> float:
    from cnnzoo.cli.train import apply_task_defaults
    from cnnzoo.engine.config import (
        config_from_dict,
        find_recipe,
        load_recipe,
        set_key,
        validate,
    )
    from cnnzoo.engine.progress import Progress
    from cnnzoo.engine.task import get_task
    from cnnzoo.engine.trainer import train

    raw = load_recipe(find_recipe("cifar10_speedrun"))
    for key, value in {"data.dataset": str(args.data), "schedule.epochs": epochs, "runtime.out": str(out_dir),
                       "runtime.report": False, "runtime.tensorboard": False, "runtime.threads": args.threads,
                       "runtime.seed": args.seed, "runtime.device": "cpu", "data.batch_size": args.batch_size,
                       "model.whiten_images": args.whiten_images, "data.cache_dir": args.cache_dir,
                       "runtime.amp": "bf16" if args.amp == "bf16" else "off"}.items():
        if value is not None:
            set_key(raw, key, value)
    apply_task_defaults(raw, get_task("classify"))
    cfg = validate(config_from_dict(raw))
    result = train(cfg, progress=Progress("off"))
    return float(result.test["acc"])


def timed(fn, *args, **kwargs) -> tuple[float, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    acc = fn(*args, **kwargs)
    return acc, time.perf_counter() - wall, time.process_time() - cpu


def load_data(args: argparse.Namespace):
    from cnnzoo.data import load_dataset

    bundle = load_dataset(str(args.data), val_fraction=0.0, cache_dir=args.cache_dir)
    return bundle.train.images, bundle.train.labels, bundle.test.images, bundle.test.labels, bundle.mean, bundle.std


def time_to(points: list[dict], target: float, clock: str) -> float | None:
    """Seconds to reach `target` accuracy, linearly interpolated between finished runs."""
    points = sorted(points, key=lambda p: p[clock])
    before = (0.0, 0.0)
    for p in points:
        if p["acc"] >= target:
            (t0, a0), t1 = before, p[clock]
            return t0 + (t1 - t0) * (target - a0) / max(p["acc"] - a0, 1e-9)
        before = (p[clock], p["acc"])
    return None


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [(f"date {time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, {args.threads} threads, {args.amp} for both, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch {torch.__version__}"),
             "", "| epochs | implementation | test acc. | wall (s) | CPU (s) | load avg. (1 min) at start |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["epochs"], r["impl"])):
        lines.append(f"| {r['epochs']} | {r['impl']} | {100 * r['acc']:.2f}% | {r['wall']:.0f} | {r['cpu']:.0f} | "
                     f"{r['load']:.2f} |")
    lines.append("")
    for clock in ("wall", "cpu"):
        ratios = [c[clock] / p[clock] for c in results for p in results
                  if c["impl"] == "cnnzoo" and p["impl"] == "reference" and c["epochs"] == p["epochs"]]
        if ratios:
            lines.append(f"cnnzoo {clock} time / reference, same epochs: median {statistics.median(ratios):.3f} "
                         f"(per budget: {', '.join(f'{x:.3f}' for x in ratios)})")
    ours = [r for r in results if r["impl"] == "cnnzoo"]
    ref = [r for r in results if r["impl"] == "reference"]
    if ours and ref:
        target = min(max(r["acc"] for r in ours), max(r["acc"] for r in ref))
        t_ours, t_ref = time_to(ours, target, "wall"), time_to(ref, target, "wall")
        if t_ours and t_ref:
            lines.append(f"time to {100 * target:.2f}% (the best accuracy both reached): cnnzoo {t_ours:.0f} s, "
                         f"reference {t_ref:.0f} s, ratio {t_ours / t_ref:.3f} (target <= 1.1)")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(CIFAR_JPEG), help="dataset (default: ../shared CIFAR-10 JPEG archive)")
    p.add_argument("--epochs", default="1,2,4,8", help="comma-separated epoch budgets, one pair of runs each")
    p.add_argument("--budget-minutes", type=float, default=120.0,
                   help="start no further pair of runs after this many minutes")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: the CPUs allowed)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--whiten-images", type=int, default=5000, help="training images the whitening is computed from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="cnnzoo's dataset cache (default: ~/.cache/cnnzoo)")
    p.add_argument("--out", default=None, help="folder for results.json, table.md and curves.png (default: temp)")
    p.add_argument("--amp", choices=("fp32", "bf16"), default=None,
                   help="precision of both implementations (default: bf16 autocast on a CPU with bf16 "
                        "hardware, else fp32); one precision for both keeps the comparison like for like")
    args = p.parse_args(argv)
    from cnnzoo._cpu import cpu_bf16_hardware
    from cnnzoo.engine.runtime import keep_freed_memory, set_threads

    args.threads = set_threads(args.threads)
    # `cnnzoo train` sets glibc's malloc to keep freed memory at start-up (a process-wide setting, so
    # the reference gets it too); without it cnnzoo's side faulted in 5M pages more per 10 steps
    keep_freed_memory()
    args.amp = args.amp or ("bf16" if cpu_bf16_hardware() else "fp32")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-tta-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"decoding / loading {args.data} (not timed) ...", file=sys.stderr)
    train_x, train_y, test_x, test_y, mean, std = load_data(args)
    started, results = time.perf_counter(), []
    for i, epochs in enumerate(int(e) for e in args.epochs.split(",")):
        if (time.perf_counter() - started) / 60 > args.budget_minutes:
            print(f"budget of {args.budget_minutes} min spent: stopping before {epochs} epochs", file=sys.stderr)
            break
        runs = [("cnnzoo", lambda e=epochs: cnnzoo_run(args, e, out / f"cnnzoo-{e}ep")),
                ("reference", lambda e=epochs: reference_run(train_x, train_y, test_x, test_y, mean, std, epochs=e,
                                                             batch_size=args.batch_size,
                                                             whiten_images=args.whiten_images, seed=args.seed,
                                                             precision=args.amp))]
        for impl, run in (runs if i % 2 == 0 else runs[::-1]):
            load = os.getloadavg()[0]
            acc, wall, cpu = timed(run)
            results.append({"impl": impl, "epochs": epochs, "acc": acc, "wall": wall, "cpu": cpu, "load": load})
            print(f"{impl} {epochs} epoch(s): test {100 * acc:.2f}%, {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"(load {load:.2f})", file=sys.stderr)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = report(results, args)
    (out / "table.md").write_text(table + "\n")
    print(table)
    from cnnzoo.errors import CnnzooError
    from cnnzoo.viz import plot_accuracy_vs_time

    try:
        series = {impl: {k: [r[k] for r in results if r["impl"] == impl] for k in ("wall", "cpu", "acc")}
                  for impl in ("cnnzoo", "reference")}
        plot = plot_accuracy_vs_time(series, out / "curves.png", title="cifar10_speedrun vs plain PyTorch")
        print(f"curves: {plot.path}", file=sys.stderr)
    except CnnzooError as err:  # no matplotlib (MatplotlibMissing): the table is the result
        print(f"no curves: {err}", file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
