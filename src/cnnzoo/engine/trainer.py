"""The training loop: one function, `train(cfg)`, readable top to bottom.

A run: set up (device, data, model, optimiser, schedule; or restore all of them from a
checkpoint), then epochs of steps, then one test of best.pt. Each step is forward under
autocast, a non-finite check, backward, optimiser and schedule step. Each epoch ends with a
validation pass (the only data that selects best.pt and drives reduce-on-plateau), a row in
metrics.csv and atomic saves of best.pt and last.pt.

Nothing is lost on the way: a checkpoint holds everything needed to continue bit for bit
(weights, optimiser, schedule, grad scaler, data position, RNG states, running metrics);
SIGINT/SIGTERM stop after the current step with a checkpoint and the command to resume; a
NaN/inf loss never reaches the weights or the checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .. import __version__
from ..errors import CnnzooError
from .checkpoint import atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from .config import Config, ConfigError, config_from_dict, config_to_dict, validate
from .metrics import RunLog, RunningMean
from .optim import build_optimizer, freeze_backbone, set_train_mode
from .progress import Progress, format_metric
from .schedulers import Schedule, total_steps
from .signals import StopRequest
from .task import Task, TaskData, get_task
from .weights_init import load_initial_weights

CHECKPOINT_FORMAT = "cnnzoo-train-1"
# Test hook: optimiser steps (comma-separated) whose loss is replaced by NaN, to prove that a
# non-finite loss never reaches the weights or a checkpoint. Used by tests/test_engine_nonfinite.py.
INJECT_NAN_ENV = "CNNZOO_INJECT_NAN_STEPS"
# Keys that may change when a run is resumed (runtime.seed excepted); any other difference is refused.
RESUMABLE_CHANGES = ("schedule.epochs", "schedule.max_steps", "runtime.", "eval.", "data.num_workers",
                     "data.cache_dir", "data.eval_batch_size", "data.on_bad_image", "data.max_bad_images",
                     "data.download")


class NonFiniteLossError(CnnzooError):
    """The loss (or the weights) became NaN/inf; the checkpoints on disk are the last good ones."""


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
class RunResult:
    run_dir: Path
    state: TrainState
    test: dict[str, float] | None = None
    interrupted: int | None = None  # the signal number when stopped by SIGINT/SIGTERM

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted if self.interrupted else 0


@dataclass
class Resume:
    path: Path
    checkpoint: dict


def train(cfg: Config, *, resume: Resume | None = None, progress: Progress | None = None) -> RunResult:
    validate(cfg)
    progress = progress or Progress(cfg.runtime.progress, log_every=cfg.runtime.log_every)
    say = progress.write
    with StopRequest() as stop:  # from the start: a Ctrl-C while data loads is handled too
        task = get_task(cfg.task)
        device = resolve_device(cfg.runtime.device)
        amp_dtype = resolve_amp(cfg.runtime.amp, device)
        channels_last = cfg.runtime.channels_last if cfg.runtime.channels_last is not None else device.type in ("cuda", "cpu")
        run_cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device=str(device),
                                                                       channels_last=channels_last))

        # ---- data, model, optimiser, schedule
        seed_everything(cfg.runtime.seed)
        data = task.build_data(run_cfg, device)
        if hasattr(task, "check_config"):
            task.check_config(cfg, data.meta)
        if resume is not None:
            check_resume(resume, cfg, task, data.meta)
        raw_model = task.build_model(run_cfg, data.meta)
        if cfg.model.init_from and resume is None:
            say(load_initial_weights(raw_model, cfg.model.init_from, trust=cfg.runtime.trust_checkpoint))
        if cfg.model.freeze_backbone:
            freeze_backbone(raw_model)
        raw_model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        optimizer = build_optimizer(raw_model, cfg.optim)
        steps_per_epoch = len(data.train)
        if steps_per_epoch == 0:
            raise ConfigError(f"data.batch_size: the training split has {data.meta.get('sizes', {}).get('train')} "
                              f"images, fewer than one batch of {cfg.data.batch_size} with data.drop_last")
        monitor, mode = task.monitor
        schedule = Schedule(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, lr=cfg.optim.lr, mode=mode)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        state = TrainState(best={"metric": f"val_{monitor}", "mode": mode, "value": None})
        if resume is not None:
            state = restore(resume.checkpoint, raw_model, optimizer, schedule, scaler, data)
        model = torch.compile(raw_model) if cfg.runtime.compile else raw_model
        autocast = functools.partial(torch.autocast, device.type, dtype=amp_dtype or torch.bfloat16,
                                     enabled=amp_dtype is not None)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # ---- run directory
        run_dir = resume.path.parent if resume is not None else make_run_dir(cfg, data.meta)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        log = RunLog(run_dir, state.history, tensorboard=cfg.runtime.tensorboard,
                     purge_step=state.step if resume is not None else None)
        context = dict(cfg=cfg, task=task, meta=data.meta, raw_model=raw_model, optimizer=optimizer,
                       schedule=schedule, scaler=scaler, loader=data.train, run_dir=run_dir)
        total = total_steps(cfg.schedule, steps_per_epoch)
        frozen = cfg.model.freeze_backbone
        _describe_run(say, cfg, data, raw_model, run_dir, device, amp_dtype, steps_per_epoch, resume, state)
        nan_steps = _injected_nan_steps()

        # ---- training
        try:
            if stop.requested:  # a signal while the data loaded: nothing new to save
                return _stopped(say, stop, run_dir, state, "early")
            while state.epoch < cfg.schedule.epochs and state.step < total:
                data.train.set_epoch(state.epoch)  # keeps a restored mid-epoch position
                set_train_mode(raw_model, frozen)
                running = RunningMean(state.running)
                started = time.perf_counter()
                desc = f"epoch {state.epoch + 1}/{cfg.schedule.epochs}"
                with progress.loop(steps_per_epoch, desc, initial=state.batch) as bar:
                    for batch in data.train:
                        values = _train_step(context, state, model, batch, autocast, nan_steps, say)
                        if values is None:  # skipped for a non-finite loss
                            continue
                        running.update(values, len(batch[0]))
                        state.running = running.state_dict()
                        bar.update(len(batch[0]), running.means())
                        if state.step % cfg.runtime.log_every == 0:
                            log.add_step({"loss": values["loss"], "lr": schedule.lr}, state.step)
                        if cfg.runtime.save_every_steps and state.step % cfg.runtime.save_every_steps == 0:
                            save_checkpoint(context, state, "last.pt")
                        if stop.requested or state.step >= total:
                            break
                epoch_done = state.batch >= steps_per_epoch or state.step >= total
                if stop.requested and not epoch_done:
                    save_checkpoint(context, state, "last.pt")
                    return _stopped(say, stop, run_dir, state)
                # end of epoch: validate, log, save
                train_time = time.perf_counter() - started
                val = _evaluate(task.evaluate, model, data.val, autocast, progress, "val") if data.val else {}
                _check_validation(val, state, run_dir)
                if monitor in val:
                    schedule.observe(val[monitor])
                state.epoch, state.batch, state.running = state.epoch + 1, 0, {}
                row = {"epoch": state.epoch, "step": state.step,
                       **{f"train_{k}": v for k, v in running.means().items()},
                       **{f"val_{k}": v for k, v in val.items()},
                       "lr": schedule.lr, "time": time.perf_counter() - started,
                       "images_per_s": bar.images / max(train_time, 1e-9)}  # this session's images only
                log.add_epoch(row)
                improved = _improves(state.best, val.get(monitor), val.get("loss"))
                if improved:
                    state.best.update(value=val[monitor], loss=val.get("loss"), epoch=state.epoch, step=state.step)
                    save_checkpoint(context, state, "best.pt")
                save_checkpoint(context, state, "last.pt")
                say(_epoch_line(row, cfg.schedule.epochs, improved))
                if stop.requested:
                    return _stopped(say, stop, run_dir, state)
        except KeyboardInterrupt:  # a second Ctrl-C: leave at once; atomic saves keep the files whole
            stop.requested = stop.requested or 2
            return _stopped(say, stop, run_dir, state, "at_once")
        finally:
            log.close()

        # ---- test once, with the weights chosen on validation
        result = RunResult(run_dir, state)
        if data.test is not None:
            result.test = _final_test(say, task, model, raw_model, data, run_dir, autocast, progress)
        else:
            say(f"no test split in {data.meta.get('dataset')}: nothing was tested; best.pt is the best on validation")
        _report_bad_images(say, data.meta)
        return result


# ---------------------------------------------------------------------------- set-up helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but no CUDA device is available; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but MPS is not available; use cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA where supported, else fp16 (with a grad scaler); off on CPU/MPS."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("runtime.amp: fp16 autocast needs a CUDA device; use bf16 on the CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_run_dir(cfg: Config, meta: dict) -> Path:
    if cfg.runtime.out:
        run_dir = Path(cfg.runtime.out)
        if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
            raise CnnzooError(f"{run_dir} already holds a run; continue it with `cnnzoo train --resume {run_dir}` "
                              "or choose another --out")
    else:
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(meta.get("dataset", "data")).split(":")[-1]).name)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.model.name}-{dataset.strip('-') or 'data'}-{stamp}"
        n = 2
        while run_dir.exists():
            run_dir = run_dir.with_name(f"{cfg.model.name}-{dataset}-{stamp}-{n}")
            n += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_dict(context: dict, state: TrainState) -> dict:
    """Everything a resume or an evaluation needs, as weights_only-loadable plain data."""
    cfg, meta, task = context["cfg"], context["meta"], context["task"]
    return {
        "format": CHECKPOINT_FORMAT,
        "cnnzoo_version": __version__,
        "task": task.name,
        "model_name": cfg.model.name,
        "model": context["raw_model"].state_dict(),
        "num_classes": meta.get("num_classes"),
        "in_chans": meta.get("in_chans"),
        "classes": meta.get("classes"),
        "dataset": meta.get("dataset"),
        "fingerprint": meta.get("fingerprint"),
        "preprocessing": {"mean": meta.get("mean"), "std": meta.get("std"), "input_size": meta.get("input_size")},
        "meta": meta,
        "config": config_to_dict(cfg),
        "optimizer": context["optimizer"].state_dict(),
        "scheduler": context["schedule"].state_dict(),
        "scaler": context["scaler"].state_dict(),
        "loader": context["loader"].state_dict(),
        "rng": capture_rng_state(),
        "epoch": state.epoch,
        "step": state.step,
        "state": dataclasses.asdict(state),
    }


def save_checkpoint(context: dict, state: TrainState, name: str) -> Path:
    """Atomically write run_dir/name, refusing weights that are not finite."""
    model = context["raw_model"]
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(
            f"the weights became non-finite ({bad[0]}{' and others' if len(bad) > 1 else ''}) by step {state.step}; "
            f"{name} was not overwritten, the last good checkpoints are in {context['run_dir']}")
    path = context["run_dir"] / name
    atomic_save(checkpoint_dict(context, state), path)
    return path


def restore(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
            scaler: torch.amp.GradScaler, data: TaskData) -> TrainState:
    """Put model, optimiser, schedule, scaler, data position and RNGs back where the checkpoint was."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ResumeError(f"the checkpoint's weights do not fit this model: {_first_line(err)}") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    state = TrainState(**ckpt["state"])
    if state.batch > 0:
        data.train.load_state_dict(ckpt["loader"])
    restore_rng_state(ckpt["rng"])
    return state


def check_resume(resume: Resume, cfg: Config, task: Task, meta: dict) -> None:
    """Refuse to continue a checkpoint with another model, data or setting, saying which."""
    ckpt = resume.checkpoint
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{resume.path} is not a cnnzoo training checkpoint (format {ckpt.get('format')!r})")
    problems = []
    if ckpt.get("task") != task.name:
        problems.append(f"task: {ckpt.get('task')} in the checkpoint, {task.name} now")
    for key, label in (("num_classes", "number of classes"), ("in_chans", "input channels")):
        if ckpt.get(key) != meta.get(key):
            problems.append(f"{label}: {ckpt.get(key)} in the checkpoint, {meta.get(key)} in this data")
    if ckpt.get("fingerprint") != meta.get("fingerprint"):
        problems.append(f"dataset: the checkpoint was trained on {ckpt.get('dataset')} "
                        f"({str(ckpt.get('fingerprint'))[:16]}), this run loads {meta.get('dataset')} "
                        f"({str(meta.get('fingerprint'))[:16]})")
    before, now = _flatten(ckpt.get("config", {})), _flatten(config_to_dict(cfg))
    for key in sorted(set(before) | set(now)):
        changeable = key.startswith(RESUMABLE_CHANGES) and key != "runtime.seed"
        if before.get(key) != now.get(key) and not changeable:
            problems.append(f"{key}: {before.get(key)!r} in the checkpoint, {now.get(key)!r} now")
    if problems:
        raise ResumeError(f"cannot resume {resume.path}: " + "; ".join(problems)
                          + ". Resume with the original settings, or start a new run without --resume")


def load_resume(run_dir: str | Path, *, trust: bool = False) -> Resume:
    from .checkpoint import find_resume_checkpoint

    path, ckpt = find_resume_checkpoint(run_dir, trust=trust)
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
        if isinstance(value, dict) and key != "kwargs" and key != "task_options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------- loop helpers


def _train_step(context: dict, state: TrainState, model: nn.Module, batch: tuple, autocast, nan_steps: set[int],
                say) -> dict[str, float] | None:
    """Forward, non-finite check, backward, update, schedule step: the loss and the task's
    metrics as floats, or None when the batch was skipped for a non-finite loss."""
    cfg, optimizer, scaler = context["cfg"], context["optimizer"], context["scaler"]
    with autocast():
        loss, metrics = context["task"].training_loss(model, batch)
    if state.step in nan_steps:
        nan_steps.discard(state.step)
        loss = loss * float("nan")
    state.batch += 1
    values = _to_host({**metrics, "loss": loss.detach()})  # the one host sync of a step
    if not math.isfinite(values["loss"]):
        state.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        _check_skip_budget(cfg, state, values["loss"], context["run_dir"])
        say(f"warning: non-finite loss ({values['loss']}) at step {state.step}: batch skipped "
            f"({state.skipped}/{cfg.runtime.skip_nonfinite} allowed)")
        return None
    scaler.scale(loss).backward()
    if cfg.optim.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(context["raw_model"].parameters(), cfg.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    context["schedule"].step()
    state.step += 1
    return values


def _to_host(values: dict[str, Any]) -> dict[str, float]:
    """Floats of a dict of numbers and 0-d tensors, with all the tensors fetched in one transfer
    (a float() per metric would wait for the device once per metric)."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    fetched = dict(zip(tensors, torch.stack([v.double().reshape(()) for v in tensors.values()]).tolist())) \
        if tensors else {}
    return {k: fetched[k] if k in fetched else float(v) for k, v in values.items()}



def _evaluate(fn, model: nn.Module, loader, autocast, progress: Progress, desc: str) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast():
            return {k: float(v) for k, v in fn(model, progress.wrap(loader, len(loader), desc)).items()}
    finally:
        model.train(was_training)


def _final_test(say, task: Task, model: nn.Module, raw_model: nn.Module, data: TaskData, run_dir: Path,
                autocast, progress: Progress) -> dict[str, float]:
    """The single look at the test set, with best.pt (chosen on validation) when there is one."""
    which = "best.pt" if (run_dir / "best.pt").exists() else "last.pt"
    ckpt = load_checkpoint(run_dir / which)
    raw_model.load_state_dict(ckpt["model"])
    evaluate = getattr(task, "evaluate_test", task.evaluate)
    test = _evaluate(evaluate, model, data.test, autocast, progress, "test")
    chosen = ckpt["state"]["best"] if which == "best.pt" else {}
    results = {"checkpoint": which, "epoch": ckpt["epoch"], "step": ckpt["step"],
               "selected_by": chosen.get("metric"), "selected_value": chosen.get("value"),
               "test": test}
    (run_dir / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if chosen.get("value") is not None:
        basis = f"{which}, epoch {ckpt['epoch']}, chosen on {chosen['metric']} {_fmt(chosen['metric'], chosen['value'])}"
    elif data.val is None:
        basis = f"{which}, epoch {ckpt['epoch']}: no validation split"
    else:  # every validation lacked the monitored metric: nothing was selected
        basis = f"{which}, epoch {ckpt['epoch']}: no epoch was selected on validation"
    say(f"test ({basis}): " + ", ".join(format_metric(k, v) for k, v in test.items()))
    return test


def _improves(best: dict, value: float | None, loss: float | None) -> bool:
    """Better on the monitored metric; on a tie (common for accuracy on small validation sets),
    a lower validation loss decides."""
    if value is None or not math.isfinite(value):
        return False
    if best.get("value") is None:
        return True
    if value == best["value"] and loss is not None and best.get("loss") is not None and best["metric"] != "val_loss":
        return loss < best["loss"]
    return value > best["value"] if best["mode"] == "max" else value < best["value"]


def _check_skip_budget(cfg: Config, state: TrainState, loss_value: float, run_dir: Path) -> None:
    if state.skipped <= cfg.runtime.skip_nonfinite:
        return
    last = run_dir / "last.pt"
    kept = f"last.pt and best.pt were left as they were ({last})" if last.exists() else "no checkpoint was written"
    allowed = (f"after skipping {cfg.runtime.skip_nonfinite} bad step(s) " if cfg.runtime.skip_nonfinite else "")
    raise NonFiniteLossError(
        f"non-finite loss ({loss_value}) at epoch {state.epoch + 1}, step {state.step} {allowed}- the model was not "
        f"updated with it and {kept}. Lower optim.lr, check the data, or skip up to N bad steps with "
        "--skip-nonfinite N")


def _check_validation(val: dict[str, float], state: TrainState, run_dir: Path) -> None:
    """Stop on non-finite validation metrics as on a non-finite loss: the weights are finite but
    the model's outputs overflow, so training has diverged; this epoch is never saved or selected."""
    bad = {k: v for k, v in val.items() if not math.isfinite(v)}
    if not bad:
        return
    last = run_dir / "last.pt"
    kept = (f"last.pt and best.pt were left as they were ({last})" if last.exists()
            else "no checkpoint was written")
    metrics = ", ".join(f"{k} {v}" for k, v in bad.items())
    raise NonFiniteLossError(
        f"non-finite validation metrics ({metrics}) after epoch {state.epoch + 1}, step {state.step}: training "
        f"diverged (the model's outputs overflow); this epoch was not selected as best and {kept}. "
        "Lower optim.lr, or limit the updates with optim.grad_clip")


def _injected_nan_steps() -> set[int]:
    raw = os.environ.get(INJECT_NAN_ENV, "").strip()
    return {int(s) for s in raw.split(",") if s.strip()} if raw else set()


def _stopped(say, stop: StopRequest, run_dir: Path, state: TrainState, how: str = "saved") -> RunResult:
    """how: "saved" (a checkpoint of this step was written), "at_once" (a second signal), "early"
    (a signal before the first step)."""
    name = signal.Signals(stop.requested).name if stop.requested else "signal"
    what = {"saved": f"stopped by {name}; checkpoint saved at step {state.step}",
            "at_once": f"stopped at once by a second {name}; the last complete checkpoint is kept",
            "early": f"stopped by {name} before the first step"}[how]
    if (run_dir / "last.pt").exists():
        say(f"{what}. Resume with:\n  cnnzoo train --resume {shlex.quote(str(run_dir))}")
    else:
        say(f"{what}; nothing was saved")
    return RunResult(run_dir, state, interrupted=stop.requested)


def _fmt(name: str, value: Any) -> str:
    return format_metric(name, value).split(" ", 1)[1] if isinstance(value, (int, float)) else str(value)


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    train = " ".join(format_metric(k[6:], v) for k, v in row.items() if k.startswith("train_"))
    val = " ".join(format_metric(k[4:], v) for k, v in row.items() if k.startswith("val_"))
    parts = [f"epoch {row['epoch']}/{epochs}", f"train {train}"]
    if val:
        parts.append(f"val {val}")
    parts.append(f"lr {row['lr']:.4g}")
    parts.append(f"{row['time']:.1f}s {row['images_per_s']:,.0f} img/s")
    return " | ".join(parts) + ("  * best" if improved else "")


def _describe_run(say, cfg: Config, data: TaskData, model: nn.Module, run_dir: Path, device: torch.device,
                  amp_dtype, steps_per_epoch: int, resume: Resume | None, state: TrainState) -> None:
    meta = data.meta
    sizes = meta.get("sizes", {})
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"run directory: {run_dir}")
    say(f"data: {meta.get('dataset')}: {sizes.get('train', '?'):,} train / {sizes.get('val', 0):,} val / "
        f"{sizes.get('test', 0):,} test images, {meta.get('num_classes')} classes, "
        f"{'x'.join(map(str, meta.get('input_size', [])))}")
    frozen = f" ({trainable:,} trainable)" if trainable != params else ""
    say(f"model: {cfg.model.name}, {params:,} parameters{frozen}")
    precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[amp_dtype]
    say(f"training: {cfg.schedule.epochs} epochs x {steps_per_epoch} steps, {cfg.optim.name} lr {cfg.optim.lr:g}, "
        f"{cfg.schedule.name} schedule, batch {cfg.data.batch_size}, {device}, {precision}")
    if resume is not None:
        say(f"resuming from {resume.path}: epoch {state.epoch + 1}, batch {state.batch}, step {state.step}")


def _report_bad_images(say, meta: dict) -> None:
    bad = meta.get("bad_images") or []
    if bad:
        say(f"skipped {len(bad)} unreadable image(s):")
        for path, reason in bad:
            say(f"  {path}: {reason}")


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]
