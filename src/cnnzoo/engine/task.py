"""What the trainer needs from a task (classification, denoising, ...), and where tasks live.

The trainer owns the loop, the optimiser, the schedule, checkpoints, signals and logging; a
task owns its data, its model construction, its loss and its metrics. A task is any object
with the attributes and methods of `Task` below; `get_task(name)` imports it by name from
the module listed in `TASKS` (each such module defines `TASK`).

Conventions every task follows so that the trainer stays generic:
- a batch is a tuple whose first element is the input tensor (its length is the batch size);
- the loaders in `TaskData` follow cnnzoo.data.DeviceLoader: `set_epoch(e)`, `__len__`,
  `state_dict()` / `load_state_dict()` (the data order, for exact resume);
- metrics are dicts of floats (or 0-d tensors) with short names (`loss`, `acc`, `psnr`);
  `training_loss` returns per-batch means, which the trainer averages weighted by batch size;
- `monitor` names the validation metric that selects best.pt and drives reduce-on-plateau.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import CnnzooError

# name -> module defining TASK.
TASKS: dict[str, str] = {
    "classify": "cnnzoo.tasks.classification",
    "denoise": "cnnzoo.tasks.denoise_task",
}


@dataclass
class TaskData:
    """The loaders of one run plus what a checkpoint must remember about the data.

    `meta` is plain data (str/int/float/lists) so checkpoints load with weights_only=True.
    Keys the trainer relies on: dataset, fingerprint, in_chans, num_classes, classes,
    mean, std, input_size, and sizes (images per split).
    """

    train: Any
    val: Any | None
    test: Any | None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    name: str  # the key in TASKS, stored in checkpoints
    monitor: tuple[str, str]  # (validation metric, "max" | "min"), e.g. ("acc", "max")
    classification: bool  # True when soft targets (mixup, cutmix, label smoothing) make sense
    default_model: str  # the model trained when the config names none
    defaults: dict[str, Any]  # dotted config keys this task sets unless the recipe or a flag does
    Options: type  # a dataclass of task-specific options (config section `task_options`)

    def build_data(self, cfg: Any, device: torch.device) -> TaskData:
        """Load the dataset named in cfg.data and wrap each split in a loader on `device`."""

    def build_model(self, cfg: Any, meta: dict[str, Any]) -> nn.Module:
        """Create cfg.model.name sized for the data (in_chans, num_classes from `meta`)."""

    def training_loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward one training batch: (scalar loss to backpropagate, per-batch metrics)."""

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """Metrics over a whole loader, model already in eval mode under torch.no_grad()."""


class UnknownTaskError(CnnzooError):
    pass


def get_task(name: str) -> Task:
    """The task registered under `name` (a fresh instance per call)."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    try:
        module = importlib.import_module(TASKS[name])
    except ModuleNotFoundError as err:
        if err.name != TASKS[name]:
            raise
        raise UnknownTaskError(f"task {name!r} is not available in this installation "
                               f"({TASKS[name]} is missing)") from None
    task = getattr(module, "TASK", None)
    if task is None:
        raise UnknownTaskError(f"task {name!r} is not available yet ({TASKS[name]} defines no TASK)")
    return task() if isinstance(task, type) else task
