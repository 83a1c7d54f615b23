"""Start a run from other weights (fine-tuning): published weights, a cnnzoo checkpoint, a state
dict or safetensors.

`model.pretrained` (a tag or a file of published weights) goes through cnnzoo.weights: converted
from the publisher's names, loaded strictly, the classifier kept when it fits the data's classes
and re-made otherwise, a first convolution adapted to the data's channel count (RGB filters
summed for grey images, as timm does). `model.init_from` (a run's checkpoint, any state dict)
matches tensors by name and shape; a classifier trained on other classes (known by name from a
cnnzoo checkpoint) is left fresh even when the count is the same. Every tensor that is skipped is
named in the message, so nothing is dropped silently. This is for starting runs only: resuming a
run loads strictly (see resume.restore).

The weights' normalisation travels with them: `start_normalization` gives the mean/std the
weights were trained with (data.normalize: weights), which the task's loaders then use, so
checkpoints, `cnnzoo eval` and `cnnzoo predict` use them too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CnnzooError
from ..weights import WeightsError, entry_for, load_pretrained
from ..weights.catalogue import ENTRIES
from ..registry import stats_for_channels
from ..weights.loading import adapt_input_conv, adaptable_input_conv, classifier_keys, renamings
from .checkpoint import load_checkpoint, load_weights
from .checkpoint_schema import check_checkpoint, check_state_dict
from .config import Config
from .task import DataMeta

log = logging.getLogger(__name__)


def _read(path: str | Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, what a cnnzoo checkpoint says about itself: model_name, classes, meta)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, metadata = load_weights(path)
        return state, {"model_name": metadata.get("architecture")}
    obj = load_checkpoint(path, trust=trust, required_keys=())
    about = {}
    if isinstance(obj, dict) and "meta" in obj:  # a training checkpoint: its meta and classes are read below
        check_checkpoint(path, obj)
    if isinstance(obj, dict):
        about = {k: obj[k] for k in ("model_name", "classes", "meta") if k in obj}
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnzooError(f"model.init_from: {path} holds no state dict of tensors")
    # nn.DataParallel / torch.compile prefixes
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v
             for k, v in check_state_dict(path, obj, "model.init_from").items()}
    return state, about


def read_state_dict(path: str | Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, the architecture a cnnzoo checkpoint names or None) from any weights file."""
    state, about = _read(path, trust=trust)
    source_model = about.get("model_name")
    return state, source_model if isinstance(source_model, str) else None


def load_initial_weights(model: nn.Module, path: str | Path, *, trust: bool = False, arch: str | None = None,
                         classes: tuple[str, ...] | list[str] | None = None, allow_partial: bool = False,
                         frozen: bool = False) -> str:
    """Copy every tensor of `path` that fits the model (by name, under cnnzoo's names or a
    publisher's); returns a one-line report.

    With `arch`, a file that is not a cnnzoo checkpoint (akamaster's `.th`, a torchvision file)
    is first read as published weights (converted by name, strictly). With `classes` (the data's),
    a checkpoint's classifier trained on other classes is left fresh. A first convolution made for
    RGB is adapted to the model's channels (`adapt_input_conv`). Any other tensor of the model
    left unloaded is an error naming its modules, unless `allow_partial` (`frozen`: the run would
    freeze them, which the message says)."""
    return _init_from(model, path, trust=trust, arch=arch, classes=classes, allow_partial=allow_partial,
                      frozen=frozen)[0]


def _init_from(model: nn.Module, path: str | Path, *, trust: bool, arch: str | None, classes, allow_partial: bool,
               frozen: bool) -> tuple[str, list[str]]:
    """(report, keys of first convolutions adapted to the model's channels): load_initial_weights."""
    source, about = _read(path, trust=trust)
    source_model = about.get("model_name") if isinstance(about.get("model_name"), str) else None
    if arch is not None and "meta" not in about:
        try:
            loaded = load_pretrained(model, path, arch=arch, head="auto")
        except WeightsError:
            pass  # not exactly in any publisher's names: match by name and shape below
        else:
            head = ("classifier left fresh (another number of classes)" if loaded.fresh_keys
                    else "classifier loaded (the same number of classes)")
            names = str(loaded).split(': ', 2)[-1].split('; ')[0]
            return f"initialised from {path} ({names}); {head}", list(loaded.adapted_keys)
    target = model.state_dict()
    names, renamed, matched, adapted = _best_match(source, target, arch)
    heads = classifier_keys(model)
    if not set(matched) - heads:  # a lone bias of the classifier's size is no fit
        what = f"it is a checkpoint of {source_model!r}" if source_model else "another architecture?"
        raise CnnzooError(f"model.init_from: no tensor of {path} fits this model ({what})")
    source_classes = list(about.get("classes") or (about.get("meta") or {}).get("classes") or [])
    other_classes = bool(classes) and bool(source_classes) and list(classes) != source_classes
    if other_classes:
        matched = {k: v for k, v in matched.items() if k not in heads}
    fresh = [k for k in target if k not in matched and not k.endswith("num_batches_tracked")]
    _check_complete(path, [k for k in fresh if k not in heads], allow_partial=allow_partial, frozen=frozen)
    model.load_state_dict(matched, strict=False)
    unused = [k for k in renamed if k not in matched and k not in heads and not k.endswith("num_batches_tracked")]
    report = f"initialised {len(matched)}/{len(target)} tensors from {path}" + ("" if names == "cnnzoo names" else
                                                                                 f" ({names})")
    if other_classes:
        report += (f"; classifier left fresh: the checkpoint's {len(source_classes)} classes "
                   f"({', '.join(source_classes[:4])}{', ...' if len(source_classes) > 4 else ''}) are not this data's")
    elif heads and heads <= set(matched):
        same = "the same classes" if source_classes else "the same number of classes"
        report += f"; classifier loaded ({same})"
    elif heads:
        report += f"; kept fresh: {', '.join(k for k in target if k in heads)} (the classifier, for another number of classes)"
    if [k for k in fresh if k not in heads]:
        report += f"; left random (--allow-partial): {_modules(k for k in fresh if k not in heads)}"
    if unused:
        report += f"; unused from the file: {', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}"
    return report, adapted


def _best_match(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                arch: str | None) -> tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(whose names, the source so renamed, the tensors that fit `target`, the first convolutions
    adapted from RGB) under the naming that fits most tensors: cnnzoo's own, then each publisher's."""
    best = ("cnnzoo names", source, {}, [])
    for names, state in [("cnnzoo names", source), *(renamings(source, arch) if arch else [])]:
        fits, adapted = {}, []
        for key, value in state.items():
            if key not in target:
                continue
            if target[key].shape == value.shape:
                fits[key] = value
            elif adaptable_input_conv(target[key], value):
                fits[key] = adapt_input_conv(target[key].shape[1], value)
                adapted.append(key)
        if len(fits) > len(best[2]):
            best = (names, state, fits, adapted)
    return best


def _modules(keys) -> str:
    """The modules that own `keys`, in order, at most eight named."""
    modules = list(dict.fromkeys(k.rpartition(".")[0] or k for k in keys))
    return ", ".join(modules[:8]) + (f", ... ({len(modules)} modules)" if len(modules) > 8 else "")


def _check_complete(path: str | Path, unloaded: list[str], *, allow_partial: bool, frozen: bool) -> None:
    """Refuse to start from weights that leave part of the backbone random, unless asked to."""
    if not unloaded or allow_partial:
        return
    fate = "random and frozen by --freeze-backbone" if frozen else "random"
    raise CnnzooError(f"model.init_from: {path} leaves {len(unloaded)} tensors besides the classifier {fate}, in "
                      f"{_modules(unloaded)}; use weights of this architecture, or --allow-partial to start from "
                      "the rest")


def load_start_weights(model: nn.Module, cfg: Config, meta: DataMeta) -> list[str]:
    """Load model.pretrained or model.init_from into a new run's model; the lines to print."""
    m = cfg.model
    if m.pretrained:
        loaded = load_pretrained(model, m.pretrained, arch=m.name, head="auto")
        lines = [str(loaded).split("; ")[0] + ("; classifier re-made for "
                                               f"{meta.num_classes} classes" if loaded.fresh_keys else
                                               "; classifier loaded (same number of classes)")]
        if loaded.adapted_keys:
            lines.append(_adapted_line(loaded.adapted_keys, meta.in_chans))
        return lines
    if m.init_from:
        report, adapted = _init_from(model, m.init_from, trust=cfg.runtime.trust_checkpoint, arch=m.name,
                                     classes=meta.classes, allow_partial=m.allow_partial, frozen=m.freeze_backbone)
        return [report] + ([_adapted_line(adapted, meta.in_chans)] if adapted else [])
    return []


def _adapted_line(keys, in_chans: int) -> str:
    how = "summed over their input channels" if in_chans == 1 else "repeated and scaled by 3/channels"
    return (f"{', '.join(keys)}: the 3-channel (RGB) filters {how} for {in_chans}-channel data "
            "(as timm's adapt_input_conv)")


def start_normalization(cfg: Config, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """(mean, std, where they come from) of the weights a run starts from, for data.normalize
    "weights"; None to use the dataset's own (no weights, data.normalize "dataset", or weights
    whose statistics are unknown)."""
    m = cfg.model
    if cfg.data.normalize != "weights" or not (m.pretrained or m.init_from):
        return None
    if m.pretrained:
        entry = _entry(m.pretrained, m.name)
        if entry is None or entry.preprocessing is None:
            _note_unknown_stats(m.pretrained)
            return None
        pre = entry.preprocessing
        return stats_for_channels(tuple(pre.mean), in_chans), stats_for_channels(tuple(pre.std), in_chans), entry.tag
    _, about = _read(m.init_from, trust=cfg.runtime.trust_checkpoint)
    if "meta" in about:
        meta = DataMeta.from_dict(about["meta"])
        return stats_for_channels(meta.mean, in_chans), stats_for_channels(meta.std, in_chans), f"{Path(m.init_from).name}"
    entry = _entry(m.init_from, m.name)
    if entry is not None and entry.preprocessing is not None:
        pre = entry.preprocessing
        return stats_for_channels(tuple(pre.mean), in_chans), stats_for_channels(tuple(pre.std), in_chans), entry.tag
    _note_unknown_stats(m.init_from)
    return None


def _note_unknown_stats(spec: str) -> None:
    log.info("normalising with the dataset's mean/std: %s does not say which statistics its weights were trained "
             "with (a cnnzoo checkpoint or a registered weights file does)", Path(spec).name)


def publisher_options(cfg: Config) -> dict[str, Any]:
    """The model options that reproduce the convention of model.pretrained's publisher (MobileNet
    V1 with ReLU6, DnCNN's BN eps); {} for weights of unknown origin. A file that is gone (a
    checkpoint rebuilt elsewhere) is still known by its name."""
    spec = cfg.model.pretrained
    if not spec:
        return {}
    entry = _entry(spec, cfg.model.name)
    return dict(entry.model_args) if entry is not None else {}


def weights_checkpoint(spec: str, model_name: str | None = None, *, data: str | None = None,
                       image_size: int | None = None) -> dict[str, Any]:
    """Published weights (a tag or a file that is not a cnnzoo checkpoint, e.g. akamaster's `.th`)
    as the dict a training checkpoint is, so `cnnzoo eval` and `cnnzoo predict` use them through
    their one path: the model built with the publisher's conventions, the weights' class names and
    preprocessing (mean/std, input size) as the data's."""
    from ..registry import model_info
    from ..weights import create_pretrained
    from .config import config_from_dict, config_to_dict

    entry = _entry(spec, model_name) if model_name else entry_for(spec)
    if model_name is None:
        if entry is None:
            raise CnnzooError(f"{spec}: weights of unknown origin; name the architecture with --model NAME")
        model_name = entry.architecture
    info = model_info(model_name)
    if info["task"] != "classify":
        raise CnnzooError(f"{model_name} is a {info['task']!r} model; --weights is for classifiers "
                          "(denoisers: `cnnzoo denoise WEIGHTS ...`)")
    num_classes = len(entry_classes(entry)) if entry is not None and entry.classes else None
    model = create_pretrained(model_name, spec, **({"num_classes": num_classes} if num_classes else {}))
    pre = model.pretrained_cfg
    classes = tuple(pre.get("classes") or (str(i) for i in range(model.num_classes)))
    input_size = tuple(int(v) for v in pre["input_size"])
    raw = {"model": {"name": model_name, "pretrained": str(spec)},
           "data": {"dataset": data or "", "image_size": image_size or input_size[-1], "normalize": "weights"}}
    cfg = config_to_dict(config_from_dict(raw))
    meta = DataMeta(dataset=str(pre.get("tag") or spec), fingerprint="", in_chans=input_size[0], input_size=input_size,
                    mean=tuple(pre["mean"]), std=tuple(pre["std"]), sizes={}, classes=classes,
                    details=f"{len(classes)} classes, published weights")
    return {"model_name": model_name, "task": "classify", "config": cfg, "meta": meta.to_dict(),
            "model": model.state_dict(), "classes": list(classes), "num_classes": len(classes),
            "in_chans": input_size[0], "dataset": meta.dataset, "epoch": None, "step": None,
            "preprocessing": {"mean": list(meta.mean), "std": list(meta.std), "input_size": list(input_size)},
            "weights": str(model.pretrained_loaded)}


def entry_classes(entry) -> tuple[str, ...]:
    from ..weights import class_names

    return class_names(entry.classes)


def _entry(spec: str, arch: str):
    try:
        return entry_for(spec, arch)
    except WeightsError:
        name = Path(spec).name
        return next((e for e in ENTRIES if e.file_name == name and e.architecture == arch), None)


__all__ = ["load_initial_weights", "load_start_weights", "publisher_options", "read_state_dict",
           "start_normalization", "weights_checkpoint"]
