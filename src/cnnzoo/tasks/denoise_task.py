"""The denoising task for the training engine (`cnnzoo train --task denoise`), after DnCNN (Zhang et al. 2017, arXiv 1608.03981).

Implements cnnzoo.engine.task.Task with the pieces in `tasks.denoise`:
- data: `data.dataset` is a folder or .tar(.gz) of clean images. When it has sub-folders, the
  one named `train*` (or `task_options.train_dir`) is the training set and the others are
  test sets (for ../shared/data/denoise-gray.tar.gz: train400, then set12 and bsd68); a flat
  folder is all training images. `data.val_fraction` of the training images (split with
  `data.split_seed`) are held out whole for validation, so best.pt is never chosen on a test
  set. Training batches are 40x40 patches at the scales 1/0.9/0.8/0.7 with the eight
  flips/rotations and fresh noise (`PatchLoader`); validation and test images get seeded
  noise at `eval_sigma`.
- loss: the paper's l = 1/(2N) sum_i ||R(y_i) - (y_i - x_i)||^2 over a batch of N patches
  (`loss: paper`, the default; with the residual output x^ = y - R(y) it equals
  1/(2N) sum_i ||x^_i - x_i||^2), or the per-pixel mean squared error (`loss: mean`).
- metrics: PSNR (the monitored validation metric, higher is better), SSIM and the per-pixel
  MSE per image, averaged; the test reports them per test set too. (Validation reports `mse`,
  not `loss`, because the paper's loss is a per-patch sum whose scale depends on the patch.)
Options go under `task_options` (e.g. `--set task_options.sigma_range=[0,55]`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
from torch import nn

from .._text import count
from ..engine.config import Config, ConfigError, from_dict
from ..engine.inference import describe_checkpoint, model_from_checkpoint, read_checkpoint
from ..engine.task import DataMeta, LossFn, Task, TaskData, register_task
from ..errors import CnnzooError, UnknownOptionError
from ..registry import create_model, model_info
from ..weights.dncnn import dncnn_from_stub, is_official_dncnn
from ..weights.safe_unpickle import UnsafePickleError, safe_load
from . import denoise as dn
from .denoise import DenoiseEvaluator, ImagePairLoader

EVAL_TILE = 1024  # tiles bound the memory of large photos; exact for DnCNN (receptive field <= 65)


@dataclass
class DenoiseOptions:
    sigma: float = 25.0  # noise level of DnCNN-S training, on the 0-255 scale
    sigma_range: list[float] | None = None  # blind training (DnCNN-B: [0, 55]): sigma ~ U[lo, hi] per patch
    eval_sigma: float | None = None  # validation/test noise; default: sigma, or 25 for blind training
    patch_size: int = 40
    patch_stride: int = 10
    scales: list[float] = field(default_factory=lambda: list(dn.PAPER_SCALES))
    augment: bool = True  # the eight flips/rotations of the official code
    loss: Literal["paper", "mean"] = "paper"
    train_dir: str | None = None  # sub-folder with the training images (default: the one named train*)
    test_sets: list[str] | None = None  # sub-folders to test on (default: every other one)
    ssim: bool = True  # also report SSIM (validation and test)


def _options(cfg: Config) -> DenoiseOptions:
    """The task options of cfg, checked."""
    opts = from_dict(DenoiseOptions, cfg.task_options, "task_options.")
    check_options(opts)
    return opts


def check_options(opts: DenoiseOptions) -> None:
    def check(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"task_options.{key}: {why}")

    check(opts.sigma >= 0, "sigma", "must be >= 0 (a level on the 0-255 scale)")
    if opts.sigma_range is not None:
        check(len(opts.sigma_range) == 2 and 0 <= opts.sigma_range[0] <= opts.sigma_range[1],
              "sigma_range", "must be [low, high] with 0 <= low <= high, e.g. [0, 55]")
    check(opts.eval_sigma is None or opts.eval_sigma >= 0, "eval_sigma", "must be >= 0")
    check(opts.patch_size >= 1, "patch_size", "must be a positive number of pixels")
    check(opts.patch_stride >= 1, "patch_stride", "must be a positive number of pixels")
    check(bool(opts.scales) and all(0 < s <= 1 for s in opts.scales), "scales", "must be numbers in (0, 1]")


def eval_sigma(opts: DenoiseOptions) -> float:
    if opts.eval_sigma is not None:
        return opts.eval_sigma
    return 25.0 if opts.sigma_range is not None else opts.sigma


def split_sources(groups: dict[str, dict], opts: DenoiseOptions, source: str) -> tuple[str, list[str]]:
    """(training sub-folder, test sub-folders) of a source's image groups."""
    named = sorted(g for g in groups if g)
    if opts.train_dir is not None:
        if opts.train_dir not in groups:
            raise ConfigError(f"task_options.train_dir: {source} has no sub-folder {opts.train_dir!r} "
                              f"(it has: {', '.join(named) or 'no sub-folders'})")
        train = opts.train_dir
    elif "" in groups and not named:
        train = ""
    else:
        candidates = [g for g in named if g.lower().startswith("train")]
        if not candidates:
            raise ConfigError(f"data.dataset: {source} has sub-folders {', '.join(named)} but none named train*; "
                              "set task_options.train_dir")
        train = candidates[0]
    tests = [g for g in named if g != train] if opts.test_sets is None else list(opts.test_sets)
    unknown = [t for t in tests if t not in groups]
    if unknown:
        raise ConfigError(f"task_options.test_sets: {source} has no sub-folder {unknown[0]!r} "
                          f"(it has: {', '.join(named)})")
    return train, tests


def _fingerprint(files: dict[str, dict]) -> str:
    digest = hashlib.sha256()
    for group in sorted(files):
        for name, payload in files[group].items():
            size = len(payload) if isinstance(payload, bytes) else payload.stat().st_size
            digest.update(f"{name}:{size};".encode())
    return digest.hexdigest()


def eval_groups(groups: dict[str, dict], source: str, sets: list[str] | None = None) -> list[str]:
    """The test sets to score in a source given for evaluation: `sets`, or every sub-folder not
    named train*, or the images at its top level when it has no sub-folders."""
    named = sorted(g for g in groups if g)
    chosen = sets if sets else [g for g in named if not g.lower().startswith("train")] or [""]
    unknown = [s for s in chosen if s not in groups]
    if unknown:
        raise ConfigError(f"{source} has no test set {unknown[0]!r} (it has: {', '.join(named) or 'no sub-folders'})")
    return chosen


@register_task
class DenoiseTask(Task):
    name = "denoise"
    monitor = ("psnr", "max")
    default_model = "dncnn"
    # The official PyTorch DnCNN code's optimiser: SGD at the classifiers' lr 0.1 diverges here.
    defaults = {"optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.0, "data.batch_size": 128}
    Options = DenoiseOptions

    # --------------------------------------------------------------------- data and model

    def build_data(self, cfg: Config, device: torch.device) -> TaskData:
        opts = _options(cfg)
        d = cfg.data
        channels = _model_channels(cfg.model.name)
        groups = _image_sets(d.dataset)
        train_name, test_names = split_sources(groups, opts, d.dataset)
        train_images, val_images = _split_validation(dn.read_images(groups[train_name], channels), d)
        sigma_range = tuple(opts.sigma_range) if opts.sigma_range is not None else None
        train = dn.PatchLoader([img for _, img in train_images], batch_size=d.batch_size, patch_size=opts.patch_size,
                               stride=opts.patch_stride, scales=opts.scales, sigma=opts.sigma, sigma_range=sigma_range,
                               augment=opts.augment, seed=cfg.runtime.seed, device=device, drop_last=d.drop_last)
        level = eval_sigma(opts)
        val = ImagePairLoader([(train_name, n, img) for n, img in val_images], sigma=level, seed=d.split_seed,
                              device=device) if val_images else None
        tests = [(t, n, img) for t in test_names for n, img in dn.read_images(groups[t], channels)]
        test = ImagePairLoader(tests, sigma=level, seed=0, device=device) if tests else None
        meta = DataMeta(
            dataset=str(Path(d.dataset).resolve()), fingerprint=_fingerprint(groups), in_chans=channels,
            input_size=(channels, opts.patch_size, opts.patch_size), mean=(0.0,) * channels, std=(1.0,) * channels,
            sizes={"train": len(train_images), "val": len(val_images), "test": len(tests)},
            details=f"{train.num_samples:,} training patches, noise sigma {level:g}",
            extra=dict(patches=train.num_samples, train_dir=train_name, test_sets=test_names, eval_sigma=level),
        )
        return TaskData(train, val, test, meta=meta)

    def build_eval_data(self, cfg: Config, meta: DataMeta, device: torch.device, *, dataset: str | None = None,
                        split: str | None = None) -> tuple[Iterable, str]:
        if split not in (None, "test"):
            raise CnnzooError("a denoising checkpoint is evaluated on its test sets; leave out --split "
                              "(it is for classification)")
        source = dataset or meta.dataset
        if dataset is None and not Path(source).exists():
            raise CnnzooError(f"the checkpoint's data {source} is not there any more; give its test sets with --data")
        groups = _image_sets(source)
        sets = eval_groups(groups, source, None if dataset else list(meta.extra.get("test_sets") or []))
        images = [(t, n, img) for t in sets for n, img in dn.read_images(groups[t], meta.in_chans)]
        return ImagePairLoader(images, sigma=_checkpoint_sigma(meta), seed=0, device=device), source

    def build_model(self, cfg: Config, meta: DataMeta) -> nn.Module:
        info = model_info(cfg.model.name)
        if info["task"] != "denoise":
            raise ConfigError(f"model.name: {cfg.model.name!r} is a {info['task']} model, not a denoiser "
                              "(try dncnn, dncnn_b, dncnn_color)")
        try:
            return create_model(cfg.model.name, in_chans=meta.in_chans, **cfg.model.kwargs)
        except (UnknownOptionError, TypeError, ValueError) as err:
            raise ConfigError(f"model.kwargs: {err}") from None

    def check_config(self, cfg: Config, meta: DataMeta) -> None:
        _options(cfg)

    # --------------------------------------------------------------------- loss and metrics

    def loss_fn(self, cfg: Config) -> LossFn:
        paper = _options(cfg).loss == "paper"

        def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
            noisy, clean = batch[0], batch[1]
            estimate = model(noisy).float()
            if paper:
                value = (estimate - clean).pow(2).sum() / (2 * clean.shape[0])
            else:
                value = (estimate - clean).pow(2).mean()
            with torch.no_grad():
                score = dn.psnr(estimate.detach().clamp(0, 1), clean).mean()
            return value, {"loss": value.detach(), "psnr": score}

        return loss

    def evaluator(self, cfg: Config, meta: DataMeta, *, final: bool) -> DenoiseEvaluator:
        """Validation scores whole images; the test also reports each test set (`set12_psnr`, ...)."""
        return DenoiseEvaluator(sigma=_checkpoint_sigma(meta), with_ssim=_options(cfg).ssim, per_set=final,
                                tile=EVAL_TILE if final else None)


def evaluate_sets(model: nn.Module, source: str, *, sets: list[str] | None = None, sigma: float = 25.0,
                  seed: int = 0, tile: int | None = EVAL_TILE, with_ssim: bool = True) -> dn.DenoiseSetsReport:
    """Score a denoiser (official weights or a checkpoint) on the test sets of `source` at noise
    level `sigma`, with the evaluator the training engine uses."""
    groups = _image_sets(source)
    chosen = eval_groups(groups, source, sets)
    channels = getattr(model, "in_chans", 1)
    images = [(t or Path(source).name, n, img) for t in chosen for n, img in dn.read_images(groups[t], channels)]
    loader = ImagePairLoader(images, sigma=sigma, seed=seed, device=next(model.parameters()).device)
    return dn.score(model, loader, DenoiseEvaluator(sigma=sigma, with_ssim=with_ssim, per_set=True, tile=tile)).report()


def _image_sets(source: str) -> dict[str, dict]:
    try:
        return dn.image_sets(source)
    except dn.DenoiseDataError as err:
        raise ConfigError(f"data.dataset: {err}") from None


def _split_validation(images: list, d: Any) -> tuple[list, list]:
    """(train, validation) images: data.val_fraction of them held out whole, by data.split_seed."""
    order = list(range(len(images)))
    random.Random(d.split_seed).shuffle(order)
    n_val = int(round(d.val_fraction * len(images)))
    if n_val >= len(images):
        raise ConfigError(f"data.val_fraction: {d.val_fraction} leaves none of the {len(images)} images for training")
    return [images[i] for i in sorted(order[n_val:])], [images[i] for i in sorted(order[:n_val])]


def _checkpoint_sigma(meta: DataMeta) -> float:
    return float(meta.extra.get("eval_sigma", 25.0))


def _model_channels(name: str) -> int:
    try:
        return int(model_info(name)["input_size"][0])
    except Exception as err:  # an unknown name: the registry's message names close matches
        raise ConfigError(f"model.name: {err}") from None


def load_denoiser(path: str | Path, *, trust: bool = False,
                  device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """A denoiser (eval mode) and a description, from the official DnCNN weights (a legacy
    whole-module pickle, read without running code) or a `cnnzoo train --task denoise` checkpoint."""
    path = Path(path)
    try:
        obj, refused = safe_load(path), None
    except UnsafePickleError as err:
        obj, refused = None, err
    if is_official_dncnn(obj):
        model = dncnn_from_stub(obj, source=str(path)).to(device)
        return model, f"{path}: official DnCNN weights (depth {model.depth}, {count(model.in_chans, 'channel')})"
    try:
        ckpt = read_checkpoint(path, trust=trust)
    except CnnzooError:
        if refused is not None:
            raise refused from None
        raise
    if ckpt.get("task") != "denoise":
        raise CnnzooError(f"{path} is a checkpoint of {ckpt.get('model_name')!r} for task {ckpt.get('task')!r}, "
                          "not a denoiser")
    return model_from_checkpoint(ckpt, device), describe_checkpoint(path, ckpt)


__all__ = ["DenoiseOptions", "DenoiseTask", "ImagePairLoader", "eval_groups", "evaluate_sets", "load_denoiser"]
