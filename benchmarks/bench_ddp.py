"""Data-parallel scaling benchmark: training images/s with 1 and N processes, and where a step's time goes.

Each process count runs the same training steps (the model on random images of its input size,
the global batch split between the processes, DistributedDataParallel over gloo on the CPU or
NCCL on CUDA, one GPU per process). Per step it times the forward+backward alone (compute, no
gradient synchronisation, under `no_sync`), the all-reduce of a buffer the size of the gradients,
and the whole DDP step (compute + all-reduce, which DDP overlaps with the backward). Reported:
images/s of the whole step, scaling efficiency = images/s(N) / (N x images/s(1)), and the
compute and all-reduce shares. Medians over the timed steps, after warm-up steps.

    python benchmarks/bench_ddp.py --model resnet20_cifar --batch-size 64 --procs 1,2 --threads 1
    python benchmarks/bench_ddp.py --device cuda --procs 1          # a GPU machine, default settings
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from cnnzoo import create_model, model_info


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20_cifar", help="registered model name")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split between the processes)")
    p.add_argument("--procs", default="1,2", help="process counts to compare, e.g. 1,2")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def worker(rank: int, world: int, port: int, args: argparse.Namespace, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10).to(device, memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    per = args.batch_size // world
    x = torch.randn(per, *model_info(args.model)["input_size"], device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (per,), device=device)
    grads = torch.zeros(sum(p.numel() for p in model.parameters()), device=device)

    def step() -> None:
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def compute() -> None:
        with ddp.no_sync():
            F.cross_entropy(ddp(x), y).backward()
        opt.zero_grad(set_to_none=True)

    times = {"step": [], "compute": [], "allreduce": []}
    for i in range(args.warmup + args.steps):
        sample = {"step": timed(step, device), "compute": timed(compute, device),
                  "allreduce": timed(lambda: dist.all_reduce(grads), device)}
        if i >= args.warmup:
            for key, value in sample.items():
                times[key].append(value)
    if rank == 0:
        results.put({k: statistics.median(v) for k, v in times.items()})
    dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = results.get(timeout=1800)
    for p in procs:
        p.join()
    return out


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.procs.split(",")]
    print(f"{args.model}, global batch {args.batch_size}, {args.device}, {args.threads} thread(s) per process, "
          f"median of {args.steps} steps after {args.warmup}")
    print(f"{'procs':>5}  {'step ms':>8}  {'img/s':>8}  {'efficiency':>10}  {'compute ms':>10}  {'all-reduce ms':>13}")
    base = None
    for world in counts:
        t = measure(world, args)
        rate = args.batch_size / t["step"]
        base = base or rate / world
        print(f"{world:>5}  {1e3 * t['step']:>8.1f}  {rate:>8.0f}  {rate / (world * base):>10.2f}  "
              f"{1e3 * t['compute']:>10.1f}  {1e3 * t['allreduce']:>13.2f}")


if __name__ == "__main__":
    main()
