"""The contracts between the engine and a task (classification, denoising, ...), and the task registry.

The engine owns the loop, the optimiser, the schedule, checkpoints, signals and evaluation
runs; a task owns its data, its model construction, its loss and its metrics. The engine never
imports a concrete task: tasks subclass `Task` and add themselves with `@register_task` when
`cnnzoo.tasks` is imported (the `cnnzoo` package does that), so adding a task is one new module.

Tasks are stateless: everything a task needs comes in through its arguments (the config, the
`DataMeta`), and what lives across calls is an object the task hands back (the loss function of
`loss_fn`, the `Evaluator` of `evaluator`), never an attribute set by an earlier call.

Conventions every task follows so that the engine stays generic:
- a batch is a tuple whose first element is the input tensor (its length is the batch size);
- loaders follow cnnzoo.data.DeviceLoader: `set_epoch(e)`, `__len__`, `state_dict()` /
  `load_state_dict()` (the data order, for exact resume);
- metrics are dicts of floats (or 0-d tensors) with short names (`loss`, `acc`, `psnr`); the
  loss function returns per-batch means, which the trainer averages weighted by batch size;
- `monitor` names the validation metric that selects best.pt and drives reduce-on-plateau.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable, Protocol

import torch
from torch import nn

from ..errors import CnnzooError

LossFn = Callable[[nn.Module, tuple], "tuple[torch.Tensor, dict[str, Any]]"]


@dataclass(frozen=True)
class DataMeta:
    """What a run (and its checkpoints) remembers about its data, as plain values.

    `details` is the task's own words for what the sizes do not say ("10 classes",
    "34,560 patches of 40x40"); `extra` holds task-specific plain data that checkpoints keep
    (a denoiser's test sets and noise level). `to_dict` gives the checkpoint form, which loads
    with `torch.load(weights_only=True)`.
    """

    dataset: str
    fingerprint: str
    in_chans: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: Mapping[str, int]
    classes: tuple[str, ...] = ()
    details: str = ""
    bad_images: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        """One line: the dataset, its split sizes, the task's details, the input shape."""
        sizes = self.sizes
        parts = [f"{sizes.get('train', 0):,} train / {sizes.get('val', 0):,} val / {sizes.get('test', 0):,} test images"]
        if self.details:
            parts.append(self.details)
        parts.append("x".join(map(str, self.input_size)))
        return f"{self.dataset}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        plain.update(classes=list(self.classes), num_classes=self.num_classes, input_size=list(self.input_size),
                     mean=list(self.mean), std=list(self.std), sizes=dict(self.sizes),
                     bad_images=[list(b) for b in self.bad_images])
        return {**plain, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataMeta:
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known and k != "num_classes"}
        return cls(
            dataset=str(data["dataset"]), fingerprint=str(data["fingerprint"]), in_chans=int(data["in_chans"]),
            input_size=tuple(int(v) for v in data["input_size"]), mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]), sizes=dict(data.get("sizes", {})),
            classes=tuple(str(c) for c in data.get("classes") or ()), details=str(data.get("details", "")),
            bad_images=tuple((str(p), str(r)) for p, r in data.get("bad_images") or ()), extra=extra,
        )


@dataclass
class TaskData:
    """The loaders of one run and what a checkpoint must remember about the data."""

    train: Any
    val: Any | None
    test: Any | None
    meta: DataMeta


class Evaluator(Protocol):
    """Metrics over a stream of batches (the shape of timm's task evaluators): `update` once per
    batch with the model in eval mode under no_grad, then `compute` for the metrics as floats.
    `report()` gives the task's detailed result (per class, per test set) for `cnnzoo eval`."""

    def update(self, model: nn.Module, batch: tuple) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def report(self) -> Any: ...


class Task(ABC):
    """A kind of learning problem the engine can train and evaluate. Subclass it, set the class
    attributes, implement the methods, and register the class with `@register_task`."""

    name: ClassVar[str]  # the key in the registry, stored in checkpoints
    monitor: ClassVar[tuple[str, str]]  # (validation metric, "max" | "min"), e.g. ("acc", "max")
    model_task: ClassVar[str] = ""  # the registry task of the models it trains; "" = its own name
    classification: ClassVar[bool] = False  # soft targets (mixup, cutmix, label smoothing) make sense
    default_model: ClassVar[str]  # the model trained when the config names none
    defaults: ClassVar[dict[str, Any]] = {}  # dotted config keys this task sets unless a recipe or flag does
    Options: ClassVar[type | None] = None  # a dataclass of task options (config section `task_options`)

    @property
    def models_of(self) -> str:
        return self.model_task or self.name

    @abstractmethod
    def build_data(self, cfg: Any, device: torch.device) -> TaskData:
        """Load the dataset named in cfg.data and wrap each split in a loader on `device`."""

    @abstractmethod
    def build_eval_data(self, cfg: Any, meta: DataMeta, device: torch.device, *, dataset: str | None = None,
                        split: str | None = None) -> tuple[Iterable, str] | tuple[Iterable, str, str]:
        """(loader, dataset name[, split]) of one split for evaluating a checkpoint trained on `meta`'s
        data: the same batches the run's final test saw when `dataset` is None and split is "test".
        `split` None (or left out) asks for the task's default split, which it may name as a third element."""

    @abstractmethod
    def build_model(self, cfg: Any, meta: DataMeta) -> nn.Module:
        """Create cfg.model.name sized for the data (in_chans, num_classes from `meta`)."""

    @abstractmethod
    def loss_fn(self, cfg: Any) -> LossFn:
        """The training loss: fn(model, batch) -> (scalar loss to backpropagate, per-batch metrics)."""

    @abstractmethod
    def evaluator(self, cfg: Any, meta: DataMeta, *, final: bool) -> Evaluator:
        """A fresh evaluator: for validation (final=False) or for the test with the test-time
        settings of cfg.eval (final=True). The final test of a run and `cnnzoo eval` both use it."""

    def check_config(self, cfg: Any, meta: DataMeta) -> None:
        """Checks that need the loaded data (e.g. a 10-crop must fit in the images)."""

    def init_from_data(self, cfg: Any, model: nn.Module, data: TaskData) -> list[str]:
        """Data-dependent initialisation of a fresh model (not of a resumed one), before the optimiser
        is built, such as patch whitening of the first convolution; returns lines for the console."""
        return []


class UnknownTaskError(CnnzooError):
    pass


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` available by its `name` (a duplicate name is refused)."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"a task named {cls.name!r} is already registered")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> Task:
    """A fresh instance of the task registered under `name`."""
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), _TASKS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}{hint}; choose one of: {', '.join(_TASKS) or 'none registered'}")
    return _TASKS[name]()


__all__ = ["DataMeta", "Evaluator", "LossFn", "Task", "TaskData", "UnknownTaskError", "get_task", "register_task",
           "task_names"]
