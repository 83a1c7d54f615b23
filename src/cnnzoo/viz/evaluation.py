"""The one place where viz reaches into the engine and the data: the test split's outputs
(images, labels, logits) of a checkpoint, and training samples after augmentation.

Why a single module: the plots and the report only need plain tensors (`ClassifierOutputs`);
how they are computed is the evaluator's business. When the engine's evaluation changes,
this file is the only one to adapt (or the caller passes `ClassifierOutputs` it already has).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PER_CLASS_SAMPLES = 4


@dataclass
class ClassifierOutputs:
    """A classifier's outputs on one split: uint8 images [N, C, H, W] as stored (not normalised),
    int64 labels [N], logits [N, K], and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    classes: list[str]

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).float().mean()) if len(self.labels) else 0.0

    @property
    def confusion(self) -> torch.Tensor:
        """counts[true, predicted]."""
        k = len(self.classes)
        index = self.labels.long() * k + self.predictions.long()
        return torch.bincount(index, minlength=k * k).reshape(k, k)

    @property
    def support(self) -> list[int]:
        return self.confusion.sum(dim=1).tolist()

    @property
    def per_class_accuracy(self) -> list[float]:
        matrix = self.confusion
        return [float(matrix[i, i]) / max(int(matrix[i].sum()), 1) for i in range(len(self.classes))]


@dataclass
class Samples:
    """Training images after augmentation, for display: per class name, float images [n, C, H, W] in [0, 1]."""

    by_class: dict[str, torch.Tensor]
    description: str  # the augmentation applied, e.g. "BatchAugment(crop_padding=2)"


def load_test_data(ckpt: dict) -> Any:
    """The DatasetBundle the checkpoint was trained on (its config's dataset, split the same way)."""
    from ..engine.inference import checkpoint_config
    from ..tasks.classification import load_bundle

    return load_bundle(checkpoint_config(ckpt))


class _LogitsCollector:
    """An evaluator that keeps every batch's logits and labels on the CPU."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []

    def update(self, model: torch.nn.Module, batch: tuple) -> None:
        self.logits.append(model(batch[0]).float().cpu())

    def compute(self) -> dict[str, float]:
        return {}

    def report(self) -> None:
        return None


def classifier_outputs(ckpt: dict, model: torch.nn.Module | None = None, split: str = "test") -> ClassifierOutputs:
    """Logits of the checkpoint's model (or `model`) on `split` of its dataset, through the engine's
    one evaluation path: the task's loader for that split, the run's precision and memory format."""
    from ..engine.evaluate import run_evaluator
    from ..engine.inference import checkpoint_config, model_from_checkpoint
    from ..engine.progress import Progress
    from ..engine.runtime import Runtime
    from ..engine.task import DataMeta, get_task

    cfg = checkpoint_config(ckpt)
    runtime = Runtime.from_config(cfg.runtime, str(next(model.parameters()).device) if model is not None else None)
    cfg = runtime.stamp(cfg)
    loader = get_task("classify").build_eval_data(cfg, DataMeta.from_dict(ckpt["meta"]), runtime.device,
                                                   split=split)[0]
    model = model if model is not None else runtime.place(model_from_checkpoint(ckpt))
    collector = run_evaluator(model, loader, _LogitsCollector(), runtime, Progress("off"), split)
    return ClassifierOutputs(loader.images.cpu(), loader.labels.cpu(), torch.cat(collector.logits),
                             list(ckpt["classes"]))


def augmented_samples(ckpt: dict, bundle: Any, per_class: int = PER_CLASS_SAMPLES, seed: int = 0) -> Samples:
    """`per_class` training images of each class after the run's augmentation (crops, flips, cutout;
    mixup/cutmix, which mix pairs, are not shown), un-normalised for display."""
    from ..engine.inference import checkpoint_config

    augment = _run_augment(checkpoint_config(ckpt), bundle)
    return _samples(bundle.train.images, bundle.train.labels, list(bundle.classes), augment, per_class, seed)


def samples_from_loader(loader: Any, classes: list[str], per_class: int = PER_CLASS_SAMPLES,
                        seed: int = 0) -> Samples | None:
    """The same from a training DeviceLoader (its uint8 `images`, `labels` and `augment`), which
    the trainer already holds: no dataset is read again. None when it has no augmentation."""
    augment = getattr(loader, "augment", None)
    if augment is None or not hasattr(augment, "transform"):
        return None
    return _samples(loader.images, loader.labels, classes, augment, per_class, seed)


def _samples(images: torch.Tensor, labels: torch.Tensor, classes: list[str], augment: Any, per_class: int,
             seed: int) -> Samples:
    generator = torch.Generator(device=images.device).manual_seed(seed)
    mean = torch.tensor(augment.mean, device=images.device)[None, :, None, None]
    std = torch.tensor(augment.std, device=images.device)[None, :, None, None]
    by_class = {}
    for index, name in enumerate(classes):
        chosen = torch.nonzero(labels == index).flatten()[:per_class]
        x = augment.transform(images[chosen], generator)
        by_class[name] = (x.float() * std + mean).clamp(0, 1).cpu()
    return Samples(by_class, repr(augment))


def _run_augment(cfg: Any, bundle: Any) -> Any:
    """The run's per-image augmentation as the trainer builds it (crop, flip, cutout)."""
    from .. import data

    r = cfg.regularization
    policy = data.augment_policy(bundle, crop_padding=r.crop_padding, hflip=r.hflip,
                                 random_resized_crop=r.random_resized_crop)
    return data.BatchAugment(mean=bundle.mean, std=bundle.std, **policy, cutout=r.cutout)
