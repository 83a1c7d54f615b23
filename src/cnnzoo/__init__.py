"""cnnzoo: the classic CNN architectures, faithful to their papers, with the tools around them."""

from .analysis.summary import summary
from .errors import CnnzooError, DataError, UnknownModelError, UnknownOptionError
from .registry import create_model, list_families, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "CnnzooError", "DataError", "UnknownModelError", "UnknownOptionError", "create_model", "list_families",
    "list_models", "model_info", "register_model", "summary",
]
