"""Choosing fp32 or bf16 autocast on a CPU by measuring, once per model and setting, and caching it.

On CPUs with bf16 hardware (AMX, avx512_bf16) bf16 autocast is not always faster: measured in
issue 18, it ran 0.66-0.92x of fp32's speed for narrow networks and ~1.8x for ResNet-18 (CIFAR)
against fp32 channels-last. So `runtime.amp: auto` on such a CPU times a few training steps of
the actual model at the actual batch shape in both precisions and keeps the faster; the answer
is cached (keyed by CPU, torch version, model, input shape, batch, threads and memory format)
so only the first run of a setting pays for the probe. CPUs without bf16 hardware are never
probed: fp32 wins there by a wide margin (see `cnnzoo._cpu.cpu_bf16_hardware`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._cpu import cpu_bf16_hardware
from .._files import temporary_for
from ..data.cache import default_cache_dir
from .config import Config
from .runtime import Runtime

Timer = Callable[[], float]


def pick_fastest(candidates: dict[str, Callable[[], None]], *, repeats: int = 3, warmup: int = 1,
                 timer: Timer = time.perf_counter) -> tuple[str, dict[str, float]]:
    """The name of the fastest candidate and every candidate's median time. The candidates are
    timed in turns (a, b, a, b, ...) so that a change in the machine's load hits them alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = timer()
            fn()
            times[name].append(timer() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return min(medians, key=medians.get), medians


def training_step(model: nn.Module, images: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], None]:
    """One forward and backward pass of `model` on `images` (a sum of the outputs as the loss)
    under autocast to `dtype` (None: fp32)."""
    autocast = (functools.partial(torch.autocast, images.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext)

    def step() -> None:
        with autocast():
            out = model(images)
        out = out[0] if isinstance(out, tuple) else out  # AuxLogits
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)

    return step


def probe_cpu_amp(model: nn.Module, batch_shape: tuple[int, ...], *, channels_last: bool, repeats: int = 3,
                  timer: Timer = time.perf_counter) -> tuple[str, dict[str, float]]:
    """"fp32" or "bf16", whichever trains `model` faster on random inputs of `batch_shape`; the
    model's weights and batch-norm statistics are put back afterwards."""
    saved = copy.deepcopy(model.state_dict())
    images = torch.randn(batch_shape, generator=torch.Generator().manual_seed(0))
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.train()
    try:
        return pick_fastest({"fp32": training_step(model, images, None),
                             "bf16": training_step(model, images, torch.bfloat16)}, repeats=repeats, timer=timer)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)


def probe_key(model_name: str, batch_shape: tuple[int, ...], channels_last: bool) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    shape = "x".join(map(str, batch_shape))
    return (f"{cpu}|torch {torch.__version__}|{model_name}|{shape}|threads {torch.get_num_threads()}|"
            f"{'channels_last' if channels_last else 'nchw'}")


def cached_choice(path: Path, key: str, compute: Callable[[], str]) -> tuple[str, bool]:
    """(choice, from_cache): the answer stored under `key` in the JSON file at `path`, or
    compute() stored there (atomically; a cache that cannot be written is only skipped)."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    if key in table:
        return str(table[key]), True
    choice = compute()
    table[key] = choice
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_for(path)
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    return choice, False


def choose_cpu_amp(runtime: Runtime, cfg: Config, model: nn.Module, input_size: tuple[int, ...],
                   say: Callable[[str], None], decide: Callable[[Callable], Any] = lambda fn: fn()
                   ) -> tuple[Runtime, Config]:
    """(runtime, cfg) with bf16 autocast when `runtime.amp: auto` on a CPU with bf16 hardware and the
    (cached) probe finds it faster for this model; otherwise both unchanged. After a probe, cfg's
    runtime.amp names the choice ("bf16" or "off"): the checkpoints then carry it, so `cnnzoo eval`
    repeats the final test in its precision and a resumed run keeps it whatever a new probe would say.
    `decide` runs the probe (several processes: once, on rank 0, its choice sent to every rank, so
    the processes of one run never train in different precisions)."""
    if runtime.device.type != "cpu" or cfg.runtime.amp != "auto" or cpu_bf16_hardware() is None:
        return runtime, cfg
    shape = (cfg.data.batch_size, *input_size)
    path = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    key = probe_key(cfg.model.name, shape, runtime.channels_last)
    choice, cached = decide(lambda: cached_choice(path / "amp_probe.json", key, lambda: probe_cpu_amp(
        model, shape, channels_last=runtime.channels_last)[0]))
    say(f"precision: {choice} on this CPU ({'cached probe' if cached else 'probed'}: the faster of fp32 and bf16 "
        f"autocast for {cfg.model.name} at batch {cfg.data.batch_size})")
    bf16 = choice == "bf16"
    pinned = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, amp="bf16" if bf16 else "off"))
    return dataclasses.replace(runtime, amp_dtype=torch.bfloat16 if bf16 else None), pinned
