"""The official DnCNN weights (github.com/cszn/DnCNN, `TrainingCodes/dncnn_pytorch`) in cnnzoo's
DnCNN.

The official files are pickles of the whole training-script module (`__main__.DnCNN`, whose
attribute `dncnn` is an `nn.Sequential` of Conv / BN / ReLU). They are read with
`safe_unpickle` (no code from the file runs), and their convolution and batch-norm tensors
are copied, in order, into `cnnzoo.models.dncnn.DnCNN`, whose depth, width and channels are
read from the file and whose BN eps is the file's (1e-4 in the official models).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .._limits import LimitError, backed_elements, build_budget, check_backed
from ..models.dncnn import DnCNN
from .safe_unpickle import ModuleStub, UnsafePickleError, iter_modules, module_state_dict, safe_load

_CONV = "torch.nn.modules.conv.Conv2d"
_BN = "torch.nn.modules.batchnorm.BatchNorm2d"


def is_official_dncnn(obj: object) -> bool:
    return isinstance(obj, ModuleStub) and obj.qualname.endswith(".DnCNN")


def load_official_dncnn(path: str | os.PathLike) -> DnCNN:
    """A cnnzoo DnCNN (eval mode) holding the weights of an official whole-module pickle."""
    path = Path(path)
    obj = safe_load(path)
    if not is_official_dncnn(obj):
        found = obj.qualname if isinstance(obj, ModuleStub) else type(obj).__name__
        raise UnsafePickleError(f"{path} holds a {found}, not the official DnCNN module")
    return dncnn_from_stub(obj, source=str(path))


def dncnn_from_stub(obj: ModuleStub, *, source: str = "the pickle") -> DnCNN:
    try:
        modules, source_state = iter_modules(obj), module_state_dict(obj)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{source}: {err}") from None
    layers = [(name, stub) for name, stub in modules if stub.qualname in (_CONV, _BN)]
    convs = [stub for _, stub in layers if stub.qualname == _CONV]
    bns = [stub for _, stub in layers if stub.qualname == _BN]
    if len(convs) < 3 or len(bns) != len(convs) - 2:
        raise UnsafePickleError(
            f"{source}: expected the DnCNN layout (conv, depth-2 x conv+BN, conv), found "
            f"{len(convs)} convolutions and {len(bns)} batch norms"
        )
    in_chans, width = _first_conv_shape(convs[0], source)
    eps = bns[0].__dict__.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise UnsafePickleError(f"{source}: batch-norm eps {eps!r} is not a number in (0, 1)")
    # The sizes come from the file: build on the meta device within the tensors it holds first.
    tensors = list(source_state.values())
    for name, tensor in source_state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UnsafePickleError(f"{source}: {name} is a {type(tensor).__name__}, not a tensor")
        check_backed(tensor, f"{source}: {name}")
    try:
        with build_budget(len(tensors) + 8, backed_elements(tensors) + 1024, source):
            DnCNN(in_chans=in_chans, depth=len(convs), width=width, bn_eps=float(eps))
    except LimitError as err:
        raise UnsafePickleError(str(err)) from None
    model = DnCNN(in_chans=in_chans, depth=len(convs), width=width, bn_eps=float(eps))
    model.load_state_dict(_map_state(model, layers, source_state, source), strict=True)
    return model.eval()


def _first_conv_shape(conv: ModuleStub, source: str) -> tuple[int, int]:
    """(input channels, width) of the first convolution, read from its weight tensor; the
    module's recorded channel counts must agree with it."""
    weight = (conv.__dict__.get("_parameters") or {}).get("weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise UnsafePickleError(f"{source}: the first convolution has no 4-D weight")
    width, in_chans = int(weight.shape[0]), int(weight.shape[1])
    recorded = (conv.__dict__.get("in_channels"), conv.__dict__.get("out_channels"))
    if recorded != (in_chans, width):
        raise UnsafePickleError(f"{source}: the first convolution records {recorded[0]!r} -> {recorded[1]!r} "
                                f"channels, but its weight has shape {tuple(weight.shape)}")
    return in_chans, width


def _map_state(model: nn.Module, layers: list[tuple[str, ModuleStub]],
               source_state: dict[str, torch.Tensor], source: str) -> OrderedDict:
    """Pair the file's conv/BN layers with ours in order and rename their tensors."""
    ours = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    if len(ours) != len(layers):
        raise UnsafePickleError(f"{source}: {len(layers)} conv/BN layers, cnnzoo's DnCNN has {len(ours)}")
    target = model.state_dict()
    state = OrderedDict()
    for (their_name, stub), (our_name, module) in zip(layers, ours):
        expected = _CONV if isinstance(module, nn.Conv2d) else _BN
        if stub.qualname != expected:
            raise UnsafePickleError(f"{source}: layer {their_name} is a {stub.qualname}, expected {expected}")
        theirs = {k[len(their_name) + 1:] for k in source_state if k.rsplit(".", 1)[0] == their_name}
        extra = sorted(theirs - set(module.state_dict()))
        if extra:
            raise UnsafePickleError(f"{source}: layer {their_name} has {', '.join(extra)}, which cnnzoo's DnCNN lacks")
        for key in module.state_dict():
            ours_key, theirs_key = f"{our_name}.{key}", f"{their_name}.{key}"
            if theirs_key in source_state:
                tensor = source_state[theirs_key]
            elif key == "num_batches_tracked":  # not saved by PyTorch < 0.4.1
                tensor = target[ours_key]
            else:
                raise UnsafePickleError(f"{source}: {theirs_key} is missing")
            if tensor.shape != target[ours_key].shape:
                raise UnsafePickleError(
                    f"{source}: {theirs_key} has shape {tuple(tensor.shape)}, expected {tuple(target[ours_key].shape)}"
                )
            state[ours_key] = tensor.clone()
    return state
