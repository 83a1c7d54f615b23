"""Evaluate a classification checkpoint: top-1/top-5, per-class accuracy, confusion matrix, TTA.

The images are normalised with the statistics stored in the checkpoint (those the model was
trained with), not with statistics of the evaluated data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import CnnzooError, DataError
from .config import check_crop
from .inference import checkpoint_config, model_from_checkpoint, read_checkpoint
from .metrics import confusion_matrix, topk_correct, write_confusion_csv
from .progress import Progress
from .tta import tta_logits


@dataclass
class EvalReport:
    checkpoint: str
    model: str
    dataset: str
    split: str
    tta: str
    images: int
    loss: float
    top1: float
    top5: float
    classes: list[str]
    per_class: list[tuple[str, int, float]]  # (class, images, accuracy)
    confusion: torch.Tensor = field(repr=False)
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(checkpoint=self.checkpoint, model=self.model, dataset=self.dataset, split=self.split,
                    tta=self.tta, images=self.images, loss=self.loss, top1=self.top1, top5=self.top5,
                    per_class={name: {"images": n, "accuracy": acc} for name, n, acc in self.per_class})


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str = "test", tta: str = "none",
                        crop_size: int | None = None, scales: Sequence[float] = (0.875, 1.0, 1.125),
                        batch_size: int = 256, device: str = "auto", trust: bool = False,
                        image_size: int | None = None, out_dir: str | Path | None = None,
                        progress: Progress | None = None, ckpt: dict | None = None) -> EvalReport:
    """`ckpt`: the checkpoint already read from `path` (by `cnnzoo eval`), so it is not read twice."""
    from ..data import DeviceLoader
    from ..tasks.classification import load_bundle
    from .trainer import resolve_amp, resolve_device

    ckpt = ckpt if ckpt is not None else read_checkpoint(path, trust=trust)
    if ckpt.get("task", "classify") != "classify":
        raise CnnzooError(f"{path} is a {ckpt.get('task')!r} checkpoint; this evaluation is for classifiers")
    cfg = checkpoint_config(ckpt)
    dev = resolve_device(device)
    bundle = load_bundle(cfg, dataset=data, image_size=image_size)
    check_same_classes(ckpt, bundle, path)
    images = {"test": bundle.test, "val": bundle.val, "train": bundle.train}.get(split)
    if images is None or len(images) == 0:
        others = [k for k in ("test", "val", "train") if getattr(bundle, k) is not None and len(getattr(bundle, k))]
        raise DataError(f"{bundle.name} has no {split} split; use --split {others[0] if others else 'train'}")
    if tta == "tencrop":
        check_crop(crop_size or round(0.875 * min(bundle.input_size[1:])), tuple(bundle.input_size[1:]),
                   key="--crop-size")
    prep = ckpt["preprocessing"]
    loader = DeviceLoader(images, batch_size, shuffle=False, device=dev, augment=None, mean=prep["mean"],
                          std=prep["std"])
    model = model_from_checkpoint(ckpt, dev)
    amp = resolve_amp("auto", dev)
    progress = progress or Progress("auto")
    logits_all, labels_all = [], []
    with torch.no_grad(), torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        for x, y in progress.wrap(loader, len(loader), f"eval {split}"):
            logits_all.append(tta_logits(model, x, tta, crop_size=crop_size, scales=scales).float().cpu()
                              if tta != "none" else model(x).float().cpu())
            labels_all.append(y.cpu())
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    report = classification_report(logits, labels, list(ckpt["classes"]))
    report = EvalReport(checkpoint=str(path), model=ckpt["model_name"], dataset=bundle.name, split=split, tta=tta,
                        **report)
    if out_dir is not None:
        report.files = write_report(report, Path(out_dir))
    return report


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    n = labels.shape[0]
    c1, c5 = topk_correct(logits, labels, (1, 5))
    matrix = confusion_matrix(logits.argmax(dim=1), labels, len(classes))
    support = matrix.sum(dim=1)
    per_class = [(name, int(support[i]), float(matrix[i, i]) / max(int(support[i]), 1))
                 for i, name in enumerate(classes)]
    return dict(images=n, loss=float(F.cross_entropy(logits, labels)), top1=float(c1) / n, top5=float(c5) / n,
                classes=classes, per_class=per_class, confusion=matrix)


def check_same_classes(ckpt: dict, bundle, path: str | Path) -> None:
    trained, given = list(ckpt["classes"]), list(bundle.classes)
    if trained != given:
        extra = sorted(set(given) - set(trained))[:5]
        missing = sorted(set(trained) - set(given))[:5]
        detail = "; ".join(filter(None, [f"not in the checkpoint: {', '.join(extra)}" if extra else "",
                                         f"missing from the data: {', '.join(missing)}" if missing else ""]))
        raise DataError(f"class mismatch: {path} was trained on {len(trained)} classes, {bundle.name} has "
                        f"{len(given)} ({detail or 'same names in another order'}); evaluate on data with the "
                        "checkpoint's classes")
    if int(ckpt.get("in_chans", bundle.input_size[0])) != bundle.input_size[0]:
        raise DataError(f"{path} takes {ckpt['in_chans']}-channel images, {bundle.name} has "
                        f"{bundle.input_size[0]}-channel ones")


def write_report(report: EvalReport, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    confusion, per_class, metrics = out_dir / "confusion.csv", out_dir / "per_class.csv", out_dir / "metrics.json"
    write_confusion_csv(report.confusion, report.classes, confusion)
    lines = ["class,images,accuracy"] + [f"{name},{n},{acc:.6f}" for name, n, acc in report.per_class]
    per_class.write_text("\n".join(lines) + "\n")
    metrics.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return [metrics, per_class, confusion]
