"""cnnzoo models against their torchvision twins at fp32 eager, batch 1, interleaved.

Usage: python benchmarks/bench_twins.py [--rounds 5] [--threads 2] [NAME ...]
Needs the `reference` extra (torchvision). Prints, per pair, the median of the per-round ratios
torchvision time / cnnzoo time (above 1: cnnzoo is faster) and the CPU time per call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _references import torchvision_module
from torch.utils import benchmark

from cnnzoo import create_model

torchvision = torchvision_module()

TWINS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "densenet121", "vgg11", "googlenet",
         "inception_v3", "resnext50_32x4d"]


def timed(model: torch.nn.Module, x: torch.Tensor, number: int) -> tuple[float, float]:
    timer = benchmark.Timer(stmt="run()", globals={"run": lambda: model(x)}, num_threads=torch.get_num_threads())
    start = time.process_time()
    with torch.no_grad():
        wall = timer.timeit(number).mean
    return wall, (time.process_time() - start) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=TWINS, help="models with a torchvision twin of the same name")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--number", type=int, default=3, help="calls per timed block")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':20s} {'input':>9s} {'cnnzoo ms':>10s} {'tv ms':>8s} {'tv/cnnzoo':>10s} {'cpu ms':>8s}")
    for name in args.names:
        ours = create_model(name).eval()
        theirs = getattr(torchvision.models, name)(**({"aux_logits": False, "init_weights": False}
                                                       if name in ("googlenet", "inception_v3") else {})).eval()
        size = tuple(ours.default_cfg["input_size"])
        x = torch.randn(1, *size)
        with torch.no_grad():
            for _ in range(2):  # warm-up, not counted
                ours(x), theirs(x)
        ratios, mine, cpu, tv = [], [], [], []
        for _ in range(args.rounds):
            a, a_cpu = timed(ours, x, args.number)
            b, _ = timed(theirs, x, args.number)
            ratios.append(b / a)
            mine.append(a)
            cpu.append(a_cpu)
            tv.append(b)
        print(f"{name:20s} {'x'.join(map(str, size)):>9s} {1e3 * statistics.median(mine):10.1f} "
              f"{1e3 * statistics.median(tv):8.1f} {statistics.median(ratios):9.2f}x {1e3 * statistics.median(cpu):8.1f}")


if __name__ == "__main__":
    main()
