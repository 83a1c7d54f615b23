"""Pictures of an evaluation: confusion matrix, per-class accuracy, the most confidently wrong
images, and (for denoising) noisy / denoised / clean crops.

Why: a single accuracy hides which classes are mixed up and what the mistakes look like; the
gallery of confident mistakes often shows label noise or a real ambiguity at a glance. These
functions take plain inputs (a confusion matrix, class names, accuracies, images), not an
evaluation object, so any evaluator can feed them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ._mpl import Plot, grid_layout, new_figure, save, show_image

ANNOTATE_MAX_CLASSES = 20  # write the numbers in the cells up to this many classes
TICK_LABELS_MAX_CLASSES = 40  # name every row/column up to this many classes


@dataclass
class WrongImage:
    """One misclassified image for the gallery: uint8 CHW, its true and predicted class, the confidence."""

    image: torch.Tensor
    true: str
    predicted: str
    confidence: float


@dataclass
class DenoiseCrop:
    """One denoising example: noisy, denoised and clean crops (CHW, float in [0, 1] or uint8) and PSNRs."""

    name: str
    noisy: Any
    denoised: Any
    clean: Any
    psnr_noisy: float
    psnr_denoised: float


def most_confidently_wrong(images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                           classes: Sequence[str], k: int = 16) -> list[WrongImage]:
    """The `k` misclassified images with the highest softmax probability on their (wrong) prediction."""
    probs = logits.float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:k]
    return [WrongImage(images[i], classes[int(labels[i])], classes[int(predicted[i])], float(confidence[i]))
            for i in order.tolist()]


def plot_confusion(confusion: Any, classes: Sequence[str], out: str | Path, title: str = "") -> Plot:
    """Two heat maps: counts[true, predicted], and each row normalised to sum to 1 (recall on the diagonal)."""
    counts = torch.as_tensor(confusion).double()
    normalised = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(max(3.5, 0.3 * n + 1.5), 9.0)  # inches per heat map: readable up to ~25 classes at 100 dpi
    fig = new_figure(2 * side + 1.2, side + 0.6)
    panels = (("counts", counts, "{:.0f}"), ("row-normalised (recall on the diagonal)", normalised, "{:.2f}"))
    for index, (name, matrix, fmt) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        image = ax.imshow(matrix.numpy(), cmap="Blues", vmin=0, vmax=1 if index else None, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        _label_matrix(ax, classes)
        if n <= ANNOTATE_MAX_CLASSES:
            _annotate(ax, matrix, fmt)
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save(fig, out, panels=2)


def _label_matrix(ax, classes: Sequence[str]) -> None:
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= TICK_LABELS_MAX_CLASSES:
        ax.set_xticks(range(len(classes)), labels=list(classes), rotation=90 if _long(classes) else 0, fontsize=7)
        ax.set_yticks(range(len(classes)), labels=list(classes), fontsize=7)


def _long(classes: Sequence[str]) -> bool:
    return max((len(c) for c in classes), default=0) > 3


def _annotate(ax, matrix: torch.Tensor, fmt: str) -> None:
    top = float(matrix.max()) or 1.0
    for (row, col), value in _nonzero_cells(matrix):
        colour = "white" if value > 0.5 * top else "black"
        ax.text(col, row, fmt.format(value), ha="center", va="center", fontsize=6, color=colour)


def _nonzero_cells(matrix: torch.Tensor):
    for row, col in torch.nonzero(matrix).tolist():
        yield (row, col), float(matrix[row, col])


def plot_per_class_accuracy(classes: Sequence[str], accuracies: Sequence[float], out: str | Path,
                            support: Sequence[int] | None = None, title: str = "") -> Plot:
    """One bar per class (accuracy in %), the mean over classes as a line; `support`: images per class."""
    n = len(classes)
    fig = new_figure(min(max(5.0, 0.35 * n + 2.0), 16.0), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    values = [100.0 * a for a in accuracies]
    colours = ["C3" if v < 100.0 * _mean(accuracies) - 1e-9 else "C0" for v in values]
    ax.bar(range(n), values, color=colours)
    ax.axhline(100.0 * _mean(accuracies), color="grey", linestyle="--", linewidth=1,
               label=f"mean over classes {100.0 * _mean(accuracies):.2f}%")
    ax.set_ylim(0, 119)  # room above the bars for the legend
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("class (red: below the mean)")
    if n <= TICK_LABELS_MAX_CLASSES:
        names = [f"{c}\n({s})" if support is not None else c for c, s in zip(classes, support or [None] * n)]
        ax.set_xticks(range(n), labels=names, rotation=90 if _long(classes) else 0, fontsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or "per-class accuracy" + (" (images per class in brackets)" if support else ""), fontsize=10)
    fig.tight_layout()
    return save(fig, out, panels=1)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)


def plot_wrong_gallery(items: Sequence[WrongImage | tuple], out: str | Path, columns: int = 8,
                       title: str = "most confidently wrong test images") -> Plot:
    """A grid of misclassified images titled 'true -> predicted (confidence)'; items may be plain tuples
    (uint8 CHW image, true name, predicted name, confidence)."""
    items = [i if isinstance(i, WrongImage) else WrongImage(*i) for i in items]
    if not items:
        return _message_figure(out, f"{title}: none, every image was classified correctly")
    columns = min(columns, len(items))
    rows = math.ceil(len(items) / columns)
    fig = new_figure(1.5 * columns, 1.75 * rows + 0.4)
    for index, item in enumerate(items):
        ax = fig.add_subplot(rows, columns, index + 1)
        show_image(ax, item.image, f"{item.true} -> {item.predicted}\n({100 * item.confidence:.0f}%)", fontsize=7)
    fig.suptitle(f"{title} (true -> predicted, confidence)", fontsize=9)
    grid_layout(fig, rows, title_in=0.32)
    return save(fig, out, panels=len(items))


def _message_figure(out: str | Path, message: str) -> Plot:
    fig = new_figure(6.0, 1.0)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10)
    return save(fig, out, panels=0)


def plot_denoise_crops(items: Sequence[DenoiseCrop], out: str | Path, crop: int | None = 96) -> Plot:
    """One row per image: noisy | denoised | clean, centre-cropped to `crop` px (None: whole), with PSNRs."""
    if not items:
        return _message_figure(out, "no denoising examples")
    fig = new_figure(3 * 2.6, 2.8 * len(items))
    for row, item in enumerate(items):
        cells = ((item.noisy, f"noisy  {item.psnr_noisy:.2f} dB"),
                 (item.denoised, f"denoised  {item.psnr_denoised:.2f} dB"), (item.clean, f"clean ({item.name})"))
        for col, (image, label) in enumerate(cells):
            ax = fig.add_subplot(len(items), 3, 3 * row + col + 1)
            show_image(ax, _centre_crop(image, crop), label, fontsize=8)
    fig.suptitle("denoising: PSNR against the clean image", fontsize=10)
    grid_layout(fig, len(items), title_in=0.22)
    return save(fig, out, panels=3 * len(items))


def _centre_crop(image: Any, crop: int | None) -> Any:
    if crop is None:
        return image
    h, w = image.shape[-2:]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return image[..., top:top + crop, left:left + crop]


def plot_class_samples(by_class: dict[str, torch.Tensor], out: str | Path, title: str = "") -> Plot:
    """One strip per class of sample images (float [n, C, H, W] in [0, 1]); a panel per class."""
    names = list(by_class)
    per_class = max((len(v) for v in by_class.values()), default=1)
    strip = 0.6 * per_class + 0.2  # inches
    columns = max(1, min(len(names), int(10.0 // strip)))  # at most ~10 inches wide
    rows = math.ceil(len(names) / columns)
    fig = new_figure(columns * strip + 0.2, rows * 0.9 + 0.5)
    for index, name in enumerate(names):
        ax = fig.add_subplot(rows, columns, index + 1)
        show_image(ax, _strip(by_class[name]), name, fontsize=8)
    fig.suptitle(title or "training samples after augmentation", fontsize=9)
    grid_layout(fig, rows, title_in=0.2, wspace=0.04)
    return save(fig, out, panels=len(names))


def _strip(images: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Images [n, C, H, W] side by side with a white gap, as one [C, H, n*W + gaps] image."""
    n, c, h, _ = images.shape
    gaps = torch.ones(n, c, h, gap, dtype=images.dtype) * (255 if images.dtype == torch.uint8 else 1.0)
    return torch.cat([t for pair in zip(images, gaps) for t in pair][:-1], dim=-1)
