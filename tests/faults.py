"""Fault injection for the engine's tests, kept out of the production loop: a classification
loss that turns NaN at chosen training batches (counted from 0 over the whole run).

In-process: `with nan_loss_at({30}): train(cfg)`. For a CLI run in a subprocess:
`python tests/faults.py 2 train --epochs 1 ...` (batch indices, then the cnnzoo arguments).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from typing import Iterator

from cnnzoo.tasks.classification import ClassificationTask


@contextlib.contextmanager
def nan_loss_at(batches: set[int]) -> Iterator[None]:
    original = ClassificationTask.loss_fn

    def loss_fn(self, cfg):
        inner, count = original(self, cfg), itertools.count()

        def loss(model, batch):
            value, metrics = inner(model, batch)
            return (value * float("nan"), metrics) if next(count) in batches else (value, metrics)

        return loss

    ClassificationTask.loss_fn = loss_fn
    try:
        yield
    finally:
        ClassificationTask.loss_fn = original


if __name__ == "__main__":
    from cnnzoo.cli.main import main

    with nan_loss_at({int(s) for s in sys.argv[1].split(",")}):
        sys.exit(main(sys.argv[2:]))
