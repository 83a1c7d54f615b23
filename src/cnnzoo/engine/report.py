"""The lines a training run prints: the banner, one line per epoch, the test, how it stopped.

Only wording lives here; the trainer decides when each is said and where: results (the banner,
the epoch lines, the test line) through `Progress.write` to stdout, notes and warnings (how a
run stopped, skipped images) through `Progress.note` to stderr.
"""

from __future__ import annotations

import math
import shlex
import signal
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .._text import count
from ..analysis.summary import norm_statistics
from ..registry import cite, model_info
from .config import Config, ScheduleConfig
from .progress import format_metric
from .schedulers import total_steps
from .task import DataMeta

Say = Callable[[str], None]


def run_start(say: Say, cfg: Config, run_dir: Path) -> None:
    """The first lines of a run, said before any data is read: where it writes, what it trains."""
    say(f"run directory: {run_dir}")
    say(f"model: {cfg.model.name} ({cite(model_info(cfg.model.name)['paper'])})")


def describe_run(say: Say, cfg: Config, meta: DataMeta, model: nn.Module, device: Any, precision: str,
                 steps_per_epoch: int) -> None:
    """The lines said once the data is read and the model built."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"data: {meta.describe()}")
    frozen = ""
    if trainable != params:
        stats = norm_statistics(model)
        frozen = (f": {trainable:,} trainable, {params - trainable:,} frozen" +
                  (f" (+ {stats:,} BatchNorm running statistics, buffers rather than parameters, also fixed)"
                   if stats else ""))
    say(f"parameters: {params:,}{frozen}")
    say(f"training: {planned_training(cfg.schedule, steps_per_epoch)}, {cfg.optim.name} lr {cfg.optim.lr:g}, "
        f"{cfg.schedule.name} schedule, batch {cfg.data.batch_size}, {device}, {precision}")


def planned_epochs(schedule: ScheduleConfig, steps_per_epoch: int) -> int:
    """The epochs the run will reach: schedule.epochs, fewer when schedule.max_steps ends it sooner."""
    return math.ceil(total_steps(schedule, steps_per_epoch) / steps_per_epoch)


def planned_training(schedule: ScheduleConfig, steps_per_epoch: int) -> str:
    """`20 epochs x 21 steps`, or with max_steps stopping sooner, `2 epochs x 21 steps, stopping at step 30`."""
    text = f"{count(planned_epochs(schedule, steps_per_epoch), 'epoch')} x {count(steps_per_epoch, 'step')}"
    total = total_steps(schedule, steps_per_epoch)
    if total < schedule.epochs * steps_per_epoch:
        text += f", stopping at step {total:,} (max steps)"
    return text


def resuming(path: Path, epoch: int, batch: int, step: int) -> str:
    return f"resuming from {path}: epoch {epoch + 1}, batch {batch}, step {step}"


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    train = " ".join(format_metric(k[6:], v) for k, v in row.items() if k.startswith("train_"))
    val = " ".join(format_metric(k[4:], v) for k, v in row.items() if k.startswith("val_"))
    parts = [f"epoch {row['epoch']}/{epochs}", f"train {train}"]
    if val:
        parts.append(f"val {val}")
    parts.append(f"lr {row['lr']:.4g}")
    parts.append(f"{row['time']:.1f}s {row['images_per_s']:,.0f} img/s")
    return " | ".join(parts) + ("  * best" if improved else "")


def test_line(which: str, epoch: int, chosen: dict, has_val: bool, test: dict[str, float]) -> str:
    if chosen.get("value") is not None:
        basis = f"{which}, epoch {epoch}, chosen on {chosen['metric']} {_fmt(chosen['metric'], chosen['value'])}"
    elif not has_val:
        basis = f"{which}, epoch {epoch}: no validation split"
    else:  # every validation lacked the monitored metric: nothing was selected
        basis = f"{which}, epoch {epoch}: no epoch was selected on validation"
    return f"test ({basis}): " + ", ".join(format_metric(k, v) for k, v in test.items())


def stopped(signum: int | None, run_dir: Path, step: int, how: str) -> str:
    """how: "saved" (a checkpoint of this step was written), "at_once" (a second signal), "test"
    (during the final test, after training ended)."""
    name = signal.Signals(signum).name if signum else "signal"
    what = {"saved": f"stopped by {name}; checkpoint saved at step {step}",
            "at_once": f"stopped at once by a second {name}; the last complete checkpoint is kept",
            "test": f"stopped by {name} during the final test; training is complete"}[how]
    if how == "test":
        return f"{what}. Test best.pt with:\n  cnnzoo eval {shlex.quote(str(run_dir / 'best.pt'))}"
    if (run_dir / "last.pt").exists():
        return f"{what}. Resume with:\n  cnnzoo train --resume {shlex.quote(str(run_dir))}"
    return f"{what}; nothing was saved"


def write_failed(run_dir: Path, err: Exception) -> str:
    reason = " ".join(str(err).split())[:200]
    if (run_dir / "last.pt").exists():
        return (f"could not write to {run_dir} ({reason}); the last good checkpoint is kept. Free some space, then "
                f"resume with: cnnzoo train --resume {shlex.quote(str(run_dir))}")
    return f"could not write to {run_dir} ({reason}); nothing was saved. Free some space and start again"


def bad_images(say: Say, meta: DataMeta) -> None:
    if meta.bad_images:
        say(f"skipped {count(len(meta.bad_images), 'unreadable image')}:")
        for path, reason in meta.bad_images:
            say(f"  {path}: {reason}")


def _fmt(name: str, value: Any) -> str:
    return format_metric(name, value).split(" ", 1)[1] if isinstance(value, (int, float)) else str(value)
