"""Data-parallel training over several processes: torchrun and DistributedDataParallel, and what a
cnnzoo run needs around them so that it stays exact, resumable and quiet.

DistributedDataParallel (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training", VLDB, arXiv:2006.15704) keeps one replica of the model per process and
all-reduces the gradients during the backward pass, so every replica takes the same step. The
processes are started by `torchrun` (`torch.distributed.run`), which sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `cnnzoo train --nproc N` starts it for you (`launch`).
Backend: NCCL on CUDA (one GPU per process, `cuda:LOCAL_RANK`), gloo on the CPU.

What this module adds to the trainer, all of it a no-op for a single process (`Distributed()`):
- data: each process takes its share of every epoch's seeded permutation (DistributedSampler's
  rule, see `cnnzoo.data.loader.rank_share`) and 1/world of the global batch; the learning rate
  is never rescaled. Evaluation splits see every sample exactly once across processes and their
  sums are reduced (`ReducedEvaluator`);
- one all-reduce per step carries the step's metric sums, the sample count and the signals the
  processes have received, so the logged numbers are global and every process decides to skip a
  non-finite batch, or to stop after a SIGINT/SIGTERM on any of them, at the same step;
- only rank 0 writes (run directory, metrics, checkpoints, progress, report); a checkpoint holds
  the unwrapped model (loadable by a single process) plus every process's RNG state, and resumes
  only with the same number of processes;
- `--sync-bn` converts BatchNorm to `SyncBatchNorm` on CUDA; on the CPU, where torch's has no
  kernel (and DDP refuses it), to `GlobalBatchNorm`: two passes over a differentiable all-reduce;
- failures: a collective that fails (a process died, the network went away) or times out
  (`runtime.dist_timeout`) becomes `ProcessGroupError`, a one-line message, never a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CnnzooError
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .config import Config, ConfigError
from .progress import Progress
from .resume import ResumeError, RunFailure
from .signals import SIGNALS, StopRequest

log = logging.getLogger(__name__)

# how gloo, NCCL and the TCP store word a lost peer or a timeout
_COMMUNICATION = re.compile(r"gloo|nccl|connection|socket|peer|timed? ?out|watchdog|store", re.IGNORECASE)
LAUNCHER_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-id")


class ProcessGroupError(RunFailure):
    """A collective operation failed or timed out: another process died, hung or lost its network."""


class FollowerExit(Exception):
    """Raised on ranks other than 0 when rank 0 failed first and has already said why: the other
    ranks leave with the same exit code without repeating the message."""

    def __init__(self, exit_code: int):
        super().__init__(f"rank 0 failed (exit code {exit_code})")
        self.exit_code = exit_code


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


@dataclass
class Distributed:
    """One process's place in a data-parallel run, and the collective operations the trainer needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stop: StopRequest | None = None

    @classmethod
    def from_env(cls) -> Distributed:
        """The process's rank and world size as torchrun set them (a single process otherwise);
        nothing is initialised until `session`."""
        if not launched_by_torchrun():
            return cls()
        return cls(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                   local_rank=int(os.environ["LOCAL_RANK"]))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ set-up and tear-down

    def device(self, name: str) -> str | None:
        """The device this process trains on: `cuda:LOCAL_RANK` when the run is on CUDA (None: as configured)."""
        if not self.enabled:
            return None
        cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
        return f"cuda:{self.local_rank}" if cuda else None

    def stop_request(self) -> StopRequest:
        """The run's signal handler; with several processes a signal only counts once all of them
        have heard of it (`requested` changes at the per-step agreement)."""
        self.stop = StopRequest(deferred=self.enabled)
        return self.stop

    @contextlib.contextmanager
    def session(self, cfg: Config) -> Iterator[Distributed]:
        """Join the process group for the run (gloo on the CPU, NCCL on CUDA) and leave it at the end."""
        if not self.enabled:
            yield self
            return
        check_config(cfg, self.world_size)
        device = self.device(cfg.runtime.device)
        timeout = datetime.timedelta(seconds=cfg.runtime.dist_timeout)
        if device is not None:  # NCCL: one GPU per process, collectives on it
            torch.cuda.set_device(self.local_rank)
            self.backend, self.comm_device = "nccl", torch.device(device)
            dist.init_process_group("nccl", timeout=timeout, device_id=self.comm_device)
        else:
            self.backend = "gloo"
            dist.init_process_group("gloo", timeout=timeout)
        try:
            yield self
            with contextlib.suppress(Exception):  # all processes leave together: a gloo group torn down while
                dist.barrier()                      # a peer still talks to it can abort the process at exit
        finally:
            with contextlib.suppress(Exception):  # a group broken by a dead peer may refuse a clean exit
                dist.destroy_process_group()

    def describe(self, cfg: Config) -> str:
        per = cfg.data.batch_size // self.world_size
        accum = f", {cfg.optim.grad_accum} micro-batches each" if cfg.optim.grad_accum > 1 else ""
        return (f"processes: {self.world_size} ({self.backend}), global batch {cfg.data.batch_size} = "
                f"{self.world_size} x {per}{accum}{', SyncBatchNorm' if cfg.runtime.sync_bn else ''}")

    def progress(self, progress: Progress) -> Progress:
        """Rank 0 shows progress and prints; the others are silent."""
        return progress if self.is_main else Progress("off", log=lambda line: None)

    # ------------------------------------------------------------------ collectives

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turn a failed or timed-out collective inside the block (also DDP's, in a backward pass)
        into a one-line ProcessGroupError; other errors pass unchanged."""
        try:
            yield
        except (RuntimeError, dist.DistError) as err:
            if not self.enabled or not (isinstance(err, dist.DistError) or _COMMUNICATION.search(str(err))):
                raise
            reason = " ".join(str(err).split())[:200]
            raise ProcessGroupError(
                f"rank {self.rank}: lost contact with the other processes during {what} ({reason}); another process "
                "probably died or hung. The last complete checkpoint is kept; resume with the same number of "
                "processes") from None

    def all_reduce_sum(self, tensor: torch.Tensor, what: str = "a reduction") -> torch.Tensor:
        """The sum over all processes of `tensor` (returned on the tensor's own device)."""
        if not self.enabled:
            return tensor
        moved = tensor.to(self.comm_device)
        with self.collective(what):
            dist.all_reduce(moved)
        return moved.to(tensor.device)

    def barrier(self, what: str) -> None:
        if self.enabled:
            with self.collective(what):
                dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (decoding a dataset into the shared cache), then the others
        (which then read the cache instead of decoding it again)."""
        if self.enabled and not self.is_main:
            self.barrier("data loading (waiting for rank 0 to prepare the data)")
        yield
        if self.enabled and self.is_main:
            self.barrier("data loading")

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """fn() on rank 0, its result sent to every rank; if it raises, rank 0 re-raises and the
        others leave quietly (`FollowerExit`) instead of waiting forever."""
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except (CnnzooError, OSError) as err:
                error = err
                box[0] = ("error", 1 if isinstance(err, RunFailure) else 2)
        with self.collective("a broadcast from rank 0"):
            dist.broadcast_object_list(box, src=0, device=self.comm_device)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise FollowerExit(value)
        return value

    # ------------------------------------------------------------------ data and model

    def shard_data(self, data: Any, task: Any, cfg: Config, meta: Any) -> None:
        """Give each loader of the run this process's share: the training data padded to equal
        shares (DistributedSampler's rule), the evaluation splits without padding when the task's
        evaluator can reduce its sums (every sample once), else whole on every process."""
        if not self.enabled:
            return
        reduces = hasattr(task.evaluator(cfg, meta, final=False), "reduce")
        for name in ("train", "val", "test"):
            loader = getattr(data, name)
            if loader is None or (name != "train" and not reduces):
                continue
            if not hasattr(loader, "shard"):
                raise ConfigError(f"task {task.name!r}: its {name} loader ({type(loader).__name__}) cannot be split "
                                  "between processes; train it with one process")
            loader.shard(self.rank, self.world_size, train=name == "train")

    def prepare(self, model: nn.Module, cfg: Config) -> None:
        """Before the model is placed and its optimiser built: SyncBatchNorm when asked, and a
        distinct random stream per process (dropout, drop-path) from the run's seed."""
        if not self.enabled:
            return
        if cfg.runtime.sync_bn:
            convert_sync_batchnorm(model, cuda=self.device(cfg.runtime.device) is not None)
        from ..data.loader import derive_seed

        torch.manual_seed(derive_seed(cfg.runtime.seed, 0x5EED, self.rank))

    def wrap(self, model: nn.Module, cfg: Config) -> nn.Module:
        """The module the training step calls: `model` wrapped in DistributedDataParallel (after the
        memory-format and torch.compile decisions, which apply to what it wraps)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.backend == "nccl" else None
        # rank 0's buffers go to all at every forward, unless SyncBatchNorm keeps them equal already
        key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")  # the name before torch 2.12
        with self.collective("wrapping the model (broadcast of rank 0's weights)"):
            return DistributedDataParallel(model, device_ids=device_ids, **{key: not cfg.runtime.sync_bn})

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every process before an evaluation;
        without SyncBatchNorm each process last updated them with its own batch."""
        if not self.enabled:
            return
        with self.collective("sharing BatchNorm statistics"):
            for buffer in model.buffers():
                moved = buffer.to(self.comm_device)
                dist.broadcast(moved, src=0)
                buffer.copy_(moved)

    def evaluator(self, evaluator: Any) -> Any:
        return ReducedEvaluator(evaluator, self) if self.enabled and hasattr(evaluator, "reduce") else evaluator

    # ------------------------------------------------------------------ steps

    def reduce_means(self, values: dict[str, Any], n: int) -> dict[str, float]:
        """Global batch means of a step's metrics (sums over processes divided by the global
        count, not a mean of means) in one all-reduce, which also carries the signals received:
        afterwards `self.stop.requested` is the same on every process."""
        names = list(values)
        signals = [float(self.stop is not None and self.stop.received == s) for s in SIGNALS]
        local = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=self.comm_device).reshape(())
                             * n for k in names])
        extra = torch.tensor([float(n), *signals], dtype=torch.float64, device=self.comm_device)
        packed = torch.cat([local, extra])
        with self.collective("a training step"):
            dist.all_reduce(packed)
        totals = packed.tolist()  # the one host sync of a step
        count, received = totals[len(names)], totals[len(names) + 1:]
        self._agree(received)
        return {k: totals[i] / count for i, k in enumerate(names)}

    def _agree(self, received: Sequence[float]) -> None:
        if self.stop is None or self.stop.requested is not None:
            return
        heard = [sig for sig, count in zip(SIGNALS, received) if count > 0]
        if heard:  # SIGTERM (a scheduler) before SIGINT before SIGHUP
            self.stop.requested = int(min(heard, key=lambda s: (s != signal.SIGTERM, s != signal.SIGINT)))

    def global_count(self, n: int) -> int:
        return n * self.world_size

    # ------------------------------------------------------------------ checkpoints

    def gather_rng(self) -> list | None:
        """Every process's RNG state (rank order), for the checkpoint; None for one process."""
        if not self.enabled:
            return None
        states: list[Any] = [None] * self.world_size
        with self.collective("gathering RNG states for a checkpoint"):
            dist.all_gather_object(states, capture_rng_state())
        return states

    def checkpoint_entry(self, rng: list | None) -> dict:
        return {"world_size": self.world_size, "rng": rng}

    def restore_rng(self, ckpt: dict) -> None:
        entry = ckpt.get("distributed") or {}
        states = entry.get("rng")
        if self.enabled and states:
            restore_rng_state(states[self.rank])

    def check_resume(self, path: Path, ckpt: dict) -> None:
        saved = int((ckpt.get("distributed") or {}).get("world_size", 1))
        if saved != self.world_size:
            raise ResumeError(
                f"cannot resume {path}: it was trained by {saved} process(es), this run has {self.world_size}; each "
                "process's data share, random streams and position are part of the checkpoint. Resume with "
                f"{'`cnnzoo train --nproc ' + str(saved) + ' --resume ...`' if saved > 1 else 'one process'} "
                "(the global batch stays the same), or evaluate the checkpoint with `cnnzoo eval`")

    def load_from_main(self, run_dir: Path, names: Sequence[str]) -> tuple[str, dict]:
        """(name, slim checkpoint) of the first of `names` that exists in rank 0's run directory,
        sent to every process: the other processes need not see rank 0's disk."""
        def read() -> tuple[str, dict]:
            which = next((n for n in names if (run_dir / n).exists()), names[-1])
            ckpt = load_checkpoint(run_dir / which)
            return which, {k: ckpt[k] for k in ("model", "epoch", "step")} | {"state": {"best": ckpt["state"]["best"]}}

        return self.on_main(read)


class ReducedEvaluator:
    """An evaluator whose sums are added up over all processes before anything is computed."""

    def __init__(self, inner: Any, group: Distributed):
        self.inner, self.group, self.reduced = inner, group, False

    def update(self, model: nn.Module, batch: tuple) -> None:
        self.inner.update(model, batch)

    def _reduce(self) -> None:
        if not self.reduced:
            self.inner.reduce(lambda t: self.group.all_reduce_sum(t, "an evaluation"))
            self.reduced = True

    def compute(self) -> dict[str, float]:
        self._reduce()
        return self.inner.compute()

    def report(self) -> Any:
        self._reduce()
        return self.inner.report()


def check_config(cfg: Config, world_size: int) -> None:
    """The global batch must split into equal per-process (and per-micro-batch) parts."""
    parts = world_size * cfg.optim.grad_accum
    if cfg.data.batch_size % parts:
        accum = f" x {cfg.optim.grad_accum} micro-batches" if cfg.optim.grad_accum > 1 else ""
        raise ConfigError(
            f"data.batch_size: the global batch {cfg.data.batch_size} does not divide among {world_size} processes"
            f"{accum}; choose a multiple of {parts} (the learning rate is not rescaled: the global batch is the "
            "recipe's)")


# ---------------------------------------------------------------------- accumulation


def micro_batches(batch: tuple, parts: int) -> list[tuple]:
    """`batch` split along its first dimension into `parts` micro-batches (fewer when it is short)."""
    if parts == 1:
        return [batch]
    pieces = [torch.tensor_split(t, parts) if isinstance(t, torch.Tensor) else [t] * parts for t in batch]
    return [tuple(p[i] for p in pieces) for i in range(parts) if len(pieces[0][i])]


def no_sync(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync for every micro-batch but the last, so gradients are all-reduced once per step."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


# ---------------------------------------------------------------------- SyncBatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce: the gradient of a sum over processes is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for the CPU (torch's has no CPU kernel, and DDP refuses it on CPU modules):
    in training, the batch mean and then the variance around it are each summed over the
    processes by a differentiable all-reduce, two passes as in a single-process BatchNorm, so the
    statistics are those of the global batch. Same parameters, buffers and state_dict keys as
    BatchNorm, so a checkpoint loads into the plain model; in eval mode it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        syncing = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not syncing:
            return super().forward(input)
        self._check_input_dim(input)
        return self.global_batch_norm(input, _AllReduceSum.apply)

    def global_batch_norm(self, input: torch.Tensor, total: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Training-mode batch norm with the statistics of the global batch: `total` sums a
        tensor over the processes (differentiably). Computed in float32 whatever the autocast."""
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative average, as BatchNorm does
                momentum = 1.0 / float(self.num_batches_tracked)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        with torch.no_grad():
            count = total(torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32))
        mean = total(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = total((centred * centred).sum(dims)) / count  # two passes: no E[x^2] - E[x]^2 cancellation
        if self.track_running_stats:
            with torch.no_grad():
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, *, cuda: bool) -> nn.Module:
    """Every BatchNorm layer inside `module` made to normalise over the global batch, sharing its
    parameters and buffers (so an optimiser built before, or a state_dict, still fits): torch's
    SyncBatchNorm on CUDA, GlobalBatchNorm on the CPU. Returns the module."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            sync = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(sync, key, getattr(child, key))
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, cuda=False)
    return module


# ---------------------------------------------------------------------- launching


@dataclass
class Launch:
    """How `cnnzoo train --nproc N` starts torchrun: N processes on this node, and for several
    nodes the rendezvous every node's launcher meets at."""

    nproc: int
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str = "cnnzoo"

    def check(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ConfigError("--nproc and --nnodes must be at least 1")
        if launched_by_torchrun():
            raise ConfigError("--nproc starts torchrun itself; under torchrun, leave --nproc and the rendezvous "
                              "flags out (torchrun's own --nproc-per-node and --nnodes set them)")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the address every node's launcher meets "
                              "at (a port on node 0)")

    def command(self, argv: Sequence[str]) -> list[str]:
        """The torchrun command line that runs `cnnzoo <argv>` (launcher flags removed) in every process."""
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.nproc}"]
        if self.nnodes == 1 and not self.rdzv_endpoint:
            cmd.append("--standalone")  # a free port on localhost, chosen by torchrun
        else:
            backend = "static" if self.node_rank is not None else "c10d"
            cmd += [f"--nnodes={self.nnodes}", f"--rdzv-backend={backend}", f"--rdzv-endpoint={self.rdzv_endpoint}",
                    f"--rdzv-id={self.rdzv_id}"]
            if self.node_rank is not None:
                cmd.append(f"--node-rank={self.node_rank}")
        return [*cmd, "-m", "cnnzoo", *strip_launcher_flags(argv)]


def strip_launcher_flags(argv: Sequence[str]) -> list[str]:
    """argv without --nproc/--nnodes/--node-rank/--rdzv-endpoint/--rdzv-id and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def launch(spec: Launch, argv: Sequence[str]) -> int:
    """Run torchrun with `spec` for `cnnzoo <argv>` and wait; returns its exit code (128 + n when
    this launcher was stopped by signal n, which it passes on to torchrun and so to the workers)."""
    spec.check()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.nproc)))
    cmd = spec.command(argv)
    log.info("launching %d process(es)%s: %s", spec.nproc, f" on each of {spec.nnodes} nodes" if spec.nnodes > 1
             else "", " ".join(cmd[1:]))
    child = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if signum != signal.SIGINT:  # a terminal's Ctrl-C reaches torchrun directly (same process group)
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        return 128 + received[0]
    return 128 - code if code < 0 else code


__all__ = ["Distributed", "FollowerExit", "GlobalBatchNorm", "Launch", "ProcessGroupError", "ReducedEvaluator",
           "check_config", "convert_sync_batchnorm", "env_rank", "launch", "launched_by_torchrun", "micro_batches",
           "no_sync", "strip_launcher_flags"]
