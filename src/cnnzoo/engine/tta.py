"""Test-time augmentation: average the class probabilities of several views of each image.

- hflip: the image and its mirror image.
- tencrop: the four corner crops and the centre crop and their mirror images, as AlexNet
  (Krizhevsky et al. 2012) and ResNet (He et al. 2016, "standard 10-crop testing") report.
- multiscale: the image resized by each factor in `scales`; the models pool globally, so
  each scale is evaluated fully convolutionally, as in VGG and ResNet's multi-scale tests.

The result is the log of the averaged probabilities, so cross-entropy and top-k work on it
as on ordinary logits.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_crop

TTA_MODES = ("none", "hflip", "tencrop", "multiscale")


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
    else:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")


def tta_logits(model: nn.Module, images: torch.Tensor, mode: str, *, crop_size: int | None = None,
               scales: Sequence[float] = (0.875, 1.0, 1.125)) -> torch.Tensor:
    total, count = None, 0
    for view in tta_views(images, mode, crop_size=crop_size, scales=scales):
        probs = model(view).float().softmax(dim=1)
        total = probs if total is None else total + probs
        count += 1
    return (total / count).clamp_min(1e-12).log()
