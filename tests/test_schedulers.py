"""Every learning-rate schedule, driven through a real optimiser, against its formula written out here."""

from __future__ import annotations

import math

import pytest
import torch

from cnnzoo.engine.config import ScheduleConfig
from cnnzoo.engine.schedulers import Schedule, lr_curve

LR = 0.1
SPE = 10  # steps per epoch


def sched(**kw) -> ScheduleConfig:
    return ScheduleConfig(**{"epochs": 12, **kw})


def close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for t, (a, e) in enumerate(zip(actual, expected)):
        assert a == pytest.approx(e, rel=1e-9, abs=1e-12), f"step {t}: {a} != {e}"


def test_step_decay_every_step_size_epochs():
    lrs = lr_curve(sched(name="step", step_size=3, gamma=0.5), lr=LR, steps_per_epoch=SPE)
    close(lrs, [LR * 0.5 ** (t // 30) for t in range(120)])


def test_multistep_milestones_in_epochs_and_in_steps():
    lrs = lr_curve(sched(name="multistep", milestones=[4, 9]), lr=LR, steps_per_epoch=SPE)
    close(lrs, [LR * 0.1 ** ((t >= 40) + (t >= 90)) for t in range(120)])
    # The ResNet paper's form: milestones and the end given in iterations.
    cfg = sched(name="multistep", unit="step", milestones=[32, 48], max_steps=64, epochs=100)
    lrs = lr_curve(cfg, lr=LR, steps_per_epoch=SPE)
    close(lrs, [LR * 0.1 ** ((t >= 32) + (t >= 48)) for t in range(64)])


def test_cosine_with_floor():
    T = 120
    lrs = lr_curve(sched(name="cosine", min_lr=0.001), lr=LR, steps_per_epoch=SPE)
    close(lrs, [0.001 + (LR - 0.001) * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)])
    assert lrs[0] == pytest.approx(LR) and lrs[-1] < 0.0011


def test_sgdr_restarts_with_growing_periods():
    cfg = sched(name="sgdr", t0=2, t_mult=2, epochs=14)  # cycles of 20, 40, 80 steps
    lrs = lr_curve(cfg, lr=LR, steps_per_epoch=SPE)
    expected = []
    for t in range(140):
        start, period = 0, 20
        while t >= start + period:
            start, period = start + period, period * 2
        expected.append(LR * (1 + math.cos(math.pi * (t - start) / period)) / 2)
    close(lrs, expected)
    assert lrs[20] == pytest.approx(LR) and lrs[60] == pytest.approx(LR)  # the restarts
    assert lrs[19] < 0.002 and lrs[59] < 0.001


def test_hyperbolic_tangent_decay_paper_bounds():
    T = 120
    lrs = lr_curve(sched(name="htd"), lr=LR, steps_per_epoch=SPE)
    close(lrs, [LR / 2 * (1 - math.tanh(-6 + 9 * t / T)) for t in range(T)])
    assert lrs[0] == pytest.approx(LR, rel=1e-5)  # tanh(-6) ~ -1: starts at lr0
    lrs = lr_curve(sched(name="htd", htd_lower=-4, htd_upper=4), lr=LR, steps_per_epoch=SPE)
    close(lrs, [LR / 2 * (1 - math.tanh(-4 + 8 * t / T)) for t in range(T)])


@pytest.mark.parametrize("name", ["step", "cosine", "htd", "constant"])
def test_linear_warmup_in_front(name):
    plain = lr_curve(sched(name=name, step_size=3), lr=LR, steps_per_epoch=SPE)
    warm = lr_curve(sched(name=name, step_size=3, warmup=2), lr=LR, steps_per_epoch=SPE)
    W = 2 * SPE
    close(warm, [p * min(1.0, (t + 1) / W) for t, p in enumerate(plain)])
    assert warm[0] == pytest.approx(plain[0] / W)


def test_one_cycle_shape():
    cfg = sched(name="onecycle", pct_start=0.25, div_factor=25, final_div_factor=1e4)
    lrs = lr_curve(cfg, lr=LR, steps_per_epoch=SPE)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(LR / 25)
    assert lrs[peak] == pytest.approx(LR) and abs(peak - 0.25 * 120) <= 1
    assert lrs[-1] == pytest.approx(LR / 25 / 1e4, rel=1e-2)
    # cosine annealing on both sides (torch's formula)
    up = [LR / 25 + (LR - LR / 25) * (1 - math.cos(math.pi * t / (peak))) / 2 for t in range(peak + 1)]
    close(lrs[: peak + 1], up)


def test_plateau_divides_by_ten_on_validation_metric():
    cfg = sched(name="plateau", patience=1, epochs=8)
    # accuracy improves for 2 epochs, then stalls: after patience+1 bad epochs the lr is divided by 10.
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7]
    lrs = lr_curve(cfg, lr=LR, steps_per_epoch=SPE, metrics=metrics)
    per_epoch = [lrs[e * SPE] for e in range(8)]
    assert per_epoch == pytest.approx([LR, LR, LR, LR, LR * 0.1, LR * 0.1, LR * 0.01, LR * 0.01])


def test_plateau_with_warmup_ramps_first():
    cfg = sched(name="plateau", warmup=1, epochs=3)
    lrs = lr_curve(cfg, lr=LR, steps_per_epoch=SPE, metrics=[0.1, 0.2, 0.3])
    close(lrs[:SPE], [LR * (t + 1) / SPE for t in range(SPE)])
    assert lrs[SPE:] == pytest.approx([LR] * 2 * SPE)


@pytest.mark.parametrize("name", ["cosine", "sgdr", "onecycle", "plateau", "multistep"])
def test_schedule_state_resumes_on_the_same_curve(name):
    cfg = sched(name=name, milestones=[3, 7], t0=2)
    straight = lr_curve(cfg, lr=LR, steps_per_epoch=SPE)

    def make():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=LR, momentum=0.9)
        return opt, Schedule(opt, cfg, steps_per_epoch=SPE, lr=LR)

    opt, s = make()
    for _ in range(37):
        opt.step()
        s.step()
    saved_opt, saved = opt.state_dict(), s.state_dict()
    opt2, s2 = make()
    opt2.load_state_dict(saved_opt)
    s2.load_state_dict(saved)
    resumed = []
    for _ in range(37, 120):
        resumed.append(s2.lr)
        opt2.step()
        s2.step()
    close(resumed, straight[37:])
