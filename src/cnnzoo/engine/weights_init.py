"""Start a run from other weights (fine-tuning): a cnnzoo checkpoint, a state dict or safetensors.

Tensors are matched by name and shape. The classifier of a model trained for another number
of classes has another shape, so it keeps its fresh initialisation; every tensor that is
skipped is named in the message, so nothing is dropped silently. This is for starting
runs only: resuming a run loads strictly (see trainer.restore).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CnnzooError
from .checkpoint import load_checkpoint, load_weights

def read_state_dict(path: str | Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, the architecture a cnnzoo checkpoint names or None) from any weights file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, metadata = load_weights(path)
        return state, metadata.get("architecture")
    obj = load_checkpoint(path, trust=trust, required_keys=())
    source_model = obj.get("model_name") if isinstance(obj, dict) else None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnzooError(f"model.init_from: {path} holds no state dict of tensors")
    # nn.DataParallel / torch.compile prefixes
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}
    return state, source_model if isinstance(source_model, str) else None


def load_initial_weights(model: nn.Module, path: str | Path, *, trust: bool = False) -> str:
    """Copy every tensor of `path` whose name and shape match; returns a one-line report."""
    source, source_model = read_state_dict(path, trust=trust)
    target = model.state_dict()
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not matched:
        what = f"it is a checkpoint of {source_model!r}" if source_model else "another architecture?"
        raise CnnzooError(f"model.init_from: no tensor of {path} fits this model ({what})")
    model.load_state_dict(matched, strict=False)
    fresh = [k for k in target if k not in matched]
    unused = [k for k in source if k not in matched]
    report = f"initialised {len(matched)}/{len(target)} tensors from {path}"
    if fresh:
        report += f"; kept fresh: {', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}"
    if unused:
        report += f"; unused from the file: {', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}"
    return report
