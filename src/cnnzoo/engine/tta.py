"""Test-time augmentation: average the class probabilities of several views of each image.

- hflip: the image and its mirror image.
- tencrop: the four corner crops and the centre crop and their mirror images, as AlexNet
  (Krizhevsky et al. 2012) and ResNet (He et al. 2016, "standard 10-crop testing") report.
- multiscale: the image resized by each factor in `scales`; the models pool globally, so
  each scale is evaluated fully convolutionally, as in VGG and ResNet's multi-scale tests.
- fliptranslate: airbench's test-time augmentation (Jordan 2024, arXiv 2404.00498): the image
  and its mirror image (weight 1/4 each), and the image shifted by one pixel up-left and
  down-right (reflect-padded) with their mirror images (1/8 each).

The result is the log of the averaged probabilities, so cross-entropy and top-k work on it
as on ordinary logits. The views of a mode are averaged with its weights (`view_weights`):
equal weights except for fliptranslate.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_crop

TTA_MODES = ("none", "hflip", "tencrop", "multiscale", "fliptranslate")
FLIP_TRANSLATE_WEIGHTS = (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)


def flip_translate_views(images: torch.Tensor, shift: int = 1) -> Iterator[torch.Tensor]:
    """The image, its mirror, then the image moved by `shift` pixels towards the top left and
    towards the bottom right (reflect padding), each followed by its mirror."""
    h, w = images.shape[-2:]
    yield images
    yield images.flip(-1)
    padded = F.pad(images, (shift,) * 4, mode="reflect")
    for top in (0, 2 * shift):
        view = padded[..., top:top + h, top:top + w]
        yield view
        yield view.flip(-1)


def view_weights(mode: str, count: int) -> list[float]:
    """The weight of each of the `count` views of `mode` in the average."""
    if mode == "fliptranslate":
        return list(FLIP_TRANSLATE_WEIGHTS)
    return [1.0 / count] * count


def tta_views(images: torch.Tensor, mode: str, *, crop_size: int | None = None,
              scales: Sequence[float] = (0.875, 1.0, 1.125)) -> Iterator[torch.Tensor]:
    h, w = images.shape[-2:]
    if mode == "none":
        yield images
    elif mode == "hflip":
        yield images
        yield images.flip(-1)
    elif mode == "tencrop":
        crop = crop_size or max(1, round(0.875 * min(h, w)))
        check_crop(crop, (h, w), key="--crop-size")
        for top, left in ((0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop),
                          ((h - crop) // 2, (w - crop) // 2)):
            view = images[..., top:top + crop, left:left + crop]
            yield view
            yield view.flip(-1)
    elif mode == "multiscale":
        for scale in scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            yield images if size == (h, w) else F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    elif mode == "fliptranslate":
        yield from flip_translate_views(images)
    else:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")


def tta_logits(model: nn.Module, images: torch.Tensor, mode: str, *, crop_size: int | None = None,
               scales: Sequence[float] = (0.875, 1.0, 1.125)) -> torch.Tensor:
    probs = [model(view).float().softmax(dim=1)
             for view in tta_views(images, mode, crop_size=crop_size, scales=scales)]
    weights = view_weights(mode, len(probs))
    total = sum(weight * p for weight, p in zip(weights, probs))
    return total.clamp_min(1e-12).log()
