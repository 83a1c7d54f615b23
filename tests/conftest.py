import os
from pathlib import Path

import pytest
import torch

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
