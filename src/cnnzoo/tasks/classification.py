"""Image classification: cross-entropy on class labels, accuracy and top-5 as metrics.

Implements the engine's Task contract (cnnzoo.engine.task). The data is a cnnzoo.data
DatasetBundle kept on the device; augmentation happens on whole batches there. Models with
auxiliary classifiers (GoogLeNet, Inception v3) return AuxLogits in training mode; their
loss is CE(logits) + weight * sum(CE(aux)), as both papers do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import BatchAugment, DatasetBundle, DeviceLoader, ImageSplit, augment_policy, load_dataset
from ..data.augment import scale_policy
from ..data.datasets import TRAIN_RESIZE_RATIO, absolute_spec, dataset_fingerprint
from ..data.pca import cached_rgb_pca
from ..data.stream import FileSplit, loader_for, open_stream, should_stream
from ..data.transforms import center_crop, normalize, resize_uint8
from ..engine.config import Config, ConfigError, check_crop
from ..engine.metrics import confusion_matrix, topk_correct, write_confusion_csv
from ..engine.task import DataMeta, LossFn, Task, TaskData, register_task
from ..engine.tta import WHOLE_IMAGE_MODES, tta_logits, whole_image_sizes
from ..engine.whiten import whiten_first_conv
from ..engine.weights_init import publisher_options, start_normalization
from ..errors import DataError, UnknownOptionError
from ..models.base import AuxLogits
from ..registry import create_model, model_info

log = logging.getLogger(__name__)

TOP5_MIN_CLASSES = 5  # top-5 accuracy is reported only for more classes than this


@register_task
class ClassificationTask(Task):
    name = "classify"
    monitor = ("acc", "max")
    classification = True
    default_model = "lenet5"

    # --------------------------------------------------------------------- data and model

    def build_data(self, cfg: Config, device: torch.device) -> TaskData:
        d, r = cfg.data, cfg.regularization
        bundle = stream_bundle(cfg) or usual_val(load_bundle(cfg, eval_size=whole_eval_size(cfg)))  # too large: on disk
        stats = start_normalization(cfg, int(bundle.input_size[0]))
        normalized_by = ""
        if stats is not None:  # fine-tuning: normalise as the weights were trained (data.normalize)
            bundle = dataclasses.replace(bundle, mean=stats[0], std=stats[1])
            normalized_by = stats[2]
        chosen = {"crop_padding": r.crop_padding, "hflip": r.hflip, "random_resized_crop": r.random_resized_crop}
        policy = scale_policy(bundle, r.scale_jitter, **chosen) if r.scale_jitter else augment_policy(bundle, **chosen)
        augment = BatchAugment(mean=bundle.mean, std=bundle.std, **policy, cutout=r.cutout,
                               mixup_alpha=r.mixup_alpha, cutmix_alpha=r.cutmix_alpha, num_classes=len(bundle.classes),
                               pad_mode=r.pad_mode, flip=r.flip, flip_seed=cfg.runtime.seed,
                               lighting=colour_pca(bundle, cfg) if r.pca_lighting else None, lighting_std=r.pca_lighting)
        train = loader_for(bundle.train, d.batch_size, shuffle=True, augment=augment, drop_last=d.drop_last,
                           seed=cfg.runtime.seed, device=device, mean=bundle.mean, std=bundle.std,
                           channels_last=bool(cfg.runtime.channels_last), num_workers=d.num_workers,
                           on_bad_image=d.on_bad_image)
        val = eval_loader(bundle.val, cfg, bundle.mean, bundle.std, device) if len(bundle.val) else None
        test = (eval_loader(bundle.test, cfg, bundle.mean, bundle.std, device)
                if bundle.test is not None and len(bundle.test) else None)
        return TaskData(train, val, test, meta=dataset_meta(bundle, normalized_by=normalized_by))

    def build_eval_data(self, cfg: Config, meta: DataMeta, device: torch.device, *, dataset: str | None = None,
                        split: str | None = None) -> tuple[Iterable, str, str]:
        """The run's own data (`dataset` None, or data with the run's fingerprint: moved) is split as
        the run split it; any other data is taken as it is, nothing carved: its test/ split by
        default, or all of it when it has none (split None); classes are matched by name."""
        own = dataset is None or is_runs_data(cfg, meta, dataset)
        size = cfg.data.image_size if own else cfg.data.image_size or meta.input_size[-1]
        bundle = match_classes(meta, stream_bundle(cfg, dataset)
                               or load_bundle(cfg, dataset=dataset, carve=own, image_size=size,
                                                   eval_size=whole_eval_size(cfg)))
        split, images = pick_split(bundle, split, own=own)
        return eval_loader(images, cfg, meta.mean, meta.std, device), bundle.name, split

    def build_model(self, cfg: Config, meta: DataMeta) -> nn.Module:
        model = build_classifier(cfg, meta)
        check_input_size(model, cfg.model.name, meta.input_size)
        return model

    def init_from_data(self, cfg: Config, model: nn.Module, data: TaskData) -> list[str]:
        """Patch-whiten the first convolution from a seeded sample of the training images."""
        n = cfg.model.whiten_images
        if not n:
            return []
        loader = data.train
        pick = torch.randperm(loader.num_samples, generator=torch.Generator().manual_seed(cfg.runtime.seed))[:n]
        images = normalize(loader.images[pick.to(loader.images.device)], loader.mean, loader.std)
        return [whiten_first_conv(model, images, cfg.model.whiten_eps)]

    def check_config(self, cfg: Config, meta: DataMeta) -> None:
        if cfg.eval.tta == "tencrop":
            crop = cfg.eval.crop_size or round(0.875 * min(meta.input_size[1:]))
            check_crop(crop, tuple(meta.input_size[1:]), key="eval.crop_size")
        if cfg.eval.tta in ("crop144", "dense_multicrop"):
            sizes, crop = whole_image_sizes(cfg.eval.tta, min(meta.input_size[1:]), cfg.eval.sizes, cfg.eval.crop_size)
            check_crop(crop, (min(sizes), min(sizes)), key="eval.crop_size")

    # --------------------------------------------------------------------- loss and metrics

    def loss_fn(self, cfg: Config) -> LossFn:
        smoothing = cfg.regularization.label_smoothing

        def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
            images, targets = batch
            out = model(images)
            logits = out.logits if isinstance(out, AuxLogits) else out
            value = F.cross_entropy(logits, targets, label_smoothing=smoothing)
            if isinstance(out, AuxLogits):
                aux = sum(F.cross_entropy(a, targets, label_smoothing=smoothing) for a in out.aux)
                value = value + out.weight * aux
            # With mixup/cutmix the targets are soft: count a hit on the dominant class.
            hard = targets.argmax(dim=1) if targets.ndim == 2 else targets
            acc = (logits.detach().argmax(dim=1) == hard).float().mean()
            return value, {"loss": value.detach(), "acc": acc}

        return loss

    def evaluator(self, cfg: Config, meta: DataMeta, *, final: bool) -> ClassificationEvaluator:
        e = cfg.eval
        tta = e.tta if final else "none"
        crop, sizes = e.crop_size, ()
        if tta in WHOLE_IMAGE_MODES:  # the paper's sizes for this model's input unless given
            sizes, crop = whole_image_sizes(tta, min(meta.input_size[1:]), e.sizes, e.crop_size)
        return ClassificationEvaluator(list(meta.classes), tta=tta, crop_size=crop, scales=tuple(e.scales),
                                       sizes=sizes)


class ClassificationEvaluator:
    """Loss, top-1 and top-5 over a stream of (images, labels) batches, with test-time
    augmentation when asked; the confusion matrix and per-sample predictions for the report.
    Sums stay on the device until `compute`, so a pass costs one host transfer."""

    def __init__(self, classes: list[str], *, tta: str = "none", crop_size: int | None = None,
                 scales: tuple[float, ...] = (0.875, 1.0, 1.125), sizes: tuple[int, ...] = ()):
        self.classes, self.tta, self.crop_size, self.scales = classes, tta, crop_size, scales
        self.sizes = tuple(sizes)  # whole-image tests (dense, crop144, dense_multicrop): shorter sides
        self.loss_sum = self.correct1 = self.correct5 = self.confusion = None
        self.count = 0

    def logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class scores of a normalised batch; with TTA, the log of the averaged probabilities."""
        if self.tta == "none":
            return model(images)
        return tta_logits(model, images, self.tta, crop_size=self.crop_size, scales=self.scales, sizes=self.sizes)

    def update(self, model: nn.Module, batch: tuple) -> None:
        images, labels = batch
        logits = self.logits(model, images).float()
        batch_loss = F.cross_entropy(logits, labels, reduction="sum")
        c1, c5 = topk_correct(logits, labels, (1, 5))
        matrix = confusion_matrix(logits.argmax(dim=1), labels, len(self.classes))
        self.loss_sum = _add(self.loss_sum, batch_loss)
        self.correct1, self.correct5 = _add(self.correct1, c1), _add(self.correct5, c5)
        self.confusion = _add(self.confusion, matrix)
        self.count += labels.shape[0]

    def reduce(self, total) -> None:
        """Replace this process's sums by their totals over all processes (`total` all-reduces a
        tensor): a data-parallel evaluation, in which each process saw a share of the split."""
        k = len(self.classes)
        zero = torch.zeros((), dtype=torch.float64)
        sums = [zero if v is None else v.detach().double().cpu().reshape(()) for v in
                (self.loss_sum, self.correct1, self.correct5)]
        confusion = (torch.zeros(k * k, dtype=torch.float64) if self.confusion is None
                     else self.confusion.double().cpu().flatten())
        packed = total(torch.cat([torch.stack([*sums, torch.tensor(float(self.count), dtype=torch.float64)]),
                                  confusion]))
        self.loss_sum, self.correct1, self.correct5 = packed[0], packed[1], packed[2]
        self.count = int(packed[3])
        self.confusion = packed[4:].round().long().reshape(k, k)

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        metrics = {"loss": float(self.loss_sum) / self.count, "acc": float(self.correct1) / self.count}
        if len(self.classes) > TOP5_MIN_CLASSES:  # with 5 classes or fewer, top-5 is 100% by definition
            metrics["top5"] = float(self.correct5) / self.count
        return metrics

    def report(self) -> ClassificationReport:
        metrics = self.compute()
        confusion = (self.confusion.cpu() if self.confusion is not None
                     else torch.zeros(len(self.classes), len(self.classes), dtype=torch.long))
        support = confusion.sum(dim=1)
        per_class = [(name, int(support[i]), float(confusion[i, i]) / max(int(support[i]), 1))
                     for i, name in enumerate(self.classes)]
        return ClassificationReport(images=self.count, loss=metrics.get("loss", float("nan")),
                                    top1=metrics.get("acc", 0.0), top5=metrics.get("top5"), tta=self.tta,
                                    classes=self.classes, per_class=per_class, confusion=confusion)


@dataclass
class ClassificationReport:
    images: int
    loss: float
    top1: float
    top5: float | None  # None with 5 classes or fewer
    tta: str
    classes: list[str]
    per_class: list[tuple[str, int, float]]  # (class, images, accuracy)
    confusion: torch.Tensor = field(repr=False)  # counts[true, predicted]

    def to_dict(self) -> dict:
        top5 = {} if self.top5 is None else {"top5": self.top5}
        return dict(tta=self.tta, images=self.images, loss=self.loss, top1=self.top1, **top5,
                    per_class={name: {"images": n, "accuracy": acc} for name, n, acc in self.per_class})

    def summary_rows(self) -> list[dict]:
        """The one-row summary of `cnnzoo eval --format csv` (per class: per_class.csv)."""
        return [{k: v for k, v in self.to_dict().items() if k != "per_class"}]

    def write(self, out_dir: Path, evaluation: Any) -> list[Path]:
        """metrics.json, per_class.csv and confusion.csv in `out_dir`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        confusion, per_class, metrics = out_dir / "confusion.csv", out_dir / "per_class.csv", out_dir / "metrics.json"
        write_confusion_csv(self.confusion, self.classes, confusion)
        lines = ["class,images,accuracy"] + [f"{name},{n},{acc:.6f}" for name, n, acc in self.per_class]
        per_class.write_text("\n".join(lines) + "\n")
        header = dict(checkpoint=evaluation.checkpoint, model=evaluation.model, dataset=evaluation.dataset,
                      split=evaluation.split)
        metrics.write_text(json.dumps({**header, **self.to_dict()}, indent=2) + "\n")
        return [metrics, per_class, confusion]


def _add(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    return value if total is None else total + value


# ------------------------------------------------------------------------- data helpers


def eval_loader(images: ImageSplit | FileSplit, cfg: Config, mean, std, device: torch.device) -> DeviceLoader:
    """The loader of an evaluated split: in order, unaugmented, normalised with the training statistics."""
    batch = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
    return loader_for(images, batch, shuffle=False, augment=None, device=device, mean=mean, std=std,
                      channels_last=bool(cfg.runtime.channels_last), num_workers=cfg.data.num_workers,
                      on_bad_image=cfg.data.on_bad_image)


def stream_bundle(cfg: Config, dataset: str | None = None) -> DatasetBundle | None:
    """The listed (not decoded) image folder when it streams (cfg.data.stream, memory_budget_gb)."""
    d = cfg.data
    spec = dataset or d.dataset
    if not should_stream(spec, d.stream, d.memory_budget_gb, d.image_size):
        return None
    return open_stream(spec, image_size=d.image_size, val_fraction=d.val_fraction, seed=d.split_seed,
                       num_workers=d.num_workers)


def dataset_meta(bundle: DatasetBundle, *, normalized_by: str = "") -> DataMeta:
    """What a checkpoint remembers about its data (mean/std: the ones its loaders normalise with,
    the dataset's or, when fine-tuning, those of the weights named by `normalized_by`)."""
    details = f"{len(bundle.classes)} classes" + (f", mean/std of {normalized_by}" if normalized_by else "")
    return DataMeta(
        dataset=bundle.name, fingerprint=bundle.fingerprint, in_chans=int(bundle.input_size[0]),
        input_size=tuple(int(v) for v in bundle.input_size), mean=tuple(float(v) for v in bundle.mean),
        std=tuple(float(v) for v in bundle.std), classes=tuple(bundle.classes),
        sizes={"train": len(bundle.train), "val": len(bundle.val),
               "test": len(bundle.test) if bundle.test is not None else 0},
        details=details, bad_images=tuple((str(p), str(r)) for p, r in bundle.bad_images),
    )


def is_runs_data(cfg: Config, meta: DataMeta, dataset: str) -> bool:
    """Whether `dataset` is the data the run was trained on (same fingerprint), wherever it is now."""
    same = dataset_fingerprint(dataset, cache_dir=cfg.data.cache_dir) == meta.fingerprint
    if same and absolute_spec(dataset) != cfg.data.dataset:
        log.info("%s has the fingerprint of the run's data (%s): split as the run split it", dataset,
                 cfg.data.dataset)
    return same


EVAL_SPLITS = ("test", "val", "train", "all")


def pick_split(bundle: DatasetBundle, split: str | None, *, own: bool) -> tuple[str, ImageSplit]:
    """(split name, its images): `split`, or by default the test split, else (data other than the
    run's) all of it; "all" is every split together."""
    present = {k: s for k in ("test", "val", "train") if (s := getattr(bundle, k)) is not None and len(s)}
    if split is None:
        if "test" in present or own:
            split = "test"
        else:
            split = "all"
    if split == "all":
        parts = [_at_input_size(s, bundle) for s in present.values()]
        return "all", ImageSplit(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    if split not in present:
        options = ", ".join(f"--split {k}" for k in [*present, "all"] if own or k != "train")
        whose = " (the run had none)" if own else f" of its own (no {split}/ folder)"
        raise DataError(f"{bundle.name} has no {split} split{whose}; use {options}")
    return split, _at_input_size(present[split], bundle)


def _at_input_size(images: ImageSplit, bundle: DatasetBundle) -> ImageSplit:
    """A large-image run keeps its train split larger (for random-resized crops): centre-crop it."""
    side = bundle.input_size[-1]
    return images if images.images.shape[-1] == side else ImageSplit(center_crop(images.images, side), images.labels)


def match_classes(meta: DataMeta, bundle: DatasetBundle) -> DatasetBundle:
    """The bundle with its labels numbered as the model's classes: unchanged when the names are
    the same; relabelled by name when the data's classes are some of the model's (a folder of a
    few ImageNet classes for ImageNet weights); otherwise a DataError naming the difference."""
    trained, given = list(meta.classes), list(bundle.classes)
    if trained == given or not set(given) <= set(trained):
        check_same_classes(meta, bundle)
        return bundle
    check_same_classes(meta, dataclasses.replace(bundle, classes=trained))  # the channel check
    index = torch.tensor([trained.index(name) for name in given])
    splits = {k: getattr(bundle, k) for k in ("train", "val", "test")}
    relabelled = {k: None if s is None else dataclasses.replace(s, labels=index[s.labels.long()].to(s.labels.dtype))
                  for k, s in splits.items()}
    others = len(trained) - len(given)
    log.info("%s: its %d classes matched by name to the model's %d%s", bundle.name, len(given), len(trained),
             f"; accuracy is over these classes' images, and a prediction of any of the {others} others counts as "
             "an error" if others else "")
    return dataclasses.replace(bundle, classes=trained, **relabelled)


def _names(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_same_classes(meta: DataMeta, bundle: DatasetBundle) -> None:
    trained, given = list(meta.classes), list(bundle.classes)
    if trained != given:
        extra = sorted(set(given) - set(trained))
        missing = sorted(set(trained) - set(given))
        detail = "; ".join(filter(None, [f"unknown to the checkpoint: {_names(extra)}" if extra else "",
                                         f"missing from the data: {_names(missing)}" if missing else ""]))
        raise DataError(f"class mismatch: the checkpoint was trained on {len(trained)} classes, {bundle.name} has "
                        f"{len(given)} ({detail or 'same names in another order'}); evaluate on data whose class "
                        "folders are named as the checkpoint's classes (some of them is enough)")
    if meta.in_chans != bundle.input_size[0]:
        raise DataError(f"the checkpoint takes {meta.in_chans}-channel images, {bundle.name} has "
                        f"{bundle.input_size[0]}-channel ones")


def build_classifier(cfg: Config, meta: DataMeta) -> nn.Module:
    """cfg.model.name for meta's channels and classes, with the regularisers it takes."""
    r = cfg.regularization
    options = {**publisher_options(cfg), **cfg.model.kwargs}  # e.g. ReLU6 for timm's MobileNet V1 weights
    for key in ("drop_rate", "drop_path_rate"):
        if getattr(r, key) is not None:
            options[key] = getattr(r, key)
    try:
        return create_model(cfg.model.name, num_classes=meta.num_classes, in_chans=meta.in_chans, **options)
    except UnknownOptionError as err:
        bad = next((k for k in options if repr(k) in str(err)), None)
        key = f"regularization.{bad}" if bad in ("drop_rate", "drop_path_rate") else f"model.kwargs.{bad}"
        raise ConfigError(f"{key}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs: model {cfg.model.name!r} refused its options: {err}") from None


def check_input_size(model: nn.Module, name: str, input_size: tuple[int, ...]) -> None:
    """One forward of a blank image, so a model too deep for small images fails here with advice,
    not with a shape error in the first training step."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    except RuntimeError as err:
        default = "x".join(map(str, model_info(name)["input_size"]))
        first = " ".join(str(err).split())[:160]
        raise ConfigError(f"data.image_size: {name} cannot take {'x'.join(map(str, input_size))} images ({first}); "
                          f"resize them with --image-size (its default input is {default})") from None
    finally:
        model.train(was_training)


def load_bundle(cfg: Config, *, dataset: str | None = None, carve: bool = True, image_size: int | None = None,
                eval_size: int | None = None) -> DatasetBundle:
    """The DatasetBundle of cfg.data (or of another dataset, for evaluation: `carve=False` keeps
    its own splits, at `image_size`). With scale augmentation the training images are kept with
    shorter side S_max; `eval_size`: see `whole_eval_size` (the run's own data only)."""
    d, scales = cfg.data, cfg.regularization.scale_jitter
    resized = {"train_size": max(scales) if scales else None, "eval_size": eval_size} if carve else {}
    bundle = load_dataset(dataset or d.dataset, val_fraction=d.val_fraction, seed=d.split_seed,
                          image_size=image_size or d.image_size, cache_dir=d.cache_dir, on_bad_image=d.on_bad_image,
                          max_bad_images=d.max_bad_images, download=d.download, num_workers=d.num_workers,
                          carve=carve, **resized)
    return _fit_model_minimum(bundle, cfg.model.name)


def whole_eval_size(cfg: Config) -> int | None:
    """The shorter side at which a large image folder's val/test images are kept whole (not centre-
    cropped) for a whole-image test: its largest size. None otherwise (other sources are whole already)."""
    e, side = cfg.eval, cfg.data.image_size
    if e.tta not in WHOLE_IMAGE_MODES or not side:
        return None
    return max(whole_image_sizes(e.tta, side, e.sizes, e.crop_size)[0])


def usual_val(bundle: DatasetBundle) -> DatasetBundle:
    """The bundle with a validation split kept whole (for a whole-image final test) cut back to the
    usual centre crop (shorter side 256/224 of the input, centre input-size crop), for model selection."""
    side = bundle.input_size[-1]
    if bundle.val.images.shape[-1] == side:
        return bundle
    images = center_crop(resize_uint8(bundle.val.images, round(side * TRAIN_RESIZE_RATIO)), side)
    return dataclasses.replace(bundle, val=ImageSplit(images, bundle.val.labels))


def colour_pca(bundle: DatasetBundle, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues, eigenvectors) of the training split's RGB covariance, cached beside the dataset."""
    d, r = cfg.data, cfg.regularization
    options = {"dataset": bundle.name, "val_fraction": d.val_fraction, "split_seed": d.split_seed,
               "image_size": d.image_size, "train_size": max(r.scale_jitter) if r.scale_jitter else None}
    return cached_rgb_pca(bundle.train.images, fingerprint=bundle.fingerprint, options=options, cache_dir=d.cache_dir)


def _fit_model_minimum(bundle: DatasetBundle, model_name: str) -> DatasetBundle:
    """Upsample images smaller than the model's declared minimum (Inception v3 needs 75 px)."""
    minimum = model_info(model_name)["min_input_size"]
    side = minimum[-1] if minimum else 0
    if min(bundle.input_size[1:]) >= side:
        return bundle
    log.info("%s needs inputs of at least %dpx; resizing %s's %dpx images to %dpx (choose with --image-size)",
             model_name, side, bundle.name, bundle.input_size[1], side)
    splits = {k: getattr(bundle, k) for k in ("train", "val", "test")}
    resized = {k: None if s is None else dataclasses.replace(s, images=resize_uint8(s.images, side))
               for k, s in splits.items()}
    return dataclasses.replace(bundle, input_size=(bundle.input_size[0], side, side), **resized)
