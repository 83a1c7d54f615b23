"""The training engine: typed config, optimisers, schedules, the training loop, checkpoints, evaluation.

`train(cfg)` runs a whole training run (see trainer.py); `Config` and its sections describe it;
tasks (classification, denoising) plug in through the protocol in task.py.
"""

from .config import Config, ConfigError, config_from_dict, config_to_dict, validate
from .task import TASKS, Task, TaskData, get_task
from .trainer import NonFiniteLossError, ResumeError, RunResult, load_resume, train

__all__ = [
    "TASKS", "Config", "ConfigError", "NonFiniteLossError", "ResumeError", "RunResult", "Task", "TaskData",
    "config_from_dict", "config_to_dict", "get_task", "load_resume", "train", "validate",
]
