"""Faults in one process of a multi-process run, injected from outside the production loop.

Run it as torchrun's script instead of `-m cnnzoo`:
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_faults.py KIND STEP RANK train ...
KIND is one of
    sigterm  the process of rank RANK sends itself SIGTERM after optimiser step STEP;
    die      it leaves at once (os._exit(3)) after step STEP, as a crashed or OOM-killed process would;
    nan      its loss is NaN at training batch STEP (counted from 0), the other processes' is not;
    probe    (STEP unused) every process sees bf16 hardware, and the precision probe (uncached) answers
             bf16 in the process of rank RANK and fp32 in the others; each prints the precision it trains in.
"""

from __future__ import annotations

import os
import signal
import sys

from cnnzoo.engine import trainer


def after_step(step: int, action) -> None:
    original = trainer._train_step

    def wrapped(run, state, *args, **kwargs):
        values = original(run, state, *args, **kwargs)
        if state.step == step:
            action()
        return values

    trainer._train_step = wrapped


def disagreeing_probes(bf16_rank: int) -> None:
    from cnnzoo.engine import amp_probe

    own_rank = int(os.environ.get("RANK", "0"))
    amp_probe.cpu_bf16_hardware = lambda: "avx512_bf16"
    amp_probe.probe_cpu_amp = lambda *a, **k: ("bf16" if own_rank == bf16_rank else "fp32", {})
    amp_probe.cached_choice = lambda path, key, compute: (compute(), False)  # no shared cache to agree through
    original = trainer.choose_cpu_amp

    def reporting(*args, **kwargs):
        runtime, cfg = original(*args, **kwargs)
        print(f"rank {own_rank} trains in {cfg.runtime.amp}", file=sys.stderr, flush=True)
        return runtime, cfg

    trainer.choose_cpu_amp = reporting


def main(argv: list[str]) -> int:
    kind, step, rank, rest = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    from cnnzoo.cli.main import main as cnnzoo

    if kind == "probe":
        disagreeing_probes(rank)
        return cnnzoo(rest)
    if int(os.environ.get("RANK", "0")) != rank:
        return cnnzoo(rest)
    if kind == "sigterm":
        after_step(step, lambda: signal.raise_signal(signal.SIGTERM))
    elif kind == "die":
        after_step(step, lambda: os._exit(3))
    elif kind == "nan":
        from faults import nan_loss_at

        with nan_loss_at({step}):
            return cnnzoo(rest)
    else:
        raise SystemExit(f"unknown fault {kind!r}")
    return cnnzoo(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
