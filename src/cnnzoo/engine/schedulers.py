"""Learning-rate schedules, stepped once per optimiser step.

Every schedule is a function of the optimiser step t (milestones, periods and warm-up given
in epochs are converted with the number of steps per epoch), so a run stopped in the middle
of an epoch resumes on the same curve. The formula schedules are a `LambdaLR` whose factor
multiplies the base learning rate lr0; T is the total number of steps:

- constant:   1
- step:       gamma ** floor(t / step_size)
- multistep:  gamma ** (number of milestones <= t)
- cosine:     m + (1 - m) (1 + cos(pi t / T)) / 2,  m = min_lr / lr0   (Loshchilov & Hutter 2017)
- sgdr:       the cosine restarted after t0 steps, then t0 * t_mult, ...   (SGDR, arXiv 1608.03983)
- htd:        (1 - tanh(L + (U - L) t / T)) / 2, L = -6, U = 3  (Hsueh et al. 2019, arXiv 1806.01593)
- triangle:   linear from 1/div_factor to 1 over the first W = floor(pct_start T) steps, then linear
              to m at T (airbench, Jordan 2024, arXiv 2404.00498: 0.2 -> 1 over 23%, then -> 0.07)
- warm-up:    the factor times min(1, (t + 1) / W) for the first W steps, in front of any of them;
              `warmup_mode: constant` multiplies them by `warmup_factor` instead (ResNet-110's
              warm-up, He et al. 2016 section 4.2: 0.01 = 0.1 x 0.1 for 400 iterations, then 0.1)

`onecycle` is torch's OneCycleLR (Smith & Topin 2017), and `plateau` torch's ReduceLROnPlateau
(divide by 10 when the VALIDATION metric stops improving, as AlexNet did by hand), stepped
by `observe(metric)` after each validation.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from .config import ScheduleConfig


def total_steps(cfg: ScheduleConfig, steps_per_epoch: int) -> int:
    steps = cfg.epochs * steps_per_epoch
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def lr_factor_fn(cfg: ScheduleConfig, steps_per_epoch: int, lr: float) -> Callable[[int], float]:
    """The factor of lr0 = `lr` at optimiser step t for the formula schedules (warm-up included)."""
    unit = steps_per_epoch if cfg.unit == "epoch" else 1
    T = max(1, total_steps(cfg, steps_per_epoch))
    warmup = cfg.warmup * unit
    base = _BASE[cfg.name](cfg, unit, T, cfg.min_lr / lr)

    def factor(t: int) -> float:
        f = base(t)
        if t < warmup:
            f *= warmup_multiplier(cfg, t, warmup)
        return f

    return factor


def warmup_multiplier(cfg: ScheduleConfig, t: int, length: float) -> float:
    """What warm-up multiplies the schedule by at step t < length: a linear ramp, or a constant."""
    if cfg.warmup_mode == "constant":
        return cfg.warmup_factor
    return min(1.0, (t + 1) / length)


def _constant(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    return lambda t: 1.0


def _step(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    size = cfg.step_size * unit
    return lambda t: cfg.gamma ** math.floor(t / size)


def _multistep(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    milestones = [x * unit for x in cfg.milestones]
    return lambda t: cfg.gamma ** bisect.bisect_right(milestones, t)


def _cosine(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    return lambda t: m + (1 - m) * (1 + math.cos(math.pi * min(t, T) / T)) / 2


def _sgdr(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    def factor(t: int) -> float:
        period, t_cur = cfg.t0 * unit, float(t)
        while t_cur >= period:  # walk through the finished cycles
            t_cur -= period
            period *= cfg.t_mult
        return m + (1 - m) * (1 + math.cos(math.pi * t_cur / period)) / 2

    return factor


def _htd(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    lo, hi = cfg.htd_lower, cfg.htd_upper
    return lambda t: (1 - math.tanh(lo + (hi - lo) * min(t, T) / T)) / 2


def _triangle(cfg: ScheduleConfig, unit: float, T: int, m: float) -> Callable[[int], float]:
    start, peak = 1.0 / cfg.div_factor, max(1, math.floor(cfg.pct_start * T))

    def factor(t: int) -> float:
        if t < peak:
            return start + (1 - start) * t / peak
        return 1 + (m - 1) * min(t - peak, T - peak) / max(T - peak, 1)

    return factor


_BASE = dict(triangle=_triangle, constant=_constant, step=_step, multistep=_multistep, cosine=_cosine, sgdr=_sgdr, htd=_htd)


class Schedule:
    """One learning-rate schedule for a run: `step()` after every optimiser step, `observe(metric)`
    after every validation; `state_dict()` goes into checkpoints (plain data only)."""

    def __init__(self, optimizer: Optimizer, cfg: ScheduleConfig, *, steps_per_epoch: int, lr: float,
                 mode: str = "max"):
        self.name, self.cfg = cfg.name, cfg
        self.optimizer = optimizer
        self.t = 0
        self.total = max(1, total_steps(cfg, steps_per_epoch))
        self.warmup = cfg.warmup * (steps_per_epoch if cfg.unit == "epoch" else 1)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        if cfg.name == "onecycle":
            momentum = any(g.get("momentum", 0) > 0 or "betas" in g for g in optimizer.param_groups)
            self.torch = OneCycleLR(optimizer, max_lr=self.base_lrs, total_steps=self.total,
                                    pct_start=cfg.pct_start, div_factor=cfg.div_factor,
                                    final_div_factor=cfg.final_div_factor, cycle_momentum=momentum)
        elif cfg.name == "plateau":
            self.torch = ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience)
            self._set_warmup_lr()
        else:
            self.torch = LambdaLR(optimizer, lr_factor_fn(cfg, steps_per_epoch, lr))

    def step(self) -> None:
        self.t += 1
        if self.name == "onecycle":
            if self.t < self.total:  # OneCycleLR refuses to step past its end
                self.torch.step()
        elif self.name == "plateau":
            self._set_warmup_lr()
        else:
            self.torch.step()

    def observe(self, metric: float) -> None:
        """A validation result; only reduce-on-plateau listens (after its warm-up)."""
        if self.name == "plateau" and self.t >= self.warmup:
            self.torch.step(metric)

    def _set_warmup_lr(self) -> None:
        if self.t <= self.warmup and self.warmup > 0:
            ramp = warmup_multiplier(self.cfg, self.t, self.warmup) if self.t < self.warmup else 1.0
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * ramp

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"name": self.name, "t": self.t, "torch": self.torch.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.torch.load_state_dict(state["torch"])


def lr_curve(cfg: ScheduleConfig, *, lr: float, steps_per_epoch: int, steps: int | None = None,
             metrics: list[float] | None = None) -> list[float]:
    """The learning rate used at each step of a run (for tests and plots), from a real optimiser."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9)
    schedule = Schedule(optimizer, cfg, steps_per_epoch=steps_per_epoch, lr=lr)
    lrs = []
    for t in range(steps if steps is not None else schedule.total):
        lrs.append(schedule.lr)
        optimizer.step()
        schedule.step()
        if metrics is not None and (t + 1) % steps_per_epoch == 0:
            schedule.observe(metrics[(t + 1) // steps_per_epoch - 1])
    return lrs
