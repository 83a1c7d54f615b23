"""Image classification: cross-entropy on class labels, accuracy and top-5 as metrics.

Implements the engine's Task protocol (cnnzoo.engine.task). The data is a cnnzoo.data
DatasetBundle kept on the device; augmentation happens on whole batches there. Models with
auxiliary classifiers (GoogLeNet, Inception v3) return AuxLogits in training mode; their
loss is CE(logits) + weight * sum(CE(aux)), as both papers do.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import Config, ConfigError, check_crop
from ..engine.metrics import topk_correct
from ..engine.task import TaskData
from ..engine.tta import tta_logits
from ..errors import UnknownOptionError
from ..models.base import AuxLogits
from ..registry import create_model, model_info


@dataclasses.dataclass
class ClassificationOptions:
    """Classification takes no task-specific options; the section exists for symmetry."""


class ClassificationTask:
    name = "classify"
    monitor = ("acc", "max")
    classification = True
    default_model = "lenet5"
    defaults: dict = {}
    Options = ClassificationOptions

    def __init__(self) -> None:
        self.label_smoothing = 0.0
        self.eval_cfg = None

    # --------------------------------------------------------------------- data and model

    def build_data(self, cfg: Config, device: torch.device) -> TaskData:
        from ..data import BatchAugment, DeviceLoader

        self.label_smoothing = cfg.regularization.label_smoothing
        self.eval_cfg = cfg.eval
        d, r = cfg.data, cfg.regularization
        bundle = load_bundle(cfg)
        channels_last = bool(cfg.runtime.channels_last)
        augment = BatchAugment(mean=bundle.mean, std=bundle.std, **augment_options(r, bundle),
                               cutout=r.cutout, mixup_alpha=r.mixup_alpha, cutmix_alpha=r.cutmix_alpha,
                               num_classes=len(bundle.classes))
        common = dict(device=device, mean=bundle.mean, std=bundle.std, channels_last=channels_last)
        eval_bs = d.eval_batch_size or 2 * d.batch_size
        train = DeviceLoader(bundle.train, d.batch_size, shuffle=True, augment=augment, drop_last=d.drop_last,
                             seed=cfg.runtime.seed, **common)
        val = DeviceLoader(bundle.val, eval_bs, shuffle=False, augment=None, **common) if len(bundle.val) else None
        test = (DeviceLoader(bundle.test, eval_bs, shuffle=False, augment=None, **common)
                if bundle.test is not None and len(bundle.test) else None)
        return TaskData(train, val, test, meta=dataset_meta(bundle))

    def build_model(self, cfg: Config, meta: dict[str, Any]) -> nn.Module:
        model = build_classifier(cfg, meta)
        check_input_size(model, cfg.model.name, tuple(meta["input_size"]))
        return model

    def check_config(self, cfg: Config, meta: dict[str, Any]) -> None:
        """Checks that need the loaded data: a 10-crop must fit in the images."""
        if cfg.eval.tta == "tencrop":
            crop = cfg.eval.crop_size or round(0.875 * min(meta["input_size"][1:]))
            check_crop(crop, tuple(meta["input_size"][1:]), key="eval.crop_size")

    # --------------------------------------------------------------------- loss and metrics

    def training_loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
        images, targets = batch
        out = model(images)
        logits = out.logits if isinstance(out, AuxLogits) else out
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        if isinstance(out, AuxLogits):
            aux = sum(F.cross_entropy(a, targets, label_smoothing=self.label_smoothing) for a in out.aux)
            loss = loss + out.weight * aux
        # With mixup/cutmix the targets are soft: count a hit on the dominant class.
        hard = targets.argmax(dim=1) if targets.ndim == 2 else targets
        acc = (logits.detach().argmax(dim=1) == hard).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        return self._evaluate(model, loader, tta="none")

    def evaluate_test(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """The final test, with the test-time augmentation of cfg.eval."""
        tta = self.eval_cfg.tta if self.eval_cfg is not None else "none"
        return self._evaluate(model, loader, tta=tta)

    def _evaluate(self, model: nn.Module, loader: Iterable, *, tta: str) -> dict[str, float]:
        loss_sum = correct1 = correct5 = None
        count = 0
        for images, labels in loader:
            logits = self.logits(model, images, tta).float()
            batch_loss = F.cross_entropy(logits, labels, reduction="sum")
            c1, c5 = topk_correct(logits, labels, (1, 5))
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            correct1 = c1 if correct1 is None else correct1 + c1
            correct5 = c5 if correct5 is None else correct5 + c5
            count += labels.shape[0]
        if count == 0:
            return {}
        return {"loss": float(loss_sum) / count, "acc": float(correct1) / count, "top5": float(correct5) / count}

    def logits(self, model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class scores of a normalised batch; with TTA, the log of the averaged probabilities."""
        if tta == "none":
            return model(images)
        e = self.eval_cfg
        return tta_logits(model, images, tta, crop_size=e.crop_size if e else None,
                          scales=e.scales if e else (0.875, 1.0, 1.125))


TASK = ClassificationTask


def dataset_meta(bundle: Any) -> dict[str, Any]:
    """What a checkpoint remembers about its data: plain lists and numbers (weights_only-safe)."""
    return dict(
        dataset=bundle.name,
        fingerprint=bundle.fingerprint,
        classes=list(bundle.classes),
        num_classes=len(bundle.classes),
        in_chans=int(bundle.input_size[0]),
        input_size=[int(v) for v in bundle.input_size],
        mean=[float(v) for v in bundle.mean],
        std=[float(v) for v in bundle.std],
        sizes={"train": len(bundle.train), "val": len(bundle.val),
               "test": len(bundle.test) if bundle.test is not None else 0},
        bad_images=[[str(p), str(r)] for p, r in bundle.bad_images],
    )


def build_classifier(cfg: Config, meta: dict[str, Any]) -> nn.Module:
    """cfg.model.name for meta's channels and classes, with the regularisers it takes."""
    r = cfg.regularization
    options = dict(cfg.model.kwargs)
    for key in ("drop_rate", "drop_path_rate"):
        if getattr(r, key) is not None:
            options[key] = getattr(r, key)
    try:
        return create_model(cfg.model.name, num_classes=meta["num_classes"], in_chans=meta["in_chans"], **options)
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


def augment_options(r: Any, bundle: Any) -> dict[str, Any]:
    """Crop and flip settings: the ones given, or the dataset's usual ones (see RegularizationConfig)."""
    size = tuple(bundle.input_size[1:])
    handwriting = bundle.name in ("digits", "mnist")
    rrc = r.random_resized_crop if r.random_resized_crop is not None else bool(bundle.large_images)
    if bundle.large_images and not rrc:
        raise ConfigError("regularization.random_resized_crop: large images are stored 1.14x larger than the "
                          "input for random-resized crops; leave it on (or unset) for this dataset")
    hflip = r.hflip if r.hflip is not None else not handwriting
    if r.crop_padding is not None:
        padding = r.crop_padding
    else:
        padding = 0 if rrc else max(1, min(size) // (16 if handwriting else 8))
    return dict(crop_padding=padding, hflip=hflip, random_resized_crop=size if rrc else None)


def load_bundle(cfg: Config, *, dataset: str | None = None, image_size: int | None = None) -> Any:
    """The DatasetBundle of cfg.data (or of another dataset/size, for evaluation)."""
    from ..data import load_dataset

    d = cfg.data
    bundle = load_dataset(dataset or d.dataset, val_fraction=d.val_fraction, seed=d.split_seed,
                          image_size=image_size or d.image_size, cache_dir=d.cache_dir, on_bad_image=d.on_bad_image,
                          max_bad_images=d.max_bad_images, download=d.download, num_workers=d.num_workers)
    return _fit_model_minimum(bundle, cfg.model.name)


def _fit_model_minimum(bundle: Any, model_name: str) -> Any:
    """Upsample images smaller than the model's declared minimum (Inception v3 needs 75 px)."""
    from ..data.transforms import resize_uint8

    info = model_info(model_name)
    size = info.get("min_input_size") or info.get("test_input_size")
    side = (size[-1] if isinstance(size, (tuple, list)) else size) if size else 0
    if min(bundle.input_size[1:]) >= side:
        return bundle
    print(f"note: {model_name} needs inputs of at least {side}px; resizing {bundle.name}'s "
          f"{bundle.input_size[1]}px images to {side}px (set data.image_size to choose)", file=sys.stderr)
    splits = {k: getattr(bundle, k) for k in ("train", "val", "test")}
    resized = {k: None if s is None else dataclasses.replace(s, images=resize_uint8(s.images, side))
               for k, s in splits.items()}
    return dataclasses.replace(bundle, input_size=(bundle.input_size[0], side, side), **resized)
