"""Rebuild a trained model from its checkpoint: architecture, classes and preprocessing travel with it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CnnzooError
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, config_from_dict
from .task import DataMeta, get_task


def read_checkpoint(path: str | Path, *, trust: bool = False, expect_model: str | None = None) -> dict:
    """A cnnzoo training checkpoint, checked to be one (and of `expect_model` when given)."""
    from .checkpoint_schema import check_checkpoint

    ckpt = load_checkpoint(path, trust=trust)
    missing = [k for k in ("model_name", "config", "meta") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} holds weights but not a cnnzoo training checkpoint (no {', '.join(missing)}); "
                              "use `cnnzoo train --init-from` to start from bare weights")
    if expect_model and ckpt["model_name"] != expect_model:
        raise CnnzooError(f"{path} is a checkpoint of {ckpt['model_name']!r}, not {expect_model!r}; "
                          f"use --model {ckpt['model_name']} or a checkpoint of {expect_model}")
    check_checkpoint(path, ckpt)
    return ckpt


def checkpoint_config(ckpt: dict) -> Config:
    return config_from_dict(ckpt["config"])


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The checkpoint's model with its weights, in eval mode on `device`."""
    cfg = checkpoint_config(ckpt)
    task = get_task(ckpt.get("task", "classify"))
    model = task.build_model(cfg, DataMeta.from_dict(ckpt["meta"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = " ".join(str(err).split())[:240]
        raise CheckpointError(f"the weights in this checkpoint do not fit {ckpt['model_name']}: {first}") from None
    return model.to(device).eval()


def describe_checkpoint(path: str | Path, ckpt: dict) -> str:
    best = ckpt.get("state", {}).get("best", {})
    chosen = f", {best['metric']} {best['value']:.4g}" if best.get("value") is not None else ""
    return (f"{path}: {ckpt['model_name']} trained on {ckpt.get('dataset')} "
            f"(epoch {ckpt.get('epoch')}, step {ckpt.get('step')}{chosen})")
