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
from typing import Any, Iterable, Iterator, Literal, Sequence

import torch
from torch import nn

from ..engine.config import Config, ConfigError, from_dict
from ..engine.task import TaskData
from ..errors import CnnzooError, UnknownOptionError
from ..registry import create_model, model_info
from . import denoise as dn


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
    return from_dict(DenoiseOptions, cfg.task_options, "task_options.")


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


class ImagePairLoader:
    """Whole (noisy, clean) images one at a time (their sizes differ), with noise seeded per
    image name: the same noisy input at every validation. Batches are (noisy, clean, set)."""

    def __init__(self, images: Sequence[tuple[str, str, torch.Tensor]], *, sigma: float, seed: int,
                 device: torch.device):
        self.images, self.sigma, self.seed, self.device = list(images), float(sigma), int(seed), device

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, str]]:
        for set_name, name, clean in self.images:
            noisy = dn.seeded_noisy(clean, self.sigma, seed=self.seed, name=name)
            yield noisy[None].to(self.device), clean[None].to(self.device), set_name


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


class DenoiseTask:
    name = "denoise"
    monitor = ("psnr", "max")
    classification = False
    default_model = "dncnn"
    # The official PyTorch DnCNN code's optimiser: SGD at the classifiers' lr 0.1 diverges here.
    defaults = {"optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.0, "data.batch_size": 128}
    Options = DenoiseOptions

    def __init__(self) -> None:
        self.opts = DenoiseOptions()

    # --------------------------------------------------------------------- data and model

    def build_data(self, cfg: Config, device: torch.device) -> TaskData:
        opts = self.opts = _options(cfg)
        check_options(opts)
        d = cfg.data
        channels = _model_channels(cfg.model.name)
        try:
            groups = dn.image_sets(d.dataset)
        except dn.DenoiseDataError as err:
            raise ConfigError(f"data.dataset: {err}") from None
        train_name, test_names = split_sources(groups, opts, d.dataset)
        train_images = dn.read_images(groups[train_name], channels)
        order = list(range(len(train_images)))
        random.Random(d.split_seed).shuffle(order)
        n_val = int(round(d.val_fraction * len(train_images)))
        if n_val >= len(train_images):
            raise ConfigError(f"data.val_fraction: {d.val_fraction} leaves none of the {len(train_images)} "
                              "images for training")
        val_images = [train_images[i] for i in sorted(order[:n_val])]
        train_images = [train_images[i] for i in sorted(order[n_val:])]
        sigma_range = tuple(opts.sigma_range) if opts.sigma_range is not None else None
        train = dn.PatchLoader([img for _, img in train_images], batch_size=d.batch_size, patch_size=opts.patch_size,
                               stride=opts.patch_stride, scales=opts.scales, sigma=opts.sigma, sigma_range=sigma_range,
                               augment=opts.augment, seed=cfg.runtime.seed, device=device, drop_last=d.drop_last)
        level = eval_sigma(opts)
        val = ImagePairLoader([(train_name, n, img) for n, img in val_images], sigma=level, seed=d.split_seed,
                              device=device) if val_images else None
        tests = [(t, n, img) for t in test_names for n, img in dn.read_images(groups[t], channels)]
        test = ImagePairLoader(tests, sigma=level, seed=0, device=device) if tests else None
        meta = dict(
            dataset=str(Path(d.dataset).resolve()), fingerprint=_fingerprint(groups), classes=[], num_classes=0,
            in_chans=channels, input_size=[channels, opts.patch_size, opts.patch_size],
            mean=[0.0] * channels, std=[1.0] * channels,
            sizes={"train": len(train_images), "val": len(val_images), "test": len(tests)},
            patches=train.num_samples, train_dir=train_name, test_sets=test_names, eval_sigma=level,
            bad_images=[],
        )
        return TaskData(train, val, test, meta=meta)

    def check_config(self, cfg: Config, meta: dict[str, Any]) -> None:
        check_options(_options(cfg))

    def build_model(self, cfg: Config, meta: dict[str, Any]) -> nn.Module:
        info = model_info(cfg.model.name)
        if info["task"] != "denoise":
            raise ConfigError(f"model.name: {cfg.model.name!r} is a {info['task']} model, not a denoiser "
                              "(try dncnn, dncnn_b, dncnn_color)")
        try:
            return create_model(cfg.model.name, in_chans=meta["in_chans"], **cfg.model.kwargs)
        except (UnknownOptionError, TypeError, ValueError) as err:
            raise ConfigError(f"model.kwargs: {err}") from None

    # --------------------------------------------------------------------- loss and metrics

    def training_loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
        noisy, clean = batch[0], batch[1]
        estimate = model(noisy).float()
        if self.opts.loss == "paper":
            loss = (estimate - clean).pow(2).sum() / (2 * clean.shape[0])
        else:
            loss = (estimate - clean).pow(2).mean()
        with torch.no_grad():
            psnr = dn.psnr(estimate.detach().clamp(0, 1), clean).mean()
        return loss, {"loss": loss.detach(), "psnr": psnr}

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        per_set = self._scores(model, loader)
        return _summarise([s for scores in per_set.values() for s in scores], self.opts.ssim)

    def evaluate_test(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """PSNR/SSIM over all test images, then per test set (`set12_psnr`, ...)."""
        per_set = self._scores(model, loader)
        result = _summarise([s for scores in per_set.values() for s in scores], self.opts.ssim)
        for set_name, scores in per_set.items():
            result.update({f"{set_name}_{k}": v for k, v in _summarise(scores, self.opts.ssim).items() if k != "mse"})
        return result

    def _scores(self, model: nn.Module, loader: Iterable) -> dict[str, list[tuple[float, float, float | None]]]:
        """(mse, psnr, ssim) per image, grouped by test set; fetched from the device once at the end."""
        names, rows = [], []
        for noisy, clean, set_name in loader:
            estimate = model(noisy).float()
            mse = (estimate - clean).pow(2).mean().double()
            estimate = estimate.clamp(0, 1)
            score_ssim = dn.ssim(estimate, clean)[0] if self.opts.ssim else mse.new_zeros(())
            names.append(set_name)
            rows.append(torch.stack([mse, dn.psnr(estimate, clean)[0], score_ssim]))
        per_set: dict[str, list[tuple[float, float, float | None]]] = {}
        for set_name, (mse, psnr, score_ssim) in zip(names, torch.stack(rows).tolist() if rows else []):
            per_set.setdefault(set_name, []).append((mse, psnr, score_ssim if self.opts.ssim else None))
        return per_set


def _summarise(scores: list[tuple[float, float, float | None]], with_ssim: bool) -> dict[str, float]:
    if not scores:
        return {}
    n = len(scores)
    result = {"psnr": sum(s[1] for s in scores) / n, "mse": sum(s[0] for s in scores) / n}
    if with_ssim:
        result["ssim"] = sum(s[2] for s in scores) / n  # type: ignore[misc]
    return result


def _model_channels(name: str) -> int:
    try:
        return int(model_info(name)["input_size"][0])
    except Exception as err:  # an unknown name: the registry's message names close matches
        raise ConfigError(f"model.name: {err}") from None


TASK = DenoiseTask


def load_denoiser(path: str | Path, *, trust: bool = False,
                  device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """A denoiser (eval mode) and a description, from the official DnCNN weights (a legacy
    whole-module pickle, read without running code) or a `cnnzoo train --task denoise` checkpoint."""
    from ..engine.inference import describe_checkpoint, model_from_checkpoint, read_checkpoint
    from ..weights.dncnn import dncnn_from_stub, is_official_dncnn
    from ..weights.safe_unpickle import UnsafePickleError, safe_load

    path = Path(path)
    try:
        obj, refused = safe_load(path), None
    except UnsafePickleError as err:
        obj, refused = None, err
    if is_official_dncnn(obj):
        model = dncnn_from_stub(obj, source=str(path)).to(device)
        return model, f"{path}: official DnCNN weights (depth {model.depth}, {model.in_chans} channel(s))"
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


__all__ = ["DenoiseOptions", "DenoiseTask", "ImagePairLoader", "TASK", "load_denoiser"]
