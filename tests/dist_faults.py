"""Faults in one process of a multi-process run, injected from outside the production loop.

Run it as torchrun's script instead of `-m cnnzoo`:
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_faults.py KIND STEP RANK train ...
KIND is one of
    sigterm  the process of rank RANK sends itself SIGTERM after optimiser step STEP;
    die      it leaves at once (os._exit(3)) after step STEP, as a crashed or OOM-killed process would;
    nan      its loss is NaN at training batch STEP (counted from 0), the other processes' is not.
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


def main(argv: list[str]) -> int:
    kind, step, rank, rest = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    from cnnzoo.cli.main import main as cnnzoo

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
