"""Where and how the arithmetic runs: device, precision, memory format, seeds.

One policy for training and evaluation alike, so that the final test of a run and a later
`cnnzoo eval` of its checkpoint run the same arithmetic and report the same numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import platform
import random
import sys
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from .._cpu import cpu_bf16_hardware
from .config import Config, ConfigError, RuntimeConfig

log = logging.getLogger(__name__)


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's share,
    not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: `default_threads()`); returns the number now in use."""
    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(trim_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep the memory a training step frees for the next step: no mmap for
    large blocks (glibc maps every block >= 32 MB, the activations of a big batch, afresh on each
    step and faults it in page by page) and no trimming of the heap below `trim_bytes`. Measured
    on ResNet-20, batch 512 (docs/speedrun.md): cnnzoo's training loop went from 334,000 to 8,000
    page faults and from 4.95 to 3.47 CPU-seconds per step, for ~10% more resident memory. Returns False where the C library is not glibc (nothing done)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_bytes)))
    except (OSError, AttributeError):
        return False


def warn_slow_cpu_bf16(amp: str, device: torch.device) -> None:
    """One warning when bf16 autocast is asked for on a CPU without bf16 hardware."""
    if amp == "bf16" and device.type == "cpu" and cpu_bf16_hardware() is None:
        log.warning("runtime.amp: this CPU has no bf16 hardware (no AMX or avx512_bf16), so bf16 autocast runs "
                    "through slow reference kernels (7-11x slower than fp32 measured on such a CPU); use --amp off "
                    "unless you want bf16 numerics")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; an unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"runtime.device: {name!r} is not auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but no CUDA device is available; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but MPS is not available; use cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA where supported, else fp16 (with a grad scaler); off on CPU/MPS."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("runtime.amp: fp16 autocast needs a CUDA device; use bf16 on the CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass(frozen=True)
class Runtime:
    """The resolved runtime settings of one run or evaluation."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    threads: int = dataclasses.field(default_factory=torch.get_num_threads)  # intra-op threads in use

    @classmethod
    def from_config(cls, rt: RuntimeConfig, device: str | None = None) -> Runtime:
        """`device` overrides rt.device (evaluating a checkpoint elsewhere than it was trained)."""
        dev = resolve_device(device or rt.device)
        channels_last = rt.channels_last if rt.channels_last is not None else dev.type in ("cuda", "cpu")
        warn_slow_cpu_bf16(rt.amp, dev)
        threads = set_threads(rt.threads) if rt.threads else torch.get_num_threads()  # None: leave torch's as set
        return cls(dev, resolve_amp(rt.amp, dev), channels_last, threads)

    def describe_device(self) -> str:
        """The device for the banner; on the CPU with the number of threads in use ("cpu, 2 threads")."""
        if self.device.type != "cpu":
            return str(self.device)
        return f"cpu, {self.threads} thread{'s' if self.threads != 1 else ''}"

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.amp_dtype]

    @property
    def autocast(self) -> Callable[[], ContextManager]:
        if self.amp_dtype is None:
            return contextlib.nullcontext
        return functools.partial(torch.autocast, self.device.type, dtype=self.amp_dtype)

    def stamp(self, cfg: Config) -> Config:
        """`cfg` with the resolved device and memory format, for the task to build its loaders."""
        return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device=str(self.device),
                                                                    channels_last=self.channels_last))

    def place(self, model: nn.Module) -> nn.Module:
        """The model on this device, in this memory format."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        model.to(self.device, memory_format=fmt)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
