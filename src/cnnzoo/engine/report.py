"""The lines a training run prints: the banner, one line per epoch, the test, how it stopped.

Only wording lives here; the trainer decides when each is said and hands them to its
`say` callable (the progress display's writer), so the CLI decides where they go.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..analysis.summary import norm_statistics
from .config import Config
from .progress import format_metric
from .task import DataMeta

Say = Callable[[str], None]


def describe_run(say: Say, cfg: Config, meta: DataMeta, model: nn.Module, run_dir: Path, device: Any,
                 precision: str, steps_per_epoch: int) -> None:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"run directory: {run_dir}")
    say(f"data: {meta.describe()}")
    frozen = ""
    if trainable != params:
        stats = norm_statistics(model)
        frozen = (f": {trainable:,} trainable, {params - trainable:,} frozen" +
                  (f" (+ {stats:,} BatchNorm running statistics, buffers rather than parameters, also fixed)"
                   if stats else ""))
    say(f"model: {cfg.model.name}, {params:,} parameters{frozen}")
    say(f"training: {cfg.schedule.epochs} epochs x {steps_per_epoch} steps, {cfg.optim.name} lr {cfg.optim.lr:g}, "
        f"{cfg.schedule.name} schedule, batch {cfg.data.batch_size}, {device}, {precision}")


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
        say(f"skipped {len(meta.bad_images)} unreadable image(s):")
        for path, reason in meta.bad_images:
            say(f"  {path}: {reason}")


def _fmt(name: str, value: Any) -> str:
    return format_metric(name, value).split(" ", 1)[1] if isinstance(value, (int, float)) else str(value)
