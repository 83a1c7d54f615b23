"""Reading a weights file safely, converting it to cnnzoo's names and loading it strictly.

A spec is a tag (`mobilenet_v2.tv2_in1k`), `True` (the architecture's default tag) or a file
path. Files are read without running their code: `torch.load(weights_only=True)`,
safetensors, or the restricted unpickler for whole-module pickles (the official DnCNN). The
converter is the entry's publisher's; for a bare file it is detected from the keys (cnnzoo's
own names, then torchvision's, then timm's). After a strict load, the entry's preprocessing
and class names are stamped on the model (`model.pretrained_cfg`, `model.default_cfg`) so
`predict`/`eval` resize and normalise as the publisher did.

`head="drop"` loads everything but the classifier(s), for a model re-made for another class
count (fine-tuning); `head="auto"` keeps the classifier when its shape fits and drops it
otherwise; the keys left freshly initialised are returned. A model with another number of
input channels than the weights gets its first convolution adapted as timm's
`adapt_input_conv` does: summed over the RGB filters for one channel, else the RGB filters
repeated and scaled by 3 / channels.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .. import models as _models  # noqa: F401  (registers the architectures)
from .._limits import check_backed, check_torch_file
from ..registry import create_model, model_info, stats_for_channels
from . import akamaster, converters
from .catalogue import ENTRIES, default_weights, get_weights
from .classes import class_names
from .converters import State, check_state, converter_for, sources_for, state_problems
from .dncnn import dncnn_from_stub, is_official_dncnn
from .entry import WeightsEntry, WeightsError
from .hub import file_sha256, require_cached
from .safe_unpickle import ModuleStub, safe_load

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Loaded:
    """What `load_pretrained` did: `str()` is the one-line description."""

    description: str
    entry: WeightsEntry | None
    path: Path
    fresh_keys: tuple[str, ...] = field(default=())
    adapted_keys: tuple[str, ...] = field(default=())  # first conv adapted to another channel count

    def __str__(self) -> str:
        return self.description


def resolve(spec: Any, arch: str | None = None) -> tuple[WeightsEntry | None, Path]:
    """(entry or None, local file) for a tag, `True` (arch's default), an entry or a file path.

    A file whose name is a known entry's (`resnet20-12fca82f.th`) is matched to that entry.
    """
    if isinstance(spec, WeightsEntry):
        return spec, require_cached(spec)
    if spec is True:
        if arch is None:
            raise WeightsError("pretrained=True needs the architecture's name")
        entry = default_weights(arch)
        return entry, require_cached(entry)
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_file():
        return _entry_for_file(Path(spec), arch), Path(spec)
    if isinstance(spec, str) and "." in spec and "/" not in spec and Path(spec).suffix.lstrip(".") not in _SUFFIXES:
        entry = get_weights(spec)
        return entry, require_cached(entry)
    raise WeightsError(f"{spec}: no such weights file or tag (tags: `cnnzoo weights list`)")


_SUFFIXES = {"pth", "pt", "th", "bin", "safetensors", "ckpt"}


def entry_for(spec: Any, arch: str | None = None) -> WeightsEntry | None:
    """The entry a spec names, without needing its file: a tag, `True` (arch's default), an
    entry, or a file known by its name (or size and hash); None for a file of unknown origin."""
    if isinstance(spec, WeightsEntry):
        return spec
    if spec is True:
        if arch is None:
            raise WeightsError("pretrained=True needs the architecture's name")
        return default_weights(arch)
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_file():
        return _entry_for_file(Path(spec), arch)
    if isinstance(spec, str) and "." in spec and "/" not in spec and Path(spec).suffix.lstrip(".") not in _SUFFIXES:
        return get_weights(spec)
    raise WeightsError(f"{spec}: no such weights file or tag (tags: `cnnzoo weights list`)")


def _entry_for_file(path: Path, arch: str | None) -> WeightsEntry | None:
    """The entry a file is a copy of: by its name, else (same size, then sha256) by its content."""
    candidates = [e for e in ENTRIES if arch is None or e.architecture == arch]
    by_name = [e for e in candidates if e.file_name == path.name]
    if len(by_name) == 1:
        return by_name[0]
    size = path.stat().st_size
    by_size = [e for e in candidates if e.size_bytes == size and e.sha256]
    digest = file_sha256(path) if by_size else ""
    return next((e for e in by_size if digest.startswith(e.sha256)), None)


def read_state_file(path: Path) -> tuple[State | ModuleStub, dict[str, str]]:
    """(tensors or a pickled-module stub, safetensors metadata) from a file, never running its code."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    check_torch_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as err:
        if "weights_only" not in str(err) and not isinstance(err, pickle.UnpicklingError):
            raise WeightsError(f"{path}: not a readable PyTorch file ({type(err).__name__}: {str(err)[:120]})") from None
        obj = safe_load(path)  # whole-module pickle: stubs only, no code runs
    return _unwrap(obj, path), {}


def _unwrap(obj: Any, path: Path) -> State | ModuleStub:
    if isinstance(obj, ModuleStub):
        return obj
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    for key, tensor in obj.items():
        check_backed(tensor, f"{path}: {key}")
    prefix = "module."  # saved from nn.DataParallel
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def convert_state(raw: State | ModuleStub, arch: str, *, source: str | None, expected: Mapping[str, torch.Tensor],
                  what: str, loose: frozenset[str] = frozenset()) -> tuple[State, str]:
    """(cnnzoo-named tensors, the source used); `source=None` detects it from the keys (the
    names must fit exactly; shapes too, except for the `loose` keys (a classifier that may be
    re-made) and a first convolution for another number of input channels)."""
    if isinstance(raw, ModuleStub):
        if not is_official_dncnn(raw):
            raise WeightsError(f"{what}: a pickled {raw.qualname} module, not a state dict")
        return dncnn_from_stub(raw, source=what).state_dict(), "official"
    if source == "akamaster":
        return akamaster.convert_state_dict(raw), source
    family = model_info(arch)["family"]
    if source is not None:
        return converter_for(source, family)(raw), source
    candidates = ["cnnzoo", *sources_for(family)]
    if arch.endswith("_cifar") and family == "resnet":
        candidates.append("akamaster")
    best = None
    for candidate in candidates:
        state = akamaster.convert_state_dict(raw) if candidate == "akamaster" else converter_for(candidate, family)(raw)
        state = _fill_counters(state, expected)
        problems = state_problems(_loosened(expected, state, loose), state)
        if not problems:
            return state, candidate
        best = best or (candidate, problems)
    raise WeightsError(f"{what}: fits {arch} under none of {', '.join(candidates)} names "
                       f"(as {best[0]}: {best[1]})")


def _fill_counters(state: State, expected: Mapping[str, torch.Tensor]) -> State:
    """BatchNorm's `num_batches_tracked` (absent from files older than PyTorch 0.4.1) only
    matters with momentum=None; take the model's own where the file has none."""
    missing = {k: expected[k] for k in expected if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing}


def _loosened(expected: Mapping[str, torch.Tensor], state: State, loose: frozenset[str]) -> Mapping[str, torch.Tensor]:
    """`expected` with the shapes of `loose` keys and adaptable input convolutions taken from `state`."""
    out = dict(expected)
    for key, value in state.items():
        if key in out and (key in loose or adaptable_input_conv(out[key], value)):
            out[key] = value
    return out


def adaptable_input_conv(want: torch.Tensor, have: torch.Tensor) -> bool:
    """A conv weight that differs only in its input channels, from 3 (RGB) to any other count."""
    return (want.ndim == 4 and have.ndim == 4 and have.shape[1] == 3 and want.shape[1] != 3
            and want.shape[0] == have.shape[0] and want.shape[2:] == have.shape[2:])


def renamings(state: State, arch: str) -> list[tuple[str, State]]:
    """(publisher, the state renamed by that publisher's converter) for every converter, the
    architecture's family's first: for loading a file by name when no converter fits it exactly
    (a timm SE-ResNet's `se.*` names into a ResNet built with attn_layer="se")."""
    family = model_info(arch)["family"]
    order = sorted(converters.CONVERTERS, key=lambda key: key[1] != family)
    out, seen = [], set()
    for source, fam in order:
        convert = converter_for(source, fam)
        if convert in seen:
            continue
        seen.add(convert)
        try:
            out.append((f"{source} names", convert(state)))
        except (KeyError, ValueError, IndexError, AttributeError, WeightsError):
            continue  # a converter that reads a layout from the keys and finds none of its own
    return out


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """An RGB first-layer filter bank for `in_chans` input channels, as timm's `adapt_input_conv`:
    summed over R, G, B for one channel (a grey image through the summed filter gives what the
    RGB filters give on that grey image repeated three times); else repeated and scaled by 3/in_chans."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-in_chans // 3)
    return (weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)).to(weight.dtype)


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the final classifier and of any auxiliary classifiers."""
    heads = [model.get_classifier()] if hasattr(model, "get_classifier") else []
    heads += [head.fc for head in getattr(model, "aux_heads", {}).values() if hasattr(head, "fc")]
    ids = {id(h) for h in heads}
    prefixes = [name for name, module in model.named_modules() if id(module) in ids]
    return {k for k in model.state_dict() if any(k.startswith(p + ".") for p in prefixes)}


_CONVENTION_CHECKS = {
    "act_layer": lambda model, value: any(type(m) is value for m in model.modules()),
    "bn_eps": lambda model, value: all(m.eps == value for m in model.modules() if isinstance(m, nn.BatchNorm2d)),
    "padding": lambda model, value: getattr(model, "padding", None) == value,
}


def _check_conventions(model: nn.Module, entry: WeightsEntry) -> None:
    for name, value in entry.model_args:
        if not _CONVENTION_CHECKS[name](model, value):
            shown = getattr(value, "__name__", value)
            raise WeightsError(f"{entry.tag} needs the model built with {name}={shown} "
                               f"(create_model({entry.architecture!r}, {name}=...) or weights.build_model_for({entry.tag!r}))")


def build_model_for(spec: Any, arch: str | None = None, **kwargs: Any) -> nn.Module:
    """A fresh model of the entry's architecture, built with the publisher's conventions."""
    entry = spec if isinstance(spec, WeightsEntry) else (default_weights(arch) if spec is True else get_weights(spec))
    return create_model(entry.architecture, **{**dict(entry.model_args), **kwargs})


def load_pretrained(model: nn.Module, spec: Any, *, arch: str, head: str = "keep",
                    source: str | None = None) -> Loaded:
    """Load weights into `model` strictly and stamp their preprocessing and class names on it.

    `head="keep"`: every tensor must fit. `head="drop"`: the classifier(s) are left as the
    model has them (for another class count) and named in `Loaded.fresh_keys`. `head="auto"`:
    keep the classifier when its shapes fit, else drop it. A first convolution made for
    another number of input channels is adapted (`adapt_input_conv`), named in `adapted_keys`.
    """
    if head not in ("keep", "drop", "auto"):
        raise WeightsError(f"head must be 'keep', 'drop' or 'auto', got {head!r}")
    entry, path = resolve(spec, arch)
    if entry is not None and entry.architecture != arch:
        raise WeightsError(f"{entry.tag} is for {entry.architecture}, not {arch}")
    if entry is not None:
        _check_conventions(model, entry)
    expected = model.state_dict()
    heads = classifier_keys(model)
    raw, _meta = read_state_file(path)
    state, used = convert_state(raw, arch, source=entry.source if entry else source, expected=expected, what=str(path),
                                loose=frozenset(heads) if head != "keep" else frozenset())
    state = _fill_counters(state, expected)
    if head == "auto":
        head = "drop" if any(k in state and state[k].shape != expected[k].shape for k in heads) else "keep"
    fresh = sorted(heads) if head == "drop" else []
    adapted = sorted(k for k, v in state.items() if k in expected and k not in fresh and adaptable_input_conv(expected[k], v))
    state = {k: adapt_input_conv(expected[k].shape[1], v) if k in adapted else v
             for k, v in state.items() if k not in fresh}
    check_state({k: v for k, v in expected.items() if k not in fresh}, state, f"{path} as {arch}")
    model.load_state_dict({**state, **{k: expected[k] for k in fresh}}, strict=True)
    stamp(model, entry, path, head_fresh=bool(fresh))
    return Loaded(_describe(entry, path, used, fresh, adapted, expected), entry, path, tuple(fresh), tuple(adapted))


def create_pretrained(name: str, pretrained: Any = True, **kwargs: Any) -> nn.Module:
    """`create_model(name, **kwargs)` with published weights loaded (a tag, True for the default
    tag, or a file), built with the publisher's conventions. Another `num_classes` than the
    weights' leaves the classifier freshly initialised; the one-line description is logged
    and kept as `model.pretrained_loaded`."""
    entry = entry_for(pretrained, name)
    if entry is not None and entry.architecture != name:
        raise WeightsError(f"{entry.tag} is for {entry.architecture}, not {name}")
    model = create_model(name, **{**(dict(entry.model_args) if entry else {}), **kwargs})
    loaded = load_pretrained(model, pretrained, arch=name, head="auto")
    model.pretrained_loaded = str(loaded)
    log.info("%s", loaded)
    return model


def _describe(entry: WeightsEntry | None, path: Path, source: str, fresh: list[str], adapted: list[str] = (),
              expected: Mapping[str, torch.Tensor] | None = None) -> str:
    what = f"{entry.tag} ({entry.source}" + (f", top-1 {entry.top1:.2f}%" if entry.top1 else "") + ")" if entry else f"{source} names"
    line = f"weights: {path.name}: {what}"
    if adapted and expected is not None:
        line += (f"; {', '.join(adapted)} adapted from 3 to {expected[adapted[0]].shape[1]} input channel(s) "
                 "(RGB filters summed)" if expected[adapted[0]].shape[1] == 1 else
                 f"; {', '.join(adapted)} adapted from 3 to {expected[adapted[0]].shape[1]} input channels")
    return line + (f"; classifier left fresh ({len(fresh)} tensors)" if fresh else "")


def stamp(model: nn.Module, entry: WeightsEntry | None, path: Path, *, head_fresh: bool = False) -> None:
    """Record the weights' preprocessing and class names on the model (no class names when the
    classifier was left fresh; for a model with another channel count than the weights', the
    input size takes its channels and a one-channel model the mean of the RGB mean/std)."""
    cfg = getattr(model, "default_cfg", None) or {}
    pre = entry.preprocessing if entry else None
    values = dict(
        mean=tuple(pre.mean), std=tuple(pre.std), input_size=tuple(pre.input_size), crop_pct=pre.crop_pct,
        interpolation=pre.interpolation,
    ) if pre else {k: cfg[k] for k in ("mean", "std", "input_size", "crop_pct", "interpolation") if k in cfg}
    in_chans = getattr(model, "in_chans", None)
    if pre and in_chans and in_chans != len(pre.mean):
        values.update(mean=stats_for_channels(pre.mean, in_chans), std=stats_for_channels(pre.std, in_chans),
                      input_size=(in_chans, *tuple(pre.input_size)[1:]))
    classes = class_names(entry.classes) if entry and entry.classes and not head_fresh else None
    model.pretrained_cfg = dict(tag=entry.tag if entry else str(path), classes=classes, **values)
    if pre is None:
        return
    if hasattr(cfg, "replace"):
        model.default_cfg = cfg.replace(**values)
    else:
        model.default_cfg = {**cfg, **values}

