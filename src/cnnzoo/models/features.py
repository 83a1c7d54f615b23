"""Multi-scale feature maps: every classifier as a backbone for detection and segmentation.

Each family declares `model.feature_info`, one entry per stage in timm's vocabulary: the
output channels (`num_chs`), the stride of the map relative to the input (`reduction`) and
the dotted name of the module that produces it (`module`). The stages are the last module at
each resolution, before the next downsampling, as in timm; `tests/test_features.py` checks every
declaration against the shapes a forward pass actually gives.

`forward_intermediates` and `create_model(name, features_only=True, out_indices=...)` read the
declared modules' outputs with forward hooks, so a family needs no second forward pass written
out by hand (timm's `FeatureHooks` does the same for its irregular networks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CnnzooError


def stage(module: str, num_chs: int, reduction: int) -> dict[str, Any]:
    """One declared feature map: timm's dict keys."""
    return {"module": module, "num_chs": int(num_chs), "reduction": int(reduction)}


def chain_stages(path: Sequence[tuple[str, nn.Module]], in_chs: int, *, strides: dict[str, int] | None = None
                 ) -> FeatureInfo:
    """The stages of a network that runs the modules of `path` ((dotted name, module) pairs) one
    after the other: the last module at each resolution, with its channels and reduction.

    Channels and strides are read from the layers: convolutions, pools, modules with `out_chs`
    (Inception modules), and any other module as the chain of its children. `strides` gives the
    stride of modules whose layers do not show it (branching reduction blocks).
    """
    strides = strides or {}
    stages, chs, reduction, previous = [], in_chs, 1, None
    for name, module in path:
        out_chs, stride = _out_chs_and_stride(module, chs)
        stride = strides.get(name, stride)
        if stride > 1 and previous is not None:
            stages.append(stage(previous, chs, reduction))
        chs, reduction, previous = out_chs, reduction * stride, name
    stages.append(stage(previous, chs, reduction))
    return FeatureInfo(stages)


def _out_chs_and_stride(module: nn.Module, chs: int) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.out_channels, module.stride[0]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride
        return chs, stride if isinstance(stride, int) else stride[0]
    if hasattr(module, "out_chs"):
        return module.out_chs, getattr(module, "stride", 1)
    stride = 1
    for child in module.children():
        chs, child_stride = _out_chs_and_stride(child, chs)
        stride *= child_stride
    return chs, stride


def children_path(parent: nn.Module, prefix: str, expand: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of `parent`'s children, with the children in `expand` opened one level."""
    path = []
    for name, child in parent.named_children():
        if name in expand:
            path += [(f"{prefix}{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            path.append((f"{prefix}{name}", child))
    return path


class FeatureInfo(Sequence):
    """The declared stages of a network (a list of dicts, as timm's `feature_info`).

    `channels()`, `reduction()` and `module_name()` give one field for all stages, or for
    index `idx`, as timm's `FeatureInfo` does, so code written for timm backbones reads it.
    """

    def __init__(self, stages: Sequence[dict[str, Any]], out_indices: Sequence[int] | None = None):
        self.stages = [dict(s) for s in stages]
        self.out_indices = tuple(range(len(self.stages))) if out_indices is None else tuple(out_indices)

    def __getitem__(self, idx):
        return self.stages[idx]

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.stages})"

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.stages[i][key] for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [self.stages[i][key] for i in idx]
        return self.stages[idx][key]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(self.stages[i]) for i in self.out_indices]

    def select(self, out_indices: Sequence[int]) -> FeatureInfo:
        """Only the stages at `out_indices` (negative indices count from the end)."""
        return FeatureInfo([self.stages[i] for i in resolve_indices(len(self.stages), out_indices)])


def resolve_indices(count: int, indices: int | Sequence[int] | None) -> list[int]:
    """Stage indices as a sorted list: None = all, an int n = the last n, a sequence as given."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise CnnzooError(f"asked for the last {indices} feature maps; the model has {count}")
        return list(range(count - indices, count))
    chosen = []
    for i in indices:
        if not -count <= i < count:
            raise CnnzooError(f"feature index {i} is out of range: the model has {count} stages (0..{count - 1})")
        chosen.append(i % count)
    return sorted(set(chosen))


class _Collected(Exception):
    """Raised by the last hook that was needed, to stop the forward pass early."""


def collect_intermediates(model: nn.Module, x: torch.Tensor, indices: Sequence[int],
                          stop_early: bool) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Run `model.forward_features(x)` and catch the outputs of the declared modules `indices`.

    Returns the final feature map (None when stopped early) and the maps in stage order.
    """
    names = [model.feature_info[i]["module"] for i in indices]
    modules = dict(model.named_modules())
    maps: dict[str, torch.Tensor] = {}
    last = names[-1] if names else None

    def hook(name: str):
        def record(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            maps[name] = output
            if stop_early and name == last:
                raise _Collected
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    final = None
    try:
        final = model.forward_features(x)
    except _Collected:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return final, [maps[name] for name in names]


class FeatureListNet(nn.Module):
    """A classifier reduced to its backbone: `forward(x)` returns the feature maps at
    `out_indices`, and `feature_info` describes just those (timm's `features_only` model).

    The classifier is removed (`reset_classifier(0)`), so its weights are not kept.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | int | None = None):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not info:
            raise CnnzooError(f"{type(model).__name__} declares no feature_info; it cannot be a backbone")
        model.reset_classifier(0)
        self.model = model
        self.out_indices = resolve_indices(len(info), out_indices)
        self.feature_info = info.select(self.out_indices)
        self.default_cfg = getattr(model, "default_cfg", {})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True,
                                                stop_early=True)


def output_stride_plan(strides: Sequence[int], output_stride: int | None, start: int = 1) -> Iterator[tuple[int, int]]:
    """For stages with the given strides, yield (stride, dilation) so the net stride stays at most
    `output_stride`: a stride that would exceed it becomes 1 and multiplies the dilation instead
    (DeepLab's atrous trick; timm's and torchvision's `replace_stride_with_dilation`).

    `start` is the stride of the stem before the first stage.
    """
    if output_stride not in (None, 8, 16, 32):
        raise CnnzooError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    net_stride, dilation = start, 1
    for stride in strides:
        if output_stride is not None and net_stride * stride > output_stride:
            dilation *= stride
            stride = 1
        net_stride *= stride
        yield stride, dilation
