import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker gets a core; more threads per worker only oversubscribe.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (it sits beside the repository in CI)")
    return SHARED


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> nn.Module:
    """A model on the meta device (shapes only, no arithmetic), built once per name and options."""
    return _meta_model(name, tuple(sorted(kwargs.items())))


@lru_cache(maxsize=None)
def _meta_model(name: str, kwargs: tuple) -> nn.Module:
    from cnnzoo import create_model

    with torch.device("meta"):
        return create_model(name, **dict(kwargs))
