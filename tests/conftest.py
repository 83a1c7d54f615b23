import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# CLI subprocesses inherit this: `cnnzoo train` and `cnnzoo eval` then need not start themselves
# again to get OpenMP's passive wait policy (cnnzoo.cli.main); it is what they would set.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def reference_libs():
    """(torchvision, timm) for converter tests, or skip saying how to get them.

    The torchvision 0.28 wheel here is a CUDA build whose compiled ops fail to register on a
    CPU-only torch; defining the two op schemas it expects first lets the import succeed
    (only applied when the plain import fails). Neither library is a dependency of cnnzoo.
    """
    try:
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed (pip install torch==2.13.0 -e '.[reference]')")
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SCHEMA_LIBS.append(lib)
        import torchvision
    try:
        import timm
    except ImportError:
        pytest.skip("timm is not installed (pip install torch==2.13.0 -e '.[reference]')")
    return torchvision, timm


_SCHEMA_LIBS: list = []  # keeps the op-schema library alive for the session


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A tiny trained run (LeNet-5 on the digits, 2 steps), made once per session: its last.pt is
    a real checkpoint for the tests that mutate or craft checkpoints."""
    from cnnzoo.engine.config import config_from_dict
    from cnnzoo.engine.progress import Progress
    from cnnzoo.engine.trainer import train

    out = tmp_path_factory.mktemp("digits-run") / "run"
    cfg = config_from_dict({"schedule": {"epochs": 1, "max_steps": 2},
                            "runtime": {"out": str(out), "progress": "off", "report": False, "tensorboard": False}})
    train(cfg, progress=Progress("off"))
    return out
