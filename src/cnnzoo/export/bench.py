"""How fast a model runs, in the settings a deployment chooses between, measured side by side.

Settings: `eager` (the plain model, fp32, NCHW, no_grad: the baseline), `channels_last`,
`fused` (BatchNorm folded, channels_last, inference_mode), `bf16` (the fused model under bf16
autocast), `compiled` (the fused model through `torch.compile`) and `onnxruntime`. Each is
warmed up first (not counted); then the settings take turns, round after round, so that a
noisy shared machine slows them alike, and each round times a block of calls with
`torch.utils.benchmark.Timer`. Reported: median and 90th percentile latency over rounds,
images/s, CPU time per call, and (against the first setting) the median of the per-round ratios.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils import benchmark

from .._cpu import cpu_bf16_hardware
from ..errors import CnnzooError
from .fuse import fast_inference_model

log = logging.getLogger(__name__)

SETTINGS = ("eager", "channels_last", "fused", "bf16", "compiled", "onnxruntime")
TRAIN_SETTINGS = ("eager", "channels_last", "bf16", "compiled")


@dataclass
class BenchResult:
    model: str
    setting: str
    mode: str  # "inference" or "train"
    batch: int
    input_size: tuple[int, int, int]
    median_ms: float
    p90_ms: float
    images_per_s: float
    cpu_ms: float
    ratio: float | None  # median per-round speed-up over the first setting
    max_abs_diff: float | None  # inference: against the eager fp32 output

    def as_dict(self) -> dict:
        return asdict(self)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def inference_runner(setting: str, model: nn.Module, x: torch.Tensor, threads: int | None
                     ) -> Callable[[], torch.Tensor]:
    """A zero-argument function running one batch in `setting`."""
    if setting == "eager":
        def run() -> torch.Tensor:
            with torch.no_grad():
                return model(x)
        return run
    if setting == "channels_last":
        model_cl, x_cl = _copy(model).to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        def run() -> torch.Tensor:
            with torch.no_grad():
                return model_cl(x_cl)
        return run
    if setting == "onnxruntime":
        from .formats import onnx_runtime_model

        ort_model = onnx_runtime_model(model, tuple(x.shape[1:]), threads)
        return lambda: ort_model(x)
    fast = fast_inference_model(_copy(model), x[:1])
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if setting == "compiled":
        fast = torch.compile(fast)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if setting == "bf16" else contextlib.nullcontext()

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return fast(x_cl)
    return run


def train_runner(setting: str, model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One SGD step (forward, cross-entropy, backward, update) in `setting`."""
    model = _copy(model).train()
    if setting != "eager":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.zeros(x.shape[0], dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    step_model = torch.compile(model) if setting == "compiled" else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if setting == "bf16" else contextlib.nullcontext()

    def run() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = step_model(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        optimizer.step()
        return loss
    return run


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def bench_model(name: str, model: nn.Module, *, settings: Sequence[str], batch: int, input_size: Sequence[int],
                train: bool = False, rounds: int = 7, min_time: float = 0.2, warmup: int = 2,
                threads: int | None = None) -> list[BenchResult]:
    """Time `model` in each of `settings`, interleaved; the first setting is the ratios' baseline."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise CnnzooError(f"unknown bench setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    if train:
        skipped = [s for s in settings if s not in TRAIN_SETTINGS]
        if skipped:
            log.info("training steps run in PyTorch only: %s skipped", ", ".join(skipped))
        settings = [s for s in settings if s in TRAIN_SETTINGS]
    if "bf16" in settings and cpu_bf16_hardware() is None:
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 runs emulated and slow")
    model = model.eval()
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    runners, diffs = {}, {}
    with torch.no_grad():
        reference = None if train else model(x).float()
    for setting in settings:
        runners[setting] = train_runner(setting, model, x) if train else inference_runner(setting, model, x, threads)
        for _ in range(warmup):  # compilation, allocator and oneDNN primitive caches: not counted
            out = runners[setting]()
        if reference is not None:
            diffs[setting] = float((out.float() - reference).abs().max())
    number = _calls_per_block(runners[settings[0]], min_time)
    times: dict[str, list[float]] = {s: [] for s in settings}
    cpu: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(rounds):
        for setting in settings:
            timer = benchmark.Timer(stmt="run()", globals={"run": runners[setting]}, num_threads=torch.get_num_threads())
            start = time.process_time()
            measurement = timer.timeit(number)
            cpu[setting].append((time.process_time() - start) / number)
            times[setting].append(measurement.mean)
    base = times[settings[0]]
    results = []
    for setting in settings:
        median = statistics.median(times[setting])
        ratio = statistics.median(b / t for b, t in zip(base, times[setting]))
        results.append(BenchResult(name, setting, "train" if train else "inference", batch, tuple(input_size),
                                   1e3 * median, 1e3 * _percentile(times[setting], 0.9), batch / median,
                                   1e3 * statistics.median(cpu[setting]), ratio, diffs.get(setting)))
    return results


def _calls_per_block(run: Callable[[], object], min_time: float) -> int:
    """Calls per timed block so that one block lasts about `min_time` seconds."""
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, int(min_time / once))
