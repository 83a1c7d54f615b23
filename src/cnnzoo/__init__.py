"""cnnzoo: the classic CNN architectures, faithful to their papers, with the tools around them.

Importing the package registers every model family and every task (as torchvision and timm
register their models), so `create_model` and the engine find them by name.
"""

from typing import Any

from torch import nn

from . import models  # noqa: F401  (registers the model families)
from . import tasks  # noqa: F401  (registers the tasks with the engine)
from ._version import __version__
from .analysis.summary import summary
from .errors import CnnzooError, ConfigError, DataError, UnknownModelError, UnknownOptionError
from .registry import ModelCfg, list_families, list_models, model_info, register_model
from .registry import create_model as _create_model


def create_model(name: str, *, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (keyword-only options, checked by name); with
    `pretrained` (True for the architecture's default tag, a tag such as "mobilenet_v2.tv_in1k",
    or a weights file) the published weights are loaded and their preprocessing and class names
    stamped on the model. Another `num_classes` than the weights' leaves the classifier fresh.
    `cnnzoo.registry.create_model` is the plain factory (the registry knows no weights)."""
    if pretrained is False or pretrained is None:
        return _create_model(name, **kwargs)
    from .weights import create_pretrained

    return create_pretrained(name, pretrained, **kwargs)


__all__ = [
    "CnnzooError", "ConfigError", "DataError", "ModelCfg", "UnknownModelError", "UnknownOptionError", "__version__",
    "create_model", "list_families", "list_models", "model_info", "register_model", "summary",
]
