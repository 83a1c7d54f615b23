"""Helpers shared by the analysis tools that run one image through a model."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

FALLBACK_INPUT_SIZE = (3, 224, 224)  # for a plain nn.Module without a default_cfg


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) the model was built for, from its `default_cfg`."""
    return tuple(getattr(model, "default_cfg", {}).get("input_size", FALLBACK_INPUT_SIZE))


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode without gradients for the duration, restoring the model's mode afterwards."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
