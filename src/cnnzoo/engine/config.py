"""The typed training configuration: dataclass sections, strict loading, overrides, checks.

A run is described by one `Config`. Recipes (YAML files shipped inside the package, in
`cnnzoo/recipes/`, or any path) give some of its keys (read with `yaml.safe_load`),
command-line flags override single keys, and everything is
checked before any data is loaded: an unknown key is refused with the nearest valid key, a
value of the wrong type or outside its range names its dotted key, and combinations that
cannot work (mixup on a regression task, 10-crop larger than the images, warm-up in front
of one-cycle) are refused with the reason. All of it raises `ConfigError` (exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .._limits import MAX_INPUT_SIDE
from ..errors import ConfigError
from ..registry import model_info
from .task import get_task, task_names

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")
MAX_SCALE = 4.0  # eval.scales: a multi-scale test resizes each image by these factors
MAX_WORKERS = 256


def resumable(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A config field that may change when a run is resumed (see `resumable_keys`); any other
    difference between a checkpoint's config and the resumed one is refused."""
    return field(default=default, metadata={"resumable": True}, **kwargs)


@dataclass
class ModelConfig:
    name: str = "lenet5"
    kwargs: dict[str, Any] = field(default_factory=dict)  # family options, e.g. {shortcut: B}
    init_from: str | None = None  # a checkpoint or weights file to start from (fine-tuning)
    pretrained: str | None = None  # published weights: a tag (`cnnzoo weights list`) or a file
    freeze_backbone: bool = False  # train only the classifier; backbone BN statistics stay fixed
    # init_from: start even when tensors besides the classifier are left random (listed); else refused
    allow_partial: bool = resumable(False)
    # patch whitening of the first convolution (airbench, arXiv 2404.00498): its filters are set
    # from the patches of this many training images and then frozen; 0 = off
    whiten_images: int = 0
    whiten_eps: float = 5e-4  # added to the eigenvalues before the 1/sqrt scaling
    whiten_bias_epochs: float | None = None  # the whitened conv's bias trains this many epochs (None: always)


@dataclass
class DataConfig:
    dataset: str = "digits"  # a name (digits, mnist, fashion-mnist, cifar10, cifar100) or a path
    val_fraction: float = 0.1  # carved from train when the dataset has no validation split
    split_seed: int = 0  # the validation split does not change with runtime.seed
    image_size: int | None = None  # resize stored images (None: the dataset's own size)
    batch_size: int = 64
    eval_batch_size: int | None = resumable(None)  # None: 2 x batch_size
    drop_last: bool = False
    num_workers: int = resumable(2)  # decoding large image folders
    cache_dir: str | None = resumable(None)
    on_bad_image: Literal["error", "skip"] = resumable("error")
    max_bad_images: int | float = resumable(0.01)  # a fraction (< 1) or a count of images that may be skipped
    download: bool = resumable(False)
    # fine-tuning (model.pretrained / model.init_from): normalise with the weights' mean/std
    # ("weights", as they were trained) or with the new data's ("dataset")
    normalize: Literal["weights", "dataset"] = "weights"
    # image folders: decode everything once into memory ("off"), stream batches from worker
    # processes ("on"), or stream only when the decoded images would pass memory_budget_gb ("auto")
    stream: Literal["auto", "on", "off"] = "auto"
    memory_budget_gb: float = resumable(8.0)


@dataclass
class OptimConfig:
    # sgd_scaled: Nesterov SGD with lr and weight_decay per 1024 examples, converted to the batch
    # and the momentum, weight decay decoupled from lr (airbench's units; see engine/optim.py)
    name: Literal["sgd", "adamw", "rmsprop", "rmsprop_tf", "sgd_scaled"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD and RMSprop
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_norm_bias: bool = False  # no weight decay on biases and normalisation weights
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    alpha: float = 0.9  # RMSprop's decay of the squared-gradient average (Inception v3: 0.9)
    eps: float | None = None  # None: the optimiser's default (Inception v3's RMSprop: 1.0)
    grad_clip: float = 0.0  # max global gradient norm, 0 = off
    grad_accum: int = 1  # micro-batches per optimiser step: each (per-process) batch is split this many ways
    norm_lr_scale: float = 1.0  # normalisation-layer parameters: lr x this, weight decay / this (airbench: 64)
    # lookahead: every N steps the weights move to an average w_avg <- d w_avg + (1 - d) w with
    # d = lookahead_decay * (step / total) ** lookahead_power (airbench: 5, 0.95^5, 3); 0 = off
    lookahead_every: int = 0
    lookahead_decay: float = 0.7737809375
    lookahead_power: float = 3.0


@dataclass
class ScheduleConfig:
    # triangle: linear from lr/div_factor up to lr over pct_start of the steps, then down to min_lr
    name: Literal["constant", "step", "multistep", "cosine", "sgdr", "htd", "onecycle", "plateau",
                  "triangle"] = "cosine"
    epochs: int = resumable(20)
    max_steps: int | None = resumable(None)  # stop after this many optimiser steps (the ResNet paper's 64k)
    unit: Literal["epoch", "step"] = "epoch"  # unit of step_size, milestones, t0 and warmup
    step_size: float = 30.0  # step: multiply by gamma every step_size units
    milestones: list[float] = field(default_factory=list)  # multistep: multiply by gamma at each
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine and SGDR floor
    t0: float = 10.0  # SGDR: length of the first cycle
    t_mult: float = 2.0  # SGDR: each cycle is t_mult times longer than the one before
    htd_lower: float = -6.0  # hyperbolic-tangent decay bounds L and U (Hsueh et al. 2019)
    htd_upper: float = 3.0
    warmup: float = 0.0  # warm-up length in front of the schedule
    warmup_mode: Literal["linear", "constant"] = "linear"  # ramp up to lr, or hold lr * warmup_factor
    warmup_factor: float = 0.1  # constant warm-up: lr * warmup_factor (ResNet-110: 0.1 x 0.1 = 0.01)
    pct_start: float = 0.3  # one-cycle: fraction of the run spent increasing the lr
    div_factor: float = 25.0  # one-cycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4  # one-cycle: final lr = initial lr / final_div_factor
    patience: int = 5  # plateau: validation epochs without improvement before dividing
    factor: float = 0.1  # plateau: AlexNet's divide-by-10


@dataclass
class RegularizationConfig:
    label_smoothing: float = 0.0
    drop_rate: float | None = None  # classifier dropout, for models that take drop_rate
    drop_path_rate: float | None = None  # stochastic depth, for models that take it
    # None = the dataset's usual augmentation: random-resized crop + flip for large images;
    # otherwise a random crop with size/8 padding (CIFAR: 4) + flip, except for handwritten
    # digits (digits, mnist): size/16 padding and no flip (a mirrored digit is another symbol).
    crop_padding: int | None = None  # random crop after zero padding
    hflip: bool | None = None
    random_resized_crop: bool | None = None  # Inception-style crop to the input size
    cutout: int = 0  # side of the square cut out of each image, 0 = off
    pad_mode: Literal["zeros", "reflect"] = "zeros"  # the padding of the random crop (reflect: airbench)
    flip: Literal["random", "alternate"] = "random"  # alternate: each image's flip alternates by epoch
    # VGG/ResNet scale augmentation: shorter side S uniform in [S_min, S_max] ([256, 512] VGG,
    # [256, 480] ResNet), or fixed ([256]: single-scale training), then a random crop of the input
    # size and flip. [] = off. Training images are kept with shorter side S_max (memory: N x C x S_max^2 bytes).
    scale_jitter: list[int] = field(default_factory=list)
    pca_lighting: float = 0.0  # AlexNet's PCA colour noise: std of the alphas (paper 0.1), 0 = off
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclass
class RuntimeConfig:
    device: str = resumable("auto")  # auto, cpu, cuda, cuda:N, mps
    threads: int | None = resumable(None)  # intra-op CPU threads (None: as set; the CLI: the CPUs it may use)
    amp: Literal["auto", "off", "bf16", "fp16"] = resumable("auto")  # CUDA: bf16 (fp16); CPU: fp32 or probed bf16
    channels_last: bool | None = resumable(None)  # None: on for CUDA and the CPU (measured faster there), off for MPS
    compile: bool = resumable(False)
    seed: int = 0
    out: str | None = resumable(None)  # run directory (default runs/<model>-<dataset>-<time>)
    save_every_steps: int = resumable(0)  # also checkpoint in the middle of epochs
    skip_nonfinite: int = resumable(0)  # steps with a NaN/inf loss that may be skipped before stopping
    progress: Literal["auto", "bar", "log", "off"] = resumable("auto")  # auto: bars on a terminal, lines off it
    log_every: int = resumable(50)  # steps between progress lines off a terminal
    log_seconds: float = resumable(30.0)  # ... and at most this many seconds between them
    tensorboard: bool = resumable(True)  # when the tensorboard package is installed
    report: bool = resumable(True)  # plots and report.html at the end of a run (needs cnnzoo[viz])
    trust_checkpoint: bool = resumable(False)  # allow pickled objects in model.init_from
    sync_bn: bool = False  # several processes: BatchNorm statistics over the global batch (SyncBatchNorm)
    dist_timeout: float = resumable(600.0)  # seconds a process waits for the others before giving up


@dataclass
class EvalConfig:
    # for the final test; dense, crop144 and dense_multicrop are the papers' whole-image tests (engine/tta.py)
    tta: Literal["none", "hflip", "tencrop", "multiscale", "fliptranslate", "dense", "crop144",
                 "dense_multicrop"] = resumable("none")
    crop_size: int | None = resumable(None)  # tencrop: None = 7/8 of the image side; crop144/multicrop: the input size
    # dense / crop144 / dense_multicrop: shorter sides in pixels the whole image is rescaled to;
    # [] = the paper's (dense: ResNet's 224, 256, 384, 480, 640; crop144: GoogLeNet's 256, 288, 320,
    # 352), scaled by input size / 224
    sizes: list[int] = resumable(default_factory=list)
    scales: list[float] = resumable(default_factory=lambda: [0.875, 1.0, 1.125])  # multiscale


@dataclass
class NoOptions:
    """The `task_options` of a task that takes none."""


@dataclass
class Config:
    task: str = "classify"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    task_options: dict[str, Any] = field(default_factory=dict)  # checked against the task's Options


# ---------------------------------------------------------------------------- loading


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from plain data, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown key {path!r}{_suggest(str(key), prefix, names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def config_from_dict(data: dict | None) -> Config:
    return from_dict(Config, data or {})


def config_to_dict(cfg: Any) -> dict:
    """Plain dict of a config (tuples as lists), for YAML files and weights_only checkpoints."""
    return _plain(dataclasses.asdict(cfg))


def load_recipe(path: str | Path) -> dict:
    """The raw mapping in a YAML recipe (yaml.safe_load: data only, no Python objects)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist{_recipe_hint()}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of sections, got {_describe(data)}")
    return data


def find_recipe(name: str) -> Path:
    """A recipe path as given, or the name of one shipped with cnnzoo (`cnnzoo recipes` lists them)."""
    path = Path(name)
    shipped = shipped_recipes()
    if name in shipped and not path.is_file():  # a shipped name such as paper/resnet20_cifar10
        return shipped[name]
    folders = {known.split("/")[0] for known in shipped if "/" in known}
    if path.is_file() or path.suffix in (".yaml", ".yml") or ("/" in name and name.split("/")[0] not in folders):
        return path
    close = difflib.get_close_matches(name, shipped, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else _recipe_hint()
    raise ConfigError(f"no recipe named {name!r}{hint}")


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of the recipes inside the installed package (read with importlib.resources,
    so a wheel installed with `pip install .` has them as well as an editable checkout). Recipes in
    a sub-folder are named with it: `paper/resnet20_cifar10` (the papers' recipes)."""
    return _recipes_in(resources.files("cnnzoo") / "recipes", "")


def _recipes_in(folder: Any, prefix: str) -> dict[str, Path]:
    found, folders = {}, []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.is_file() and item.name.endswith((".yaml", ".yml")):
            found[prefix + item.name.rsplit(".", 1)[0]] = Path(str(item))
        elif item.is_dir() and not item.name.startswith((".", "_")):
            folders.append(item)
    for sub in folders:  # the top-level recipes first
        found.update(_recipes_in(sub, f"{prefix}{sub.name}/"))
    return found


def recipe_summary(path: Path) -> str:
    """The first sentence of a recipe's leading comment: what it trains and after whom."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(w for w in words if w)
    end = re.search(r"(?<! al)\.\s+(?=[A-Z])", text)  # a sentence end, not "et al. 2016"
    return text if end is None else text[:end.start() + 1]


def set_key(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested raw dict, checking each part against the Config fields."""
    parts = dotted.split(".")
    cls: Any = Config
    node = data
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        prefix = ".".join(parts[:i]) + "." if i else ""
        if cls is None:  # inside a free-form dict such as model.kwargs
            pass
        else:
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise ConfigError(f"unknown key {path!r}{_suggest(part, prefix, names)}")
        if i == len(parts) - 1:
            node[part] = value
            return
        child_type = typing.get_type_hints(cls)[part] if cls is not None else None
        if cls is not None and not dataclasses.is_dataclass(child_type) and typing.get_origin(child_type) is not dict:
            raise ConfigError(f"{path!r} is a single value, not a section: set {path}=VALUE")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(node)}")
        cls = child_type if dataclasses.is_dataclass(child_type) else None


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key.path=value` from the command line; the value is read as YAML (1e-3, true, [30, 60])."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (for example optim.lr=0.05), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# ---------------------------------------------------------------------------- checks


def validate(cfg: Config) -> Config:
    """Range and cross-key checks that the types alone cannot express; returns cfg."""
    if cfg.task not in task_names():
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(task_names())}{_close(cfg.task, task_names())}")
    task = get_task(cfg.task)
    classification = task.classification
    d, o, s, r, rt, e = cfg.data, cfg.optim, cfg.schedule, cfg.regularization, cfg.runtime, cfg.eval
    _check(d.batch_size >= 1, "data.batch_size", "must be at least 1")
    _check(d.eval_batch_size is None or d.eval_batch_size >= 1, "data.eval_batch_size", "must be at least 1")
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)")
    _check(d.image_size is None or d.image_size >= 1, "data.image_size", "must be a positive number of pixels")
    _check(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(d.max_bad_images >= 0, "data.max_bad_images", "must be >= 0")
    _check(o.lr > 0, "optim.lr", "must be > 0")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _check(not o.nesterov or (o.name == "sgd" and o.momentum > 0), "optim.nesterov",
           "needs optim.name=sgd and optim.momentum > 0")
    _check(0 < o.alpha < 1, "optim.alpha", "must be in (0, 1)")
    _check(o.eps is None or o.eps > 0, "optim.eps", "must be > 0")
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", "must both be in [0, 1)")
    _check(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 turns clipping off)")
    _check(o.grad_accum >= 1, "optim.grad_accum", "must be at least 1")
    _check(d.batch_size % o.grad_accum == 0, "optim.grad_accum",
           f"data.batch_size={d.batch_size} does not split into {o.grad_accum} equal micro-batches")
    _check(d.memory_budget_gb > 0, "data.memory_budget_gb", "must be > 0")
    _check(rt.dist_timeout > 0, "runtime.dist_timeout", "must be > 0 seconds")
    _check(o.name != "sgd_scaled" or o.momentum > 0, "optim.momentum", "sgd_scaled is Nesterov SGD: needs momentum > 0")
    _check(o.norm_lr_scale > 0, "optim.norm_lr_scale", "must be > 0")
    _check(o.lookahead_every >= 0, "optim.lookahead_every", "must be >= 0 (0 turns lookahead off)")
    _check(0 <= o.lookahead_decay <= 1, "optim.lookahead_decay", "must be in [0, 1]")
    _check(o.lookahead_power >= 0, "optim.lookahead_power", "must be >= 0")
    m0 = cfg.model
    _check(m0.whiten_images >= 0, "model.whiten_images", "must be >= 0 (0 turns whitening off)")
    _check(not m0.whiten_images or classification, "model.whiten_images",
           f"patch whitening is implemented for classification; task is {cfg.task!r}")
    _check(m0.whiten_eps > 0, "model.whiten_eps", "must be > 0")
    _check(m0.whiten_bias_epochs is None or m0.whiten_bias_epochs >= 0, "model.whiten_bias_epochs", "must be >= 0")
    _check(rt.threads is None or rt.threads >= 1, "runtime.threads", "must be at least 1")
    _check(s.epochs >= 1, "schedule.epochs", "must be at least 1")
    _check(s.max_steps is None or s.max_steps >= 1, "schedule.max_steps", "must be at least 1")
    _check(s.step_size > 0, "schedule.step_size", "must be > 0")
    _check(list(s.milestones) == sorted(s.milestones) and all(m > 0 for m in s.milestones),
           "schedule.milestones", "must be positive and increasing")
    _check(s.name != "multistep" or s.milestones, "schedule.milestones", "multistep needs at least one milestone")
    _check(0 < s.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
    _check(s.min_lr >= 0 and s.min_lr < o.lr, "schedule.min_lr", f"must be in [0, optim.lr={o.lr})")
    _check(s.t0 > 0, "schedule.t0", "must be > 0")
    _check(s.t_mult >= 1, "schedule.t_mult", "must be >= 1")
    _check(s.htd_lower < s.htd_upper, "schedule.htd_lower", "must be below schedule.htd_upper")
    _check(s.warmup >= 0, "schedule.warmup", "must be >= 0")
    _check(0 < s.warmup_factor <= 1, "schedule.warmup_factor", "must be in (0, 1]")
    _check(not (s.name == "onecycle" and s.warmup > 0), "schedule.warmup",
           "one-cycle has its own warm-up phase; set schedule.pct_start instead")
    _check(0 < s.pct_start < 1, "schedule.pct_start", "must be in (0, 1)")
    _check(s.div_factor >= 1 and s.final_div_factor >= 1, "schedule.div_factor", "div factors must be >= 1")
    _check(s.patience >= 0, "schedule.patience", "must be >= 0")
    _check(0 < s.factor < 1, "schedule.factor", "must be in (0, 1)")
    _check(0 <= r.label_smoothing < 1, "regularization.label_smoothing", "must be in [0, 1)")
    for key in ("drop_rate", "drop_path_rate"):
        value = getattr(r, key)
        _check(value is None or 0 <= value < 1, f"regularization.{key}", "must be in [0, 1)")
    _check(r.crop_padding is None or r.crop_padding >= 0, "regularization.crop_padding", "must be >= 0")
    _check(not (r.random_resized_crop and r.crop_padding), "regularization.crop_padding",
           "choose either random_resized_crop or crop_padding, not both")
    _check(r.cutout >= 0, "regularization.cutout", "must be >= 0")
    _check(len(r.scale_jitter) in (0, 1, 2) and all(v >= 8 for v in r.scale_jitter)
           and list(r.scale_jitter) == sorted(r.scale_jitter), "regularization.scale_jitter",
           "must be [], [S] or [S_min, S_max] with 8 <= S_min <= S_max pixels")
    _check(not (r.scale_jitter and (r.random_resized_crop or r.crop_padding)), "regularization.scale_jitter",
           "makes its own crops; leave random_resized_crop and crop_padding unset")
    _check(0 <= r.pca_lighting <= 1, "regularization.pca_lighting", "must be in [0, 1] (AlexNet: 0.1)")
    _check(r.mixup_alpha >= 0, "regularization.mixup_alpha", "must be >= 0")
    _check(r.cutmix_alpha >= 0, "regularization.cutmix_alpha", "must be >= 0")
    if not classification:  # the section is the classifier's: another task would silently ignore it
        unused = RegularizationConfig()
        for key in (f.name for f in dataclasses.fields(r)):
            _check(getattr(r, key) == getattr(unused, key), f"regularization.{key}",
                   f"needs a classification task; task is {cfg.task!r}, which does not use it")
    _check(rt.save_every_steps >= 0, "runtime.save_every_steps", "must be >= 0 (0 = only at epoch ends)")
    _check(rt.skip_nonfinite >= 0, "runtime.skip_nonfinite", "must be >= 0")
    _check(rt.log_every >= 1, "runtime.log_every", "must be at least 1")
    _check(rt.log_seconds > 0, "runtime.log_seconds", "must be > 0")
    _check(not (rt.amp == "fp16" and rt.device.startswith("cpu")), "runtime.amp",
           "fp16 autocast needs a CUDA device; use bf16 on the CPU")
    _check(DEVICE_PATTERN.fullmatch(rt.device) is not None, "runtime.device",
           f"{rt.device!r} is not auto, cpu, cuda, cuda:N or mps")
    _check(0 <= rt.seed < 2**32, "runtime.seed", f"must be in [0, 2**32), got {rt.seed}")
    # sizes that allocate in proportion: bounded like the numbers read from checkpoints
    for key, value in (("data.image_size", d.image_size), ("eval.crop_size", e.crop_size),
                       ("regularization.crop_padding", r.crop_padding), ("regularization.cutout", r.cutout)):
        _check(value is None or value <= MAX_INPUT_SIDE, key, f"must be at most {MAX_INPUT_SIDE} pixels")
    _check(all(x <= MAX_SCALE for x in e.scales), "eval.scales", f"must be at most {MAX_SCALE}")
    _check(d.num_workers <= MAX_WORKERS, "data.num_workers", f"must be at most {MAX_WORKERS}")
    _check(e.crop_size is None or e.crop_size >= 1, "eval.crop_size", "must be a positive number of pixels")
    _check(bool(e.scales) and all(x > 0 for x in e.scales), "eval.scales", "must be positive numbers")
    _check(all(x >= 1 for x in e.sizes), "eval.sizes", "must be positive numbers of pixels")
    if e.tta == "tencrop" and e.crop_size and d.image_size:
        check_crop(e.crop_size, (d.image_size, d.image_size), key="eval.crop_size")
    m = cfg.model
    _check(not (m.pretrained and m.init_from), "model.pretrained",
           "choose either model.pretrained (published weights) or model.init_from (a checkpoint), not both")
    _check(not m.freeze_backbone or bool(m.pretrained or m.init_from), "model.freeze_backbone",
           "needs weights to freeze: give --pretrained TAG_OR_FILE or --init-from CHECKPOINT")
    _check_model_task(cfg, task.models_of)
    check_image_size(cfg.model.name, d.image_size)
    from_dict(task.Options or NoOptions, cfg.task_options, "task_options.")
    return cfg


def _check_model_task(cfg: Config, wanted: str) -> None:
    model_task = model_info(cfg.model.name)["task"]  # an unknown name raises with suggestions
    if model_task != wanted:
        raise ConfigError(f"model.name: {cfg.model.name!r} is a {model_task!r} model but the task is {cfg.task!r}; "
                          f"use --task {model_task} or a {wanted!r} model")


def check_image_size(model: str, image_size: int | None, *, key: str = "data.image_size") -> None:
    """An image size someone chose (not None) must fit the model's declared minimum input; only
    the dataset's own size is raised to the minimum, with a note (tasks/classification)."""
    minimum = model_info(model)["min_input_size"]
    if image_size is not None and minimum and image_size < min(minimum[1:]):
        raise ConfigError(f"{key}: {image_size} px is below {model}'s minimum input of {min(minimum[1:])} px; "
                          f"choose at least {min(minimum[1:])}, or leave it unset to have smaller images "
                          "resized to the minimum")


def resumable_keys(cls: type | None = None, prefix: str = "") -> set[str]:
    """Dotted keys declared `resumable` on the config fields."""
    keys = set()
    for f in dataclasses.fields(cls or Config):
        hint = typing.get_type_hints(cls or Config)[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= resumable_keys(hint, f"{prefix}{f.name}.")
        elif f.metadata.get("resumable"):
            keys.add(f"{prefix}{f.name}")
    return keys


def check_crop(crop: int, image_hw: tuple[int, int], *, key: str) -> None:
    if crop > min(image_hw):
        raise ConfigError(
            f"{key}: a {crop}px 10-crop does not fit in {image_hw[0]}x{image_hw[1]} images; "
            f"use a crop of at most {min(image_hw)} px or larger images (data.image_size)"
        )


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {why}")


# ---------------------------------------------------------------------------- helpers


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{path}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, args))}{_close(value, args)}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 64e3 in YAML
            return int(value)
        raise ConfigError(f"{path}: expected a whole number, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
    if origin in (list, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return dict(value)
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug in this module


def _all_paths(cls: type = Config, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            paths += _all_paths(hint, f"{prefix}{f.name}.")
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def _suggest(key: str, prefix: str, names: list[str]) -> str:
    if not names:
        return f" ({prefix.rstrip('.') or 'this section'} takes no keys)"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    close = close or [n for n in names if key.startswith(n + "_") or n.startswith(key)][:1]  # lr_rate -> lr
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    # A key put in the wrong section: `lr` at the top level means optim.lr.
    paths = _all_paths()
    leaves = {p.rsplit(".", 1)[-1]: p for p in paths}
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.75)
    if close:
        return f" (did you mean {leaves[close[0]]!r}?)"
    return f"; valid keys here: {', '.join(names)}"


def _close(value: Any, options: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _recipe_hint() -> str:
    known = sorted(shipped_recipes())
    return f"; recipes shipped with cnnzoo: {', '.join(known)}" if known else ""
