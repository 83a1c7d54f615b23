"""The training loop: one function, `train(cfg)`, readable top to bottom.

A run: set up (device, data, model, optimiser, schedule; or restore all of them from a
checkpoint), then epochs of steps, then one test of best.pt. Each step is forward under
autocast, a non-finite check, backward, optimiser and schedule step. Each epoch ends with a
validation pass (the only data that selects best.pt and drives reduce-on-plateau), a row in
metrics.csv and atomic saves of best.pt and last.pt.

The pieces around the loop live beside it: `runtime` (device, precision, seeds), `resume`
(checkpoint content, restore, what may change on resume), `report` (the console lines),
`evaluate` (the one evaluation path). The task is handed in by name through the task
registry; the engine never imports a concrete task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..data.datasets import absolute_spec, check_spec_names_something, missing_path
from .._text import count
from ..data import progress as data_progress
from ..errors import CnnzooError
from ..weights import resolve as resolve_weights
from . import report
from .amp_probe import choose_cpu_amp
from .averaging import WeightAverage
from .checkpoint import CheckpointError
from .config import Config, ConfigError, config_to_dict, validate
from .distributed import Distributed, micro_batches, no_sync
from .evaluate import evaluate, final_form
from .metrics import RunLog, RunningMean
from .optim import build_optimizer, freeze_backbone, set_train_mode
from .progress import Progress
from .resume import (NonFiniteLossError, Resume, ResumeError, Run, RunWriteError, TrainState, check_resume,
                     load_resume, restore, resume_config, save_checkpoint)
from .rundir import LOCK_NAME, check_not_busy, locked, new_run_dir
from .runtime import Runtime, seed_everything
from .schedulers import Schedule, total_steps
from .signals import StopRequest
from .task import LossFn, TaskData, get_task
from .weights_init import load_start_weights
from .whiten import freeze_whitened, train_whitening_bias


@dataclass
class RunResult:
    run_dir: Path
    state: TrainState
    test: dict[str, float] | None = None
    interrupted: int | None = None  # the signal number when stopped by SIGINT/SIGTERM

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted if self.interrupted else 0


def train(cfg: Config, *, resume: Resume | None = None, progress: Progress | None = None) -> RunResult:
    as_given = validate(cfg)
    cfg = portable(as_given)  # stored in config.yaml and the checkpoints
    if resume is not None:
        check_data_present(cfg, resume)
    dist = Distributed.from_env()  # several processes under torchrun (docs/distributed.md); rank 0 writes
    progress = dist.progress(progress or Progress(cfg.runtime.progress, log_every=cfg.runtime.log_every,
                                                  log_seconds=cfg.runtime.log_seconds))
    say, note = progress.write, progress.note  # results to stdout; notes, warnings, progress to stderr
    with dist.stop_request() as stop, contextlib.ExitStack() as held:  # from the start: a signal while data loads stops
        held.enter_context(dist.session(cfg))
        task = get_task(cfg.task)
        runtime = Runtime.from_config(cfg.runtime, dist.device(cfg.runtime.device))

        # ---- what can be checked without the data, then the run directory: before any decoding
        _check_start_weights(cfg, resume)
        _check_data_path(as_given, resume)
        run_dir = dist.on_main(lambda: _claim_before_data(held, cfg, resume))
        report.run_start(say, cfg, run_dir)

        # ---- data, model, optimiser, schedule
        seed_everything(cfg.runtime.seed)
        with dist.main_first(), data_progress.reporting(progress.data_sink()):  # decoding shows progress
            # the data as the user named it (the banner's words); the same files as cfg's absolute path
            data = task.build_data(runtime.stamp(dataclasses.replace(cfg, data=as_given.data)), runtime.device)
        dist.shard_data(data, task, cfg, data.meta)
        task.check_config(cfg, data.meta)
        if resume is not None:
            check_resume(resume, cfg, task, data.meta)
            dist.check_resume(resume.path, resume.checkpoint)
            if dist.is_main:  # locked once the resume is known to be possible: a refused one touches nothing
                held.enter_context(locked(run_dir))
        model = task.build_model(cfg, data.meta)
        if resume is None:  # model.pretrained / model.init_from; a resumed run has its own weights
            for line in load_start_weights(model, cfg, data.meta):
                say(line)
            for line in task.init_from_data(cfg, model, data):  # e.g. patch whitening of the first conv
                say(line)
        if cfg.model.freeze_backbone:
            freeze_backbone(model)
        freeze_whitened(model, cfg)
        dist.prepare(model, cfg)
        runtime.place(model)
        # amp auto on CPUs with bf16: rank 0 probes, every rank takes its choice
        runtime, cfg = choose_cpu_amp(runtime, cfg, model, data.meta.input_size, note, decide=dist.on_main)
        optimizer = build_optimizer(model, cfg.optim, batch_size=cfg.data.batch_size)
        steps_per_epoch = _steps_per_epoch(cfg, data)
        total = total_steps(cfg.schedule, steps_per_epoch)
        monitor, mode = task.monitor
        schedule = Schedule(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, lr=cfg.optim.lr, mode=mode)
        scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        run = Run(cfg, task, data.meta, model, optimizer, schedule, scaler, data.train, run_dir, dist,
                  averager=_lookahead(model, cfg, total))
        state = TrainState(best={"metric": f"val_{monitor}", "mode": mode, "value": None})
        if resume is not None:
            state = restore(resume.checkpoint, run)
        compiled = torch.compile(model) if cfg.runtime.compile else model
        trained = dist.wrap(compiled, cfg)  # the training step's module (DDP); evaluation uses `compiled`
        loss_fn = task.loss_fn(cfg)

        # ---- run directory
        if dist.is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        log = RunLog(run_dir, state.history, tensorboard=cfg.runtime.tensorboard,
                     purge_step=state.step if resume is not None else None, write=dist.is_main)
        epochs = report.planned_epochs(cfg.schedule, steps_per_epoch)  # fewer than schedule.epochs with max_steps
        report.describe_run(say, cfg, data.meta, model, runtime.describe_device(), runtime.precision, steps_per_epoch)
        if dist.enabled:
            say(dist.describe(cfg))
        if resume is not None:
            say(report.resuming(resume.path, state.epoch, state.batch, state.step))
        progress.start_run(total, state.step)

        # ---- training
        stop.arm()  # from here a signal stops after the current step, with a checkpoint
        try:
            while state.epoch < cfg.schedule.epochs and state.step < total:
                data.train.set_epoch(state.epoch)  # keeps a restored mid-epoch position
                set_train_mode(model, cfg.model.freeze_backbone)
                train_whitening_bias(model, cfg, state.epoch)
                running = RunningMean(state.running)
                started = time.perf_counter()
                desc = f"epoch {state.epoch + 1}/{epochs}"
                with progress.loop(steps_per_epoch, desc, initial=state.batch) as bar:
                    for batch in data.train:
                        values = _train_step(run, state, trained, loss_fn, batch, runtime, note)
                        if values is None:  # skipped for a non-finite loss
                            continue
                        running.update(values, len(batch[0]))
                        state.running = running.state_dict()
                        bar.update(dist.global_count(len(batch[0])), running.means())
                        if state.step % cfg.runtime.log_every == 0:
                            log.add_step({"loss": values["loss"], "lr": schedule.lr}, state.step)
                        if cfg.runtime.save_every_steps and state.step % cfg.runtime.save_every_steps == 0:
                            save_checkpoint(run, state, "last.pt")
                        if stop.requested or state.step >= total:
                            break
                epoch_done = state.batch >= steps_per_epoch or state.step >= total
                if stop.requested and not epoch_done:
                    save_checkpoint(run, state, "last.pt")
                    return _stopped(note, stop, run, state)
                # end of epoch: validate, log, save
                train_time = time.perf_counter() - started
                dist.sync_buffers(model)
                val = (evaluate(compiled, data.val, dist.evaluator(task.evaluator(cfg, data.meta, final=False)),
                                runtime, progress, "val") if data.val else {})
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
                    save_checkpoint(run, state, "best.pt")
                save_checkpoint(run, state, "last.pt")
                say(report.epoch_line(row, epochs, improved))
                if stop.requested:
                    return _stopped(note, stop, run, state)
        except KeyboardInterrupt:  # a second Ctrl-C: leave at once; atomic saves keep the files whole
            stop.requested = stop.requested or 2
            return _stopped(note, stop, run, state, "at_once")
        except (OSError, CheckpointError) as err:  # a full disk: every write is atomic, so stop cleanly
            raise RunWriteError(report.write_failed(run_dir, err)) from None
        finally:
            log.close()

        # ---- test once, with the weights chosen on validation
        result = RunResult(run_dir, state)
        if data.test is not None:
            result.test = _final_test(say, run, data, runtime, progress, stop=lambda: bool(stop.requested))
            if stop.requested:  # the test was cut short: no numbers from part of the test set
                return _stopped(note, stop, run, state, "test")
        else:
            note(f"note: no test split in {data.meta.dataset}: nothing was tested; best.pt is the best on validation")
        report.bad_images(note, data.meta)
        return result


# ---------------------------------------------------------------------------- set-up helpers


def portable(cfg: Config) -> Config:
    """cfg with the dataset and weight-file paths absolute, so the run's config.yaml and
    checkpoints work from any directory (`cnnzoo eval`, `--resume`); names stay names."""
    m = cfg.model
    files = {k: str(Path(v).expanduser().resolve()) for k, v in (("init_from", m.init_from), ("pretrained", m.pretrained))
             if v and Path(v).expanduser().is_file()}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=absolute_spec(cfg.data.dataset)),
                               model=dataclasses.replace(m, **files))


def check_data_present(cfg: Config, resume: Resume) -> None:
    """A resumed run whose dataset is no longer where it was: say how to point at its new place."""
    stored = resume.checkpoint.get("config", {}).get("data", {}).get("dataset")
    gone = missing_path(cfg.data.dataset)
    if gone is not None and cfg.data.dataset == stored:
        raise ResumeError(f"cannot resume {resume.path}: its dataset {stored} is not there any more; if it moved, "
                          "resume with --data NEWPATH (accepted when its fingerprint is the run's)")


def _lookahead(model: nn.Module, cfg: Config, total: int) -> WeightAverage | None:
    o = cfg.optim
    if not o.lookahead_every:
        return None
    return WeightAverage(model, every=o.lookahead_every, base=o.lookahead_decay, power=o.lookahead_power,
                         total_steps=total, lookahead=True)


def _steps_per_epoch(cfg: Config, data: TaskData) -> int:
    steps = len(data.train)
    if steps == 0:
        raise ConfigError(f"data.batch_size: the training split has {data.meta.sizes.get('train')} images, fewer "
                          f"than one batch of {cfg.data.batch_size} with data.drop_last")
    return steps


def claim_run_dir(cfg: Config, dataset: str) -> Path:
    """The new run's directory: --out, or a fresh runs/<model>-<data>-<time>."""
    run_dir = Path(cfg.runtime.out or "runs")
    if run_dir.exists() and not run_dir.is_dir():
        raise CnnzooError(f"runtime.out: {run_dir} is a file, not a folder; choose another --out")
    try:
        if not cfg.runtime.out:
            return new_run_dir(cfg.model.name, dataset)
        check_not_busy(run_dir)  # before touching anything in it; both checked again under the lock
        _check_fresh(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    except OSError as err:
        raise CnnzooError(f"runtime.out: cannot create the run directory {run_dir} ({err.strerror}); "
                          "choose another --out") from None


def _drop_if_unused(run_dir: Path, *, existed: bool) -> None:
    """A run that stopped before writing anything (bad data, a signal while decoding) leaves no
    empty directory behind, unless the folder was there before."""
    if existed or not run_dir.is_dir() or any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        return
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def _check_data_path(cfg: Config, resume: Resume | None) -> None:
    """A dataset that names nothing (a path that is not there, an unknown name): refused before the
    banner and the run directory."""
    if resume is None:  # a resume says more (check_data_present)
        check_spec_names_something(cfg.data.dataset)


def _check_start_weights(cfg: Config, resume: Resume | None) -> None:
    """model.init_from / model.pretrained exist and can be read, before the data is decoded."""
    m = cfg.model
    if resume is not None:
        return
    if m.init_from:
        path = Path(m.init_from)
        if not path.is_file():
            raise CnnzooError(f"model.init_from: {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                              "give a checkpoint or weights file")
        if not os.access(path, os.R_OK):
            raise CnnzooError(f"model.init_from: {path} cannot be read (permission denied)")
    if m.pretrained:
        resolve_weights(m.pretrained, m.name)  # an unknown tag, or one not downloaded: one line saying what to do


def _claim_before_data(held: contextlib.ExitStack, cfg: Config, resume: Resume | None) -> Path:
    """The run directory, claimed before any data is decoded (rank 0 alone does this). A resumed
    run's is only checked here; it is locked once the resume is known to be possible."""
    if resume is not None:
        check_not_busy(resume.path.parent)
        return resume.path.parent
    existed = bool(cfg.runtime.out) and Path(cfg.runtime.out).exists()
    run_dir = held.enter_context(locked(claim_run_dir(cfg, cfg.data.dataset)))
    held.callback(_drop_if_unused, run_dir, existed=existed)  # runs first on leaving, under the lock
    _check_fresh(run_dir)
    return run_dir


def _check_fresh(run_dir: Path) -> None:
    """A new run never writes over another run's checkpoints (checked under the directory's lock)."""
    if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
        raise CnnzooError(f"{run_dir} already holds a run; continue it with `cnnzoo train --resume {run_dir}` "
                          "or choose another --out")


# ---------------------------------------------------------------------------- loop helpers


def _train_step(run: Run, state: TrainState, model: nn.Module, loss_fn: LossFn, batch: tuple, runtime: Runtime,
                say) -> dict[str, float] | None:
    """Forward and backward (over cfg.optim.grad_accum micro-batches), non-finite check, update,
    schedule step: the loss and the task's metrics as floats (global means over all processes),
    or None when the batch was skipped for a non-finite loss (before the weights change)."""
    cfg, optimizer, scaler, dist = run.cfg, run.optimizer, run.scaler, run.dist
    with dist.collective("a training step"):  # DDP all-reduces the gradients in the backward pass
        metrics = _forward_backward(model, loss_fn, batch, runtime, scaler, cfg.optim.grad_accum)
    state.batch += 1
    # the one host sync of a step (with several processes, also where they agree to stop)
    values = dist.reduce_means(metrics, len(batch[0])) if dist.enabled else _to_host(metrics)
    if not math.isfinite(values["loss"]):
        state.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        _check_skip_budget(cfg, state, values["loss"], run.run_dir)
        say(f"warning: non-finite loss ({values['loss']}) at step {state.step}: batch skipped "
            f"({state.skipped}/{cfg.runtime.skip_nonfinite} allowed)")
        return None
    if cfg.optim.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    run.schedule.step()
    state.step += 1
    if run.averager is not None:
        run.averager.after_step(run.model, state.step)
    return values


def _forward_backward(model: nn.Module, loss_fn: LossFn, batch: tuple, runtime: Runtime,
                      scaler: torch.amp.GradScaler, accum: int) -> dict:
    """Gradients of the batch's mean loss, accumulated over `accum` micro-batches (all-reduced
    once, after the last, under DDP); the batch's loss and metrics as 0-d tensors."""
    parts = micro_batches(batch, accum)
    totals: dict = {}
    for i, part in enumerate(parts):
        share = len(part[0]) / len(batch[0])
        with no_sync(model, last=i == len(parts) - 1):
            with runtime.autocast():
                loss, metrics = loss_fn(model, part)
            scaler.scale(loss if len(parts) == 1 else loss * share).backward()
        for key, value in {**metrics, "loss": loss.detach()}.items():
            value = value if len(parts) == 1 else value * share
            totals[key] = value if key not in totals else totals[key] + value
    return totals


def _to_host(values: dict) -> dict[str, float]:
    """Floats of a dict of numbers and 0-d tensors, with all the tensors fetched in one transfer
    (a float() per metric would wait for the device once per metric)."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    fetched = dict(zip(tensors, torch.stack([v.double().reshape(()) for v in tensors.values()]).tolist())) \
        if tensors else {}
    return {k: fetched[k] if k in fetched else float(v) for k, v in values.items()}


def _final_test(say, run: Run, data: TaskData, runtime: Runtime, progress: Progress,
                stop) -> dict[str, float] | None:
    """The single look at the test set, with best.pt (chosen on validation) when there is one;
    None when a signal stopped it."""
    which, ckpt = run.dist.load_from_main(run.run_dir, ("best.pt", "last.pt"))
    evaluator = run.dist.evaluator(run.task.evaluator(run.cfg, data.meta, final=True))
    # the model built from the checkpoint's weights, as `cnnzoo eval` builds it, so the two agree exactly
    fresh = run.task.build_model(run.cfg, data.meta)
    fresh.load_state_dict(ckpt["model"])
    model = final_form(runtime.place(fresh), data.meta, runtime)
    test = evaluate(model, data.test, evaluator, runtime, progress, "test", stop=stop)
    if stop():
        return None
    chosen = ckpt["state"]["best"] if which == "best.pt" else {}
    results = {"checkpoint": which, "epoch": ckpt["epoch"], "step": ckpt["step"],
               "selected_by": chosen.get("metric"), "selected_value": chosen.get("value"), "test": test}
    if run.dist.is_main:
        (run.run_dir / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    say(report.test_line(which, ckpt["epoch"], chosen, data.val is not None, test))
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
    allowed = (f"after skipping {count(cfg.runtime.skip_nonfinite, 'bad step')} " if cfg.runtime.skip_nonfinite else "")
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


def _stopped(say, stop: StopRequest, run: Run, state: TrainState, how: str = "saved") -> RunResult:
    say(report.stopped(stop.requested, run.run_dir, state.step, how))
    return RunResult(run.run_dir, state, interrupted=stop.requested)


__all__ = ["NonFiniteLossError", "Resume", "ResumeError", "RunResult", "TrainState", "load_resume", "claim_run_dir",
           "resume_config", "train"]
