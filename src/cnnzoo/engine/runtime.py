"""Where and how the arithmetic runs: device, precision, memory format, seeds.

One policy for training and evaluation alike, so that the final test of a run and a later
`cnnzoo eval` of its checkpoint run the same arithmetic and report the same numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from .config import Config, ConfigError, RuntimeConfig


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

    @classmethod
    def from_config(cls, rt: RuntimeConfig, device: str | None = None) -> Runtime:
        """`device` overrides rt.device (evaluating a checkpoint elsewhere than it was trained)."""
        dev = resolve_device(device or rt.device)
        channels_last = rt.channels_last if rt.channels_last is not None else dev.type in ("cuda", "cpu")
        return cls(dev, resolve_amp(rt.amp, dev), channels_last)

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
