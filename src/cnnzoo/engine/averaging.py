"""Averages of the weights during training: an exponential moving average (EMA) and lookahead.

Every `every` optimiser steps the average moves towards the current weights,

    avg <- decay(t) * avg + (1 - decay(t)) * w,      decay(t) = base * (t / T) ** power,

(T: the run's total steps; power 0 gives the usual constant-decay EMA). With `lookahead` the
weights are then set to the average, so training continues from it: Lookahead (Zhang et al.
2019, arXiv 1907.08610) with the slow weights as an EMA, as airbench uses it (Jordan 2024,
arXiv 2404.00498: every 5 steps, base 0.95^5, power 3, and the average taken as the final
weights at the last step). Floating-point buffers (batch-norm statistics) are averaged with
the parameters, as in airbench; integer buffers (batch counts) are left alone.

Without lookahead the model keeps training on its own weights and the average is what
`copy_to` writes into a model (for evaluation or export).
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """The running average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: nn.Module, *, every: int = 1, base: float = 0.999, power: float = 0.0,
                 total_steps: int = 1, lookahead: bool = False):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if not 0 <= base <= 1:
            raise ValueError(f"base decay must be in [0, 1], got {base}")
        self.every, self.base, self.power = int(every), float(base), float(power)
        self.total_steps, self.lookahead = max(1, int(total_steps)), lookahead
        self.average = {k: v.detach().clone() for k, v in _floating(model).items()}

    def decay(self, step: int) -> float:
        return self.base * (min(step, self.total_steps) / self.total_steps) ** self.power

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """avg <- decay * avg + (1 - decay) * w, and w <- avg with lookahead."""
        for name, value in _floating(model).items():
            avg = self.average[name]
            avg.lerp_(value.detach().to(avg.dtype), 1.0 - decay)
            if self.lookahead:
                value.copy_(avg)

    def after_step(self, model: nn.Module, step: int) -> None:
        """Call after optimiser step `step` (counted from 1): updates every `every` steps, and at the
        last step of the run hands the average to the model (lookahead) without a further move."""
        if step % self.every == 0:
            self.update(model, self.decay(step))
        if self.lookahead and step == self.total_steps:
            self.copy_to(model)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, value in _floating(model).items():
            value.copy_(self.average[name])

    def state_dict(self) -> dict:
        return {"average": {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["average"].items():
            self.average[name].copy_(value)


def _floating(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
