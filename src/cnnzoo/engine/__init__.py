"""The training engine: typed config, optimisers, schedules, the training loop, checkpoints, evaluation.

`train(cfg)` runs a whole training run (see trainer.py); `Config` and its sections describe it;
tasks (classification, denoising) implement the contracts in task.py and register themselves.
"""

from .config import Config, ConfigError, config_from_dict, config_to_dict, validate
from .resume import NonFiniteLossError, ResumeError, load_resume
from .task import DataMeta, Evaluator, Task, TaskData, get_task, register_task, task_names
from .trainer import RunResult, train

__all__ = [
    "Config", "ConfigError", "DataMeta", "Evaluator", "NonFiniteLossError", "ResumeError", "RunResult", "Task",
    "TaskData", "config_from_dict", "config_to_dict", "get_task", "load_resume", "register_task", "task_names",
    "train", "validate",
]
