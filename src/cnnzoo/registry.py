"""The model registry: every architecture variant is a named builder plus its metadata.

`register_model` records a builder with its paper, family, input style and reference
parameter count; `create_model` builds one by name and stamps its `default_cfg` (input size,
mean/std) on the instance so preprocessing travels with the model.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import asdict, dataclass, field
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
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: Paper
    input_style: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classify"
    num_classes: int = 1000
    ref_params: int | None = None
    ref_source: str | None = None
    notes: str = ""
    extra_cfg: dict = field(default_factory=dict)

    @property
    def default_cfg(self) -> dict[str, Any]:
        cfg = dict(
            architecture=self.name,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            num_classes=self.num_classes,
            input_style=self.input_style,
            task=self.task,
        )
        cfg.update(self.extra_cfg)
        return cfg


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
    **entry_kwargs: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name (or `name`).

    CIFAR-style entries default to 3x32x32 input and CIFAR-10 statistics, ImageNet-style
    ones to 3x224x224 and ImageNet statistics. A duplicate name raises ValueError.
    """
    if input_style not in INPUT_STYLES:
        raise ValueError(f"input_style must be one of {INPUT_STYLES}, got {input_style!r}")
    cifar = input_style == "cifar"

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or builder.__name__
        if model_name in _REGISTRY:
            raise ValueError(f"a model named {model_name!r} is already registered")
        _REGISTRY[model_name] = ModelEntry(
            name=model_name,
            builder=builder,
            family=family,
            paper=paper,
            input_style=input_style,
            input_size=input_size or ((3, 32, 32) if cifar else (3, 224, 224)),
            mean=mean or (CIFAR10_MEAN if cifar else IMAGENET_MEAN),
            std=std or (CIFAR10_STD if cifar else IMAGENET_STD),
            ref_params=ref_params,
            ref_source=ref_source,
            **entry_kwargs,
        )
        return builder

    return decorator


def _entry(name: str) -> ModelEntry:
    _ensure_models_imported()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `cnnzoo list`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model by name; options are keyword-only and checked by name."""
    entry = _entry(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    try:
        model = entry.builder(**kwargs)
    except UnknownOptionError as err:
        raise UnknownOptionError(f"model {name!r}: {err}") from None
    cfg = entry.default_cfg
    cfg["num_classes"] = getattr(model, "num_classes", cfg["num_classes"])
    if in_chans is not None:
        cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
        cfg["mean"], cfg["std"] = _match_channels(cfg["mean"], in_chans), _match_channels(
            cfg["std"], in_chans
        )
    cfg.update(getattr(model, "cfg_overrides", {}))
    model.default_cfg = cfg
    return model


def _match_channels(stats: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
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
    _ensure_models_imported()
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern)
        and (family is None or entry.family == family)
        and (input_style is None or entry.input_style == input_style)
    )


def list_families() -> list[str]:
    _ensure_models_imported()
    return sorted({entry.family for entry in _REGISTRY.values()})


def model_info(name: str) -> dict[str, Any]:
    """Metadata of a registered model: family, paper, reference params, and its default_cfg."""
    entry = _entry(name)
    cfg = entry.default_cfg
    del cfg["architecture"]
    return dict(name=entry.name, family=entry.family, paper=asdict(entry.paper), ref_params=entry.ref_params,
                ref_source=entry.ref_source, notes=entry.notes, **cfg)


def _ensure_models_imported() -> None:
    # Registration happens when the family modules are imported; importing here means
    # `from cnnzoo.registry import create_model` works without importing cnnzoo.models first.
    from . import models  # noqa: F401
