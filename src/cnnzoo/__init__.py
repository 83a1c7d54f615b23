"""cnnzoo: the classic CNN architectures, faithful to their papers, with the tools around them.

Importing the package registers every model family and every task (as torchvision and timm
register their models), so `create_model` and the engine find them by name.
"""

from . import models  # noqa: F401  (registers the model families)
from . import tasks  # noqa: F401  (registers the tasks with the engine)
from ._version import __version__
from .analysis.summary import summary
from .errors import CnnzooError, ConfigError, DataError, UnknownModelError, UnknownOptionError
from .registry import ModelCfg, create_model, list_families, list_models, model_info, register_model

__all__ = [
    "CnnzooError", "ConfigError", "DataError", "ModelCfg", "UnknownModelError", "UnknownOptionError", "__version__",
    "create_model", "list_families", "list_models", "model_info", "register_model", "summary",
]
