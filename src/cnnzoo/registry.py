"""The model registry: every architecture variant is a named builder plus its metadata.

`register_model` records a builder with its paper, family, reference parameter count and a
typed `ModelCfg` (input size, minimum input size, mean/std, interpolation, crop fraction,
task); `create_model` builds one by name and stamps that `default_cfg` on the instance so
preprocessing travels with the model.

This module is a leaf: it imports no model. The families register themselves when
`cnnzoo.models` is imported, which the `cnnzoo` package does (as torchvision and timm do).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

from torch import nn

from .errors import UnknownModelError, UnknownOptionError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
INPUT_STYLES = ("cifar", "imagenet")


@dataclass(frozen=True)
class Paper:
    title: str
    year: int
    arxiv: str | None = None
    authors: str = ""


@dataclass(frozen=True)
class ModelCfg(Mapping):
    """What a model expects of its input and what it is for: the preprocessing that travels with
    the model (torchvision's `Weights.transforms`, timm's `pretrained_cfg`).

    It reads like a dict too (`model.default_cfg["input_size"]`), as timm's configs do, and
    `details` holds variant facts (width multiplier, depth, noise level) shown by `cnnzoo info`.
    """

    architecture: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int = 1000
    input_style: str = "imagenet"
    task: str = "classify"
    min_input_size: tuple[int, int, int] | None = None  # smallest input the network can take
    interpolation: str = "bilinear"  # resizing for evaluation
    crop_pct: float = 0.875  # evaluation: resize to input / crop_pct, then centre-crop the input size
    details: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "ModelCfg":
        """A copy with `changes`; names that are not fields go into `details`."""
        names = {f.name for f in fields(self)}
        extra = {k: changes.pop(k) for k in list(changes) if k not in names}
        if extra:
            changes["details"] = {**self.details, **extra}
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def _fields(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "details"]

    def __getitem__(self, key: str) -> Any:
        if key in self._fields():
            return getattr(self, key)
        return self.details[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._fields()
        yield from self.details

    def __len__(self) -> int:
        return len(self._fields()) + len(self.details)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: Paper
    cfg: ModelCfg
    ref_params: int | None = None
    ref_source: str | None = None
    notes: str = ""

    @property
    def input_style(self) -> str:
        return self.cfg.input_style

    @property
    def task(self) -> str:
        return self.cfg.task


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *,
    family: str,
    paper: Paper,
    input_style: str,
    input_size: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    ref_params: int | None = None,
    ref_source: str | None = None,
    name: str | None = None,
    notes: str = "",
    **cfg: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name (or `name`).

    CIFAR-style entries default to 3x32x32 input and CIFAR-10 statistics, ImageNet-style
    ones to 3x224x224 and ImageNet statistics; other `ModelCfg` fields (task, num_classes,
    min_input_size, details, ...) pass through. A duplicate name raises ValueError.
    """
    if input_style not in INPUT_STYLES:
        raise ValueError(f"input_style must be one of {INPUT_STYLES}, got {input_style!r}")
    cifar = input_style == "cifar"

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or builder.__name__
        if model_name in _REGISTRY:
            raise ValueError(f"a model named {model_name!r} is already registered")
        model_cfg = ModelCfg(
            architecture=model_name,
            input_size=input_size or ((3, 32, 32) if cifar else (3, 224, 224)),
            mean=mean or (CIFAR10_MEAN if cifar else IMAGENET_MEAN),
            std=std or (CIFAR10_STD if cifar else IMAGENET_STD),
            input_style=input_style,
            **cfg,
        )
        _REGISTRY[model_name] = ModelEntry(model_name, builder, family, paper, model_cfg, ref_params, ref_source,
                                           notes)
        return builder

    return decorator


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `cnnzoo list`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str, *, num_classes: int | None = None, in_chans: int | None = None, features_only: bool = False,
    out_indices: int | Sequence[int] | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model by name; options are keyword-only and checked by name.

    `features_only=True` returns the backbone alone: a module whose forward gives the feature
    maps of the stages at `out_indices` (all by default), with their `feature_info` (timm's API).
    """
    entry = _entry(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    try:
        model = entry.builder(**kwargs)
    except UnknownOptionError as err:
        raise UnknownOptionError(f"model {name!r}: {err}") from None
    cfg = entry.cfg.replace(num_classes=getattr(model, "num_classes", entry.cfg.num_classes))
    if in_chans is not None:
        cfg = cfg.replace(input_size=(in_chans, *cfg.input_size[1:]), mean=stats_for_channels(cfg.mean, in_chans),
                          std=stats_for_channels(cfg.std, in_chans))
    model.default_cfg = cfg.replace(**getattr(model, "cfg_overrides", {}))
    if features_only:
        if not callable(getattr(model, "as_backbone", None)):
            raise UnknownOptionError(f"model {name!r} has no feature maps to return (features_only)")
        return model.as_backbone(out_indices)
    if out_indices is not None:
        raise UnknownOptionError(f"model {name!r}: out_indices needs features_only=True")
    return model


def stats_for_channels(stats: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Per-channel statistics for another channel count (the mean of the given ones)."""
    if len(stats) == in_chans:
        return tuple(stats)
    return (sum(stats) / len(stats),) * in_chans


def build_model(cls: type[nn.Module], defaults: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate `cls` from a variant's data merged with user options.

    Options the class does not accept raise UnknownOptionError naming them, instead of
    a bare TypeError from deep inside the constructor.
    """
    accepted = _init_params(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownOptionError(
            f"does not take option(s) {', '.join(map(repr, unknown))}{hint}; "
            f"it takes: {', '.join(sorted(accepted))}"
        )
    return cls(**{**defaults, **kwargs})


def _init_params(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}


def list_models(
    pattern: str = "*", *, family: str | None = None, input_style: str | None = None
) -> list[str]:
    """Registered names matching a shell-style wildcard, optionally filtered; sorted."""
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern)
        and (family is None or entry.family == family)
        and (input_style is None or entry.input_style == input_style)
    )


def list_families() -> list[str]:
    return sorted({entry.family for entry in _REGISTRY.values()})


def cite(paper: dict[str, Any], *, full: bool = False) -> str:
    """'He et al. 2016' of a model_info paper; with `full` the title and arXiv id as well."""
    authors = [a.strip() for a in paper["authors"].split(",") if a.strip()]
    lead = f"{authors[0]} et al." if len(authors) > 2 else " & ".join(authors) or "?"
    text = f"{lead} {paper['year']}"
    if full:
        text += f", {paper['title']}" + (f", arXiv {paper['arxiv']}" if paper["arxiv"] else "")
    return text


def model_info(name: str) -> dict[str, Any]:
    """Metadata of a registered model: family, paper, reference params, and its default_cfg."""
    entry = _entry(name)
    cfg = entry.cfg.as_dict()
    del cfg["architecture"]
    return dict(name=entry.name, family=entry.family, paper=asdict(entry.paper), ref_params=entry.ref_params,
                ref_source=entry.ref_source, notes=entry.notes, **cfg)
