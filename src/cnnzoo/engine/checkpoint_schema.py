"""What a cnnzoo training checkpoint must hold, checked in one place before anything is built from it.

`torch.load(weights_only=True)` guarantees that a file holds only plain data; it says nothing
about whether that data is what cnnzoo wrote. Every reader of a checkpoint (`eval`, `predict`,
`summary`, `explain`, `denoise`, `train --init-from`, `train --resume`) passes it through
`check_checkpoint` (and a resume through `check_resumable` as well), so a missing key, a value
of the wrong type, a number out of bounds (cnnzoo._limits), an empty or zero std, a class list
that disagrees with the classifier, optimiser groups or RNG states that cannot be restored are
each one `CheckpointError` naming the file and the key, never a traceback further on.

The model a checkpoint describes (its architecture, config options, channel count and class
list) is first built on the meta device under a budget of the tensors the file holds
(`cnnzoo._limits.build_budget`) and compared with the stored weights key by key, so a 500-byte
file cannot make cnnzoo allocate a model it does not back.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._limits import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_INPUT_SIDE,
    MAX_NAME_CHARS,
    LimitError,
    backed_elements,
    build_budget,
    check_backed,
)
from ..errors import CnnzooError
from ..registry import list_models
from .checkpoint import CheckpointError, _as_tuple
from .config import ConfigError, config_from_dict, validate
from .task import DataMeta, get_task, task_names

INT64 = 2**63 - 1


class _Check:
    """Type and range checks of one checkpoint; each failure names the file and the dotted key."""

    def __init__(self, path: str | Path):
        self.path = path

    def fail(self, key: str, why: str) -> None:
        raise CheckpointError(f"{self.path}: {key} {why}")

    def mapping(self, value: Any, key: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(key, f"should be a mapping, is {_kind(value)}")
        return value

    def text(self, value: Any, key: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or len(value) > MAX_NAME_CHARS or (not empty and not value):
            self.fail(key, f"should be a {'non-empty ' if not empty else ''}string of at most {MAX_NAME_CHARS} "
                           f"characters, is {_kind(value)}")
        return value

    def integer(self, value: Any, key: str, low: int = 0, high: int = INT64) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"should be a whole number in [{low:,}, {high:,}], is {_kind(value)}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (positive and value <= 0):
            self.fail(key, f"should be a finite number{' above 0' if positive else ''}, is {_kind(value)}")
        return float(value)

    def sequence(self, value: Any, key: str, length: int | None = None, most: int = MAX_CLASSES) -> list:
        if not isinstance(value, (list, tuple)) or len(value) > most or (length is not None and len(value) != length):
            want = f"{length} values" if length is not None else f"at most {most:,} values"
            self.fail(key, f"should be a list of {want}, is {_kind(value)}")
        return list(value)

    def state_dict(self, value: Any, key: str) -> dict[str, torch.Tensor]:
        state = self.mapping(value, key)
        if not state:
            self.fail(key, "holds no tensors")
        for name, tensor in state.items():
            self.text(name, f"{key} key {str(name)[:40]!r}", empty=False)
            self.tensor(tensor, f"{key}.{name}")
        return dict(state)

    def tensor(self, value: Any, key: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            self.fail(key, f"should be a tensor, is {_kind(value)}")
        try:
            check_backed(value, f"{self.path}: {key}")
        except LimitError as err:
            raise CheckpointError(str(err)) from None
        if value.is_floating_point() and not torch.isfinite(value).all():
            self.fail(key, "holds NaN or infinite values")
        return value


def _kind(value: Any) -> str:
    shown = repr(value)
    return f"{shown[:60]}{'...' if len(shown) > 60 else ''} ({type(value).__name__})"


# ---------------------------------------------------------------------------- the parts


def check_meta(c: _Check, meta: Any, key: str = "meta") -> DataMeta:
    """The data description (DataMeta.to_dict form), bounded, with a usable mean/std."""
    meta = c.mapping(meta, key)
    for name in ("dataset", "fingerprint", "in_chans", "input_size", "mean", "std"):
        if name not in meta:
            c.fail(f"{key}.{name}", "is missing")
    c.text(meta["dataset"], f"{key}.dataset")
    c.text(meta["fingerprint"], f"{key}.fingerprint")
    chans = c.integer(meta["in_chans"], f"{key}.in_chans", 1, MAX_CHANNELS)
    size = c.sequence(meta["input_size"], f"{key}.input_size", 3)
    c.integer(size[0], f"{key}.input_size[0]", chans, chans)
    for i in (1, 2):
        c.integer(size[i], f"{key}.input_size[{i}]", 1, MAX_INPUT_SIDE)
    for name, positive in (("mean", False), ("std", True)):
        values = c.sequence(meta[name], f"{key}.{name}", chans)
        for i, v in enumerate(values):
            c.number(v, f"{key}.{name}[{i}]", positive=positive)
    classes = c.sequence(meta.get("classes") or [], f"{key}.classes")
    for i, name in enumerate(classes):
        c.text(name, f"{key}.classes[{i}]")
    if "num_classes" in meta:
        c.integer(meta["num_classes"], f"{key}.num_classes", len(classes), len(classes))
    for name, n in c.mapping(meta.get("sizes", {}), f"{key}.sizes").items():
        c.integer(n, f"{key}.sizes.{name}")
    c.text(meta.get("details", ""), f"{key}.details")
    for i, pair in enumerate(c.sequence(meta.get("bad_images") or [], f"{key}.bad_images", most=10**7)):
        for j, text in enumerate(c.sequence(pair, f"{key}.bad_images[{i}]", 2)):
            c.text(text, f"{key}.bad_images[{i}][{j}]")
    # the denoising task's own entries
    if "eval_sigma" in meta:
        c.number(meta["eval_sigma"], f"{key}.eval_sigma")
    for i, name in enumerate(c.sequence(meta.get("test_sets") or [], f"{key}.test_sets")):
        c.text(name, f"{key}.test_sets[{i}]")
    return DataMeta.from_dict(meta)


def _check_agrees(c: _Check, ckpt: Mapping, meta: DataMeta) -> None:
    """The copies at the top level (what predict and the reports read) say what `meta` says."""
    if "classes" in ckpt and list(c.sequence(ckpt["classes"], "classes")) != list(meta.classes):
        c.fail("classes", f"({len(ckpt['classes'])} names) differs from meta.classes ({len(meta.classes)} names)")
    if "num_classes" in ckpt:
        c.integer(ckpt["num_classes"], "num_classes", meta.num_classes, meta.num_classes)
    if "in_chans" in ckpt:
        c.integer(ckpt["in_chans"], "in_chans", meta.in_chans, meta.in_chans)
    prep = c.mapping(ckpt.get("preprocessing"), "preprocessing")
    for name, want in (("mean", meta.mean), ("std", meta.std), ("input_size", meta.input_size)):
        got = c.sequence(prep.get(name), f"preprocessing.{name}", len(want))
        got = [c.number(v, f"preprocessing.{name}[{i}]") for i, v in enumerate(got)]
        if got != [float(v) for v in want]:
            c.fail(f"preprocessing.{name}", f"{got} differs from meta.{name} {list(want)}")


def _check_config(c: _Check, ckpt: Mapping):
    raw = c.mapping(ckpt["config"], "config")
    try:
        cfg = validate(config_from_dict(dict(raw)))
    except ConfigError as err:
        c.fail("config", f"is refused: {err}")
    if cfg.model.name != ckpt["model_name"]:
        c.fail("config.model.name", f"{cfg.model.name!r} differs from model_name {ckpt['model_name']!r}")
    task = ckpt.get("task", "classify")  # older checkpoints name no task: they are classifiers
    if cfg.task != task:
        c.fail("config.task", f"{cfg.task!r} differs from task {task!r}")
    return cfg


def check_fits(c: _Check, cfg, meta: DataMeta, state: dict[str, torch.Tensor]) -> None:
    """Build the described model on the meta device (within the file's tensors) and compare it
    with the stored weights key by key."""
    budget = build_budget(2 * len(state) + 64, 2 * backed_elements(list(state.values())) + 2**20, str(c.path))
    try:
        with budget:
            expected = get_task(cfg.task).build_model(cfg, meta).state_dict()
    except LimitError as err:
        raise CheckpointError(str(err)) from None
    except CnnzooError as err:
        c.fail("config", f"does not build a model: {err}")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        parts = [f"missing {', '.join(missing[:4])}" if missing else "", f"unexpected {', '.join(extra[:4])}" if extra else ""]
        c.fail("model", f"does not fit {cfg.model.name} as configured ({'; '.join(p for p in parts if p)})")
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            c.fail(f"model.{k}", f"has shape {tuple(state[k].shape)}, but {cfg.model.name} with "
                                 f"{meta.num_classes} classes and {meta.in_chans} channel(s) has {tuple(t.shape)}")


def _check_progress(c: _Check, ckpt: Mapping) -> None:
    for name in ("epoch", "step"):
        if ckpt.get(name) is not None:
            c.integer(ckpt[name], name)
    if "state" in ckpt:
        best = c.mapping(c.mapping(ckpt["state"], "state").get("best", {}), "state.best")
        if best.get("value") is not None:
            c.number(best["value"], "state.best.value")
            c.text(best.get("metric"), "state.best.metric")


# ---------------------------------------------------------------------------- entry points


def check_checkpoint(path: str | Path, ckpt: Any) -> None:
    """Every reader's check of a training checkpoint (or of published weights made into one)."""
    c = _Check(path)
    ckpt = c.mapping(ckpt, "the file")
    for name in ("model_name", "config", "meta", "model", "preprocessing"):
        if name not in ckpt:
            c.fail(name, "is missing")
    if ckpt["model_name"] not in list_models():
        c.fail("model_name", f"{_kind(ckpt['model_name'])} is not a registered model")
    ckpt_task = ckpt.get("task", "classify")
    if ckpt_task not in task_names():
        c.fail("task", f"{_kind(ckpt_task)} is not one of {', '.join(task_names())}")
    meta = check_meta(c, ckpt["meta"])
    if ckpt_task == "classify" and not meta.classes:
        c.fail("meta.classes", "is empty for a classifier")
    _check_agrees(c, ckpt, meta)
    cfg = _check_config(c, ckpt)
    _check_progress(c, ckpt)
    check_fits(c, cfg, meta, c.state_dict(ckpt["model"], "model"))


def check_resumable(path: str | Path, ckpt: Any, *, state_keys: Collection[str]) -> None:
    """`check_checkpoint` plus what a resume restores: training state (whose known keys are
    `state_keys`), data position, optimiser, schedule and RNG states (each tried on a scratch
    object, so nothing global changes)."""
    check_checkpoint(path, ckpt)
    c = _Check(path)
    for name in ("optimizer", "scheduler", "scaler", "loader", "rng", "state"):
        c.mapping(ckpt.get(name), name)
    _check_state(c, ckpt["state"], state_keys)
    _check_loader(c, ckpt["loader"])
    _check_optimizer(c, ckpt["optimizer"])
    sched = ckpt["scheduler"]
    c.text(sched.get("name"), "scheduler.name")
    c.integer(sched.get("t"), "scheduler.t")
    c.mapping(sched.get("torch"), "scheduler.torch")
    _check_rng(c, ckpt["rng"])


def _check_state(c: _Check, state: Mapping, known: Collection[str]) -> None:
    unknown = sorted(set(state) - set(known))
    if unknown:
        c.fail("state", f"has unknown keys {', '.join(map(str, unknown[:4]))}")
    for name in ("epoch", "batch", "step", "skipped"):
        c.integer(state.get(name, 0), f"state.{name}")
    c.mapping(state.get("best", {}), "state.best")
    c.mapping(state.get("running", {}), "state.running")
    for i, row in enumerate(c.sequence(state.get("history", []), "state.history", most=10**7)):
        c.mapping(row, f"state.history[{i}]")


def _check_loader(c: _Check, loader: Mapping) -> None:
    for name in ("epoch", "position", "seed"):
        c.integer(loader.get(name), f"loader.{name}")
    if "batches_per_chunk" in loader:
        c.integer(loader["batches_per_chunk"], "loader.batches_per_chunk", 1, 2**20)


def _check_optimizer(c: _Check, opt: Mapping) -> None:
    groups = c.sequence(opt.get("param_groups"), "optimizer.param_groups", most=10_000)
    if not groups:
        c.fail("optimizer.param_groups", "is empty")
    for i, group in enumerate(groups):
        group = c.mapping(group, f"optimizer.param_groups[{i}]")
        for j, index in enumerate(c.sequence(group.get("params"), f"optimizer.param_groups[{i}].params", most=10**6)):
            c.integer(index, f"optimizer.param_groups[{i}].params[{j}]")
        c.number(group.get("lr"), f"optimizer.param_groups[{i}].lr")
    for index, values in c.mapping(opt.get("state"), "optimizer.state").items():
        for name, value in c.mapping(values, f"optimizer.state[{index}]").items():
            if isinstance(value, torch.Tensor):
                c.tensor(value, f"optimizer.state[{index}].{name}")


def _check_rng(c: _Check, rng: Mapping) -> None:
    """Each generator state restored into a scratch generator of its kind."""
    try:
        random.Random().setstate(_as_tuple(rng["python"]))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        c.fail("rng.python", f"is not a Python random state ({type(err).__name__}: {err})")
    try:
        np_state = c.mapping(rng["numpy"], "rng.numpy")
        key = c.tensor(np_state["key"], "rng.numpy.key")
        if key.dtype != torch.int64 or key.numel() != 624 or not ((key >= 0) & (key < 2**32)).all():
            c.fail("rng.numpy.key", "should be 624 integers in [0, 2**32)")
        c.integer(np_state.get("pos"), "rng.numpy.pos", 0, 624)
        np.random.RandomState().set_state(("MT19937", key.numpy().astype(np.uint32), np_state["pos"],
                                           np_state["has_gauss"], np_state["cached_gaussian"]))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        c.fail("rng.numpy", f"is not a NumPy random state ({type(err).__name__}: {err})")
    try:
        torch.Generator().set_state(c.tensor(rng["torch"], "rng.torch"))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        c.fail("rng.torch", f"is not a torch random state ({type(err).__name__}: {str(err)[:80]})")


def check_state_dict(path: str | Path, state: Any, key: str = "the weights") -> dict[str, torch.Tensor]:
    """A bare state dict (`--init-from` of a file that is not a training checkpoint)."""
    return _Check(path).state_dict(state, key)


__all__ = ["check_checkpoint", "check_meta", "check_resumable", "check_state_dict"]
