"""fp32 vs bf16 autocast, NCHW vs channels_last, measured side by side in one run.

    python benchmarks/bench_precision.py [--device cpu|cuda] [--threads N] [--models resnet20_cifar,resnet18_cifar]

Prints one line per (model, inference/training step, memory format) with the median time of
each precision and the ratio; this is what `--amp auto` and `--channels-last` defaults rest on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cnnzoo


def step_fn(model: torch.nn.Module, x: torch.Tensor, train: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        if train:
            opt.zero_grad(set_to_none=True)
            model(x).float().mean().backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)
    return step


def median_time(step, device: str, repeats: int) -> float:
    step()  # warm-up (kernel selection, weight reorders)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    parser.add_argument("--models", default="resnet20_cifar,resnet18_cifar")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}")
    for name in args.models.split(","):
        model = cnnzoo.create_model(name).to(args.device)
        x = torch.randn(args.batch, *model.default_cfg["input_size"], device=args.device)
        for train in (False, True):
            for channels_last in (False, True):
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
                times = {}
                for precision in ("fp32", "bf16"):
                    with torch.autocast(args.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        times[precision] = median_time(step_fn(model, x, train), args.device, args.repeats)
                print(f"{name:16s} {'train' if train else 'infer'}  {'channels_last' if channels_last else 'NCHW':13s} "
                      f"fp32 {times['fp32'] * 1e3:8.1f} ms  bf16 {times['bf16'] * 1e3:8.1f} ms  "
                      f"bf16 speed-up {times['fp32'] / times['bf16']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
