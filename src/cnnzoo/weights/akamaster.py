"""The published CIFAR-10 ResNet weights of akamaster/pytorch_resnet_cifar10 (BSD-2).

Each file (`resnet{20,32,44,56,110,1202}-<sha8>.th`) holds `{'state_dict', 'best_prec1'}`
saved from `nn.DataParallel`, so keys start with `module.`; the classifier is `linear`. The
nets are the paper's option-A CIFAR ResNets with the new channels zero-padded half on each
side, which is exactly `resnet*_cifar` here, so conversion only renames keys. They were
trained with ImageNet mean/std normalisation (see `AKAMASTER_MEAN`/`AKAMASTER_STD`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping

import torch

from .._limits import check_torch_file
from ..errors import CnnzooError
from ..models.resnet import ResNet
from ..registry import IMAGENET_MEAN, IMAGENET_STD, create_model

# The published nets were trained on CIFAR-10 normalised with the ImageNet statistics.
AKAMASTER_MEAN = IMAGENET_MEAN
AKAMASTER_STD = IMAGENET_STD
_RENAMES = (("module.", ""), ("linear.", "head.fc."))


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """akamaster key names -> cnnzoo key names (`module.linear.weight` -> `head.fc.weight`)."""
    converted = {}
    for key, value in state_dict.items():
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        converted[key] = value
    return converted


def checkpoint_depth(state_dict: Mapping[str, torch.Tensor]) -> int:
    """The 6n+2 depth of a converted CIFAR ResNet state dict, from its blocks per stage."""
    blocks = {m.group(1) for k in state_dict if (m := re.match(r"layer1\.(\d+)\.conv1\.weight$", k))}
    if not blocks:
        raise CnnzooError("not a CIFAR ResNet state dict: no layer1.<n>.conv1.weight keys")
    return 6 * len(blocks) + 2


def load_akamaster(path: str | Path, *, verify_hash: bool = True) -> ResNet:
    """Build `resnet<depth>_cifar` and load an akamaster checkpoint into it (every key must match).

    The file's depth is read from its contents; with `verify_hash` the 8 hex digits in the
    file name must start the file's sha256.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnzooError(f"{path}: no such checkpoint file")
    if verify_hash:
        _verify_name_hash(path)
    check_torch_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and legacy-format errors all mean an unusable file
        raise CnnzooError(f"{path}: not a readable PyTorch file ({type(err).__name__}: {str(err)[:120]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CnnzooError(f"{path}: expected a dict with a 'state_dict' entry (an akamaster checkpoint)")
    state = convert_state_dict(checkpoint["state_dict"])
    model = create_model(f"resnet{checkpoint_depth(state)}_cifar")
    _load_exact(model, state, path)
    # They were trained on ImageNet statistics, not the CIFAR ones the architecture defaults to.
    model.default_cfg = model.default_cfg.replace(mean=AKAMASTER_MEAN, std=AKAMASTER_STD)
    return model.eval()


def _load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    # The checkpoints predate BatchNorm's step counter; it only matters with momentum=None.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        raise CnnzooError(
            f"{path}: does not match {type(model).__name__} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {sorted(wrong_shape)[:5]})"
        )
    model.load_state_dict(state, strict=True)


def _verify_name_hash(path: Path) -> None:
    match = re.search(r"-([0-9a-f]{8,})\.", path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise CnnzooError(f"{path}: sha256 {digest[:8]}... does not match the {match.group(1)} in its name")
