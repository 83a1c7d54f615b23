"""What a training checkpoint holds, how a run is put back from one, and when it may not be.

A checkpoint holds everything needed to continue bit for bit (weights, optimiser, schedule,
grad scaler, data position, RNG states, running metrics) as plain data that loads with
`torch.load(weights_only=True)`. A resume is refused, naming the keys, when the model, the
data or a setting differs from the checkpoint's; the settings that may change are the config
fields declared `resumable` (cnnzoo.engine.config), and the dataset's path: the data is the same
when its fingerprint is (a moved dataset is found again with `--data NEWPATH`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import CnnzooError
from .checkpoint import (
    atomic_save,
    capture_rng_state,
    find_resume_checkpoint,
    restore_rng_state,
)
from .checkpoint_schema import check_resumable
from .config import Config, config_from_dict, config_to_dict, resumable_keys
from .schedulers import Schedule
from .task import DataMeta, Task

CHECKPOINT_FORMAT = "cnnzoo-train-1"


class RunFailure(CnnzooError):
    """A run stopped by a failure at run time, not by bad input (the CLI exits 1); the
    checkpoints on disk are the last good ones."""


class NonFiniteLossError(RunFailure):
    """The loss (or the weights) became NaN/inf."""


class RunWriteError(RunFailure):
    """A run file (checkpoint, metrics.csv, ...) could not be written: a full disk, say."""


class ResumeError(CnnzooError):
    """A checkpoint that this run cannot continue (another model, dataset or setting)."""


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint as plain data."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches consumed in the current epoch (the data loader's position)
    step: int = 0  # optimiser steps taken (drives the schedule); skipped batches do not count
    skipped: int = 0  # batches skipped for a non-finite loss
    best: dict = field(default_factory=dict)  # {metric, mode, value, epoch, step}
    history: list = field(default_factory=list)  # one metrics.csv row per epoch
    running: dict = field(default_factory=dict)  # RunningMean state of the epoch in progress


@dataclass
class Run:
    """The objects of one training run that a checkpoint captures."""

    cfg: Config
    task: Task
    meta: DataMeta
    model: nn.Module  # the model itself, not a torch.compile wrapper
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    loader: Any  # the training loader (its position is part of the checkpoint)
    run_dir: Path
    dist: Any = None  # cnnzoo.engine.distributed.Distributed of a run of several processes (rank 0 writes)
    averager: Any = None  # a WeightAverage (lookahead) whose average is part of the checkpoint


@dataclass
class Resume:
    path: Path
    checkpoint: dict


def checkpoint_dict(run: Run, state: TrainState, ranks_rng: list | None = None) -> dict:
    """Everything a resume or an evaluation needs, as weights_only-loadable plain data
    (`ranks_rng`: every process's RNG state, for a run of several processes)."""
    meta = run.meta
    extra = {"distributed": run.dist.checkpoint_entry(ranks_rng)} if ranks_rng is not None else {}
    return {
        "format": CHECKPOINT_FORMAT,
        "cnnzoo_version": __version__,
        "task": run.task.name,
        "model_name": run.cfg.model.name,
        "model": run.model.state_dict(),
        "num_classes": meta.num_classes,
        "in_chans": meta.in_chans,
        "classes": list(meta.classes),
        "dataset": meta.dataset,
        "fingerprint": meta.fingerprint,
        "preprocessing": {"mean": list(meta.mean), "std": list(meta.std), "input_size": list(meta.input_size)},
        "meta": meta.to_dict(),
        "config": config_to_dict(run.cfg),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "loader": run.loader.state_dict(),
        "rng": capture_rng_state(),
        "epoch": state.epoch,
        "step": state.step,
        "state": dataclasses.asdict(state),
        **extra,
        **({"weight_average": run.averager.state_dict()} if run.averager is not None else {}),
    }


def save_checkpoint(run: Run, state: TrainState, name: str) -> Path:
    """Atomically write run_dir/name, refusing weights that are not finite. With several
    processes every one of them calls this (their RNG states are gathered) and rank 0 writes."""
    bad = [n for n, p in run.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(
            f"the weights became non-finite ({bad[0]}{' and others' if len(bad) > 1 else ''}) by step {state.step}; "
            f"{name} was not overwritten, the last good checkpoints are in {run.run_dir}")
    path = run.run_dir / name
    ranks_rng = run.dist.gather_rng() if run.dist is not None else None
    if run.dist is None or run.dist.is_main:
        atomic_save(checkpoint_dict(run, state, ranks_rng), path)
    return path


def restore(ckpt: dict, run: Run) -> TrainState:
    """Put model, optimiser, schedule, scaler, data position and RNGs back where the checkpoint was."""
    state = TrainState(**ckpt["state"])  # its keys and types are checked by check_resumable
    parts = (("weights", lambda: run.model.load_state_dict(ckpt["model"])),
             ("optimizer state", lambda: _restore_optimizer(run.optimizer, ckpt["optimizer"])),
             ("schedule state", lambda: run.schedule.load_state_dict(ckpt["scheduler"])),
             ("grad scaler state", lambda: run.scaler.load_state_dict(ckpt["scaler"])),
             ("weight average", lambda: run.averager is None or "weight_average" not in ckpt
              or run.averager.load_state_dict(ckpt["weight_average"])),
             ("data position", lambda: _restore_loader(run.loader, ckpt["loader"], state)),
             ("random generator states", lambda: restore_rng_state(ckpt["rng"])),
             ("per-process random generator states", lambda: run.dist is None or run.dist.restore_rng(ckpt)))
    for what, load in parts:
        try:
            load()
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise ResumeError(f"cannot restore the {what} of the checkpoint in {run.run_dir}: {first_line(err)}") from None
    return state


def _restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load the optimiser's state, then check that every per-parameter buffer (momentum, Adam's
    moments) has its parameter's shape: torch checks only the group sizes."""
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(f"{name} has shape {tuple(value.shape)} for a parameter of shape {tuple(param.shape)}")


def _restore_loader(loader: Any, saved: dict, state: TrainState) -> None:
    if state.batch > len(loader):
        raise ValueError(f"the run stopped at batch {state.batch} of an epoch that has {len(loader)}")
    if state.batch > 0:
        loader.load_state_dict(saved)


def check_resume(resume: Resume, cfg: Config, task: Task, meta: DataMeta) -> None:
    """Refuse to continue a checkpoint with another model, data or setting, saying which."""
    ckpt = resume.checkpoint
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{resume.path} is not a cnnzoo training checkpoint (format {ckpt.get('format')!r})")
    problems = []
    if ckpt.get("task") != task.name:
        problems.append(f"task: {ckpt.get('task')} in the checkpoint, {task.name} now")
    for key, label, now in (("num_classes", "number of classes", meta.num_classes),
                            ("in_chans", "input channels", meta.in_chans)):
        if ckpt.get(key) != now:
            problems.append(f"{label}: {ckpt.get(key)} in the checkpoint, {now} in this data")
    before, now = _flatten(ckpt.get("config", {})), _flatten(config_to_dict(cfg))
    same_data = ckpt.get("fingerprint") == meta.fingerprint
    if not same_data:
        problems.append(f"dataset: the checkpoint was trained on {before.get('data.dataset')} (fingerprint "
                        f"{str(ckpt.get('fingerprint'))[:16]}), this run loads {now.get('data.dataset')} (fingerprint "
                        f"{meta.fingerprint[:16]}): other files, or copies with new modification times (`cp -a` and "
                        "`rsync -a` keep them)")
    # The data is known by its fingerprint, not by where it is: a moved dataset resumes (--data NEWPATH).
    defaults = _flatten(config_to_dict(Config()))  # keys added since the checkpoint was written have their defaults
    changeable = resumable_keys() | {"data.dataset"}
    for key in sorted(set(before) | set(now)):
        if before.get(key, defaults.get(key)) != now.get(key) and key not in changeable:
            problems.append(f"{key}: {before.get(key)!r} in the checkpoint, {now.get(key)!r} now")
    if problems:
        raise ResumeError(f"cannot resume {resume.path}: " + "; ".join(problems)
                          + ". Resume with the original settings, or start a new run without --resume")


def load_resume(run_dir: str | Path, *, trust: bool = False) -> Resume:
    check = functools.partial(check_resumable, state_keys=TrainState.__dataclass_fields__.keys())
    path, ckpt = find_resume_checkpoint(run_dir, trust=trust, check=check)
    return Resume(path, ckpt)


def resume_config(resume: Resume) -> dict:
    """The raw config dict stored in a checkpoint (to apply command-line overrides to)."""
    stored = resume.checkpoint.get("config")
    if not isinstance(stored, dict):
        raise ResumeError(f"{resume.path} holds no training configuration; it cannot be resumed")
    config_from_dict(stored)  # fails loudly if this version cannot read it
    return stored


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and key not in ("kwargs", "task_options"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]
