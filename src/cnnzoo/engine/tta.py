"""Test-time augmentation: average the class probabilities of several views of each image.

- hflip: the image and its mirror image.
- tencrop: the four corner crops and the centre crop and their mirror images, as AlexNet
  (Krizhevsky et al. 2012) and ResNet (He et al. 2016, "standard 10-crop testing") report.
- multiscale: the image resized by each factor in `scales`; the models pool globally, so
  each scale is evaluated fully convolutionally, as in VGG and ResNet's multi-scale tests.
- fliptranslate: airbench's test-time augmentation (Jordan 2024, arXiv 2404.00498): the image
  and its mirror image (weight 1/4 each), and the image shifted by one pixel up-left and
  down-right (reflect-padded) with their mirror images (1/8 each).

The papers' whole-image tests (they need the uncropped test image; see `whole_image_sizes`):
- dense: VGG (Simonyan & Zisserman 2014, section 3.2) and ResNet (He et al. 2016, section
  3.4): the whole image rescaled so its shorter side is each of `sizes` (ResNet: 224, 256, 384,
  480, 640), the classifier applied at every position (its fully-connected layers as
  convolutions: `dense_logits`), the class scores averaged over positions; the soft-max of
  each scale and of its mirror image averaged.
- crop144: GoogLeNet (Szegedy et al. 2014, section 7): shorter side 256, 288, 320 and 352;
  the left, centre and right squares (top, centre, bottom for portrait images); of each, the 4
  corner and the centre crops and the square resized to the crop size; and their mirror
  images: 4 x 3 x 6 x 2 = 144 views.
- dense_multicrop: VGG's combination (Table 5): the average of the dense soft-max and that of
  the multi-crop test (a 5 x 5 grid of crops and their mirror images at each scale).

The result is the log of the averaged probabilities, so cross-entropy and top-k work on it
as on ordinary logits. The views of a mode are averaged with its weights (`view_weights`):
equal weights except for fliptranslate.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.head import FCHead
from .config import check_crop

WHOLE_IMAGE_MODES = ("dense", "crop144", "dense_multicrop")
TTA_MODES = ("none", "hflip", "tencrop", "multiscale", "fliptranslate", *WHOLE_IMAGE_MODES)
PAPER_SIZES = {"dense": (224, 256, 384, 480, 640), "crop144": (256, 288, 320, 352),
               "dense_multicrop": (256, 384, 512)}  # ResNet's; GoogLeNet's; VGG's Q for S in [256, 512]
PAPER_INPUT = 224
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
               scales: Sequence[float] = (0.875, 1.0, 1.125), sizes: Sequence[int] = ()) -> torch.Tensor:
    if mode in WHOLE_IMAGE_MODES:
        return whole_image_logits(model, images, mode, sizes=sizes, crop_size=crop_size)
    probs = [model(view).float().softmax(dim=1)
             for view in tta_views(images, mode, crop_size=crop_size, scales=scales)]
    weights = view_weights(mode, len(probs))
    total = sum(weight * p for weight, p in zip(weights, probs))
    return total.clamp_min(1e-12).log()


def whole_image_sizes(mode: str, input_side: int, sizes: Sequence[int] = (),
                      crop_size: int | None = None) -> tuple[tuple[int, ...], int]:
    """(shorter sides, crop) of a whole-image test: the ones given, else the paper's scaled by
    input_side / 224 (so a 32px CIFAR model gets dense sizes 32, 37, 55, 69, 91), crop = input side."""
    ratio = input_side / PAPER_INPUT
    chosen = tuple(int(v) for v in sizes) or tuple(max(1, round(v * ratio)) for v in PAPER_SIZES[mode])
    return chosen, int(crop_size or input_side)


def resize_shorter(images: torch.Tensor, size: int) -> torch.Tensor:
    """The batch rescaled (bilinear, antialiased when shrinking) so its shorter side is `size`."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    if out == (h, w):
        return images
    return F.interpolate(images, size=out, mode="bilinear", align_corners=False, antialias=scale < 1)


def dense_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class scores of the classifier applied at every position of the feature map, averaged.

    A head that pools to k x k and then has fully-connected layers (AlexNet, VGG: `FCHead`) is
    applied as convolutions: each k x k window of the feature map (stride 1) goes through the
    FC layers, as the papers' FC-to-conv conversion computes. For a global-average-pooling head
    the average of the per-position scores is the model's output itself (the last layer is
    linear), so the model is simply run on the whole image.
    """
    head = getattr(model, "head", None)
    if isinstance(head, FCHead) and hasattr(model, "forward_features"):
        k = _pool_side(head.global_pool.output_size)
        features = model.forward_features(images)
        if min(features.shape[-2:]) >= k > 1:
            windows = F.unfold(features, k)  # [N, C*k*k, L], ordered as flatten() orders a C x k x k window
            n, width, positions = windows.shape
            scores = head.fc(head.pre_logits(windows.transpose(1, 2).reshape(n * positions, width)))
            return scores.view(n, positions, -1).mean(dim=1)
    return model(images)


def _pool_side(size) -> int:
    return int(size if isinstance(size, int) else size[0])


def crop144_views(images: torch.Tensor, sizes: Sequence[int], crop: int) -> Iterator[torch.Tensor]:
    """GoogLeNet's 144 views: per size, 3 squares x (4 corners, centre, whole square resized) x 2 flips."""
    for size in sizes:
        resized = resize_shorter(images, size)
        h, w = resized.shape[-2:]
        side = min(h, w)
        check_crop(crop, (side, side), key="eval.crop_size")
        for offset in (0, (max(h, w) - side) // 2, max(h, w) - side):
            square = resized[..., offset:offset + side, :] if h > w else resized[..., :, offset:offset + side]
            for view in _five_crops(square, crop):
                yield view
                yield view.flip(-1)
            whole = F.interpolate(square, size=(crop, crop), mode="bilinear", align_corners=False,
                                  antialias=crop < side)
            yield whole
            yield whole.flip(-1)


def _five_crops(images: torch.Tensor, crop: int) -> Iterator[torch.Tensor]:
    h, w = images.shape[-2:]
    for top, left in ((0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), ((h - crop) // 2, (w - crop) // 2)):
        yield images[..., top:top + crop, left:left + crop]


def grid_views(images: torch.Tensor, sizes: Sequence[int], crop: int, grid: int = 5) -> Iterator[torch.Tensor]:
    """VGG's multi-crop test: at each size, a grid x grid regular grid of crops and their mirror images."""
    for size in sizes:
        resized = resize_shorter(images, size)
        h, w = resized.shape[-2:]
        check_crop(crop, (h, w), key="eval.crop_size")
        tops = torch.linspace(0, h - crop, grid).round().long().tolist()
        lefts = torch.linspace(0, w - crop, grid).round().long().tolist()
        for top in tops:
            for left in lefts:
                view = resized[..., top:top + crop, left:left + crop]
                yield view
                yield view.flip(-1)


def _mean_probs(model: nn.Module, views, scores=None) -> torch.Tensor:
    total, count = None, 0
    for view in views:
        probs = (scores or model)(view).float().softmax(dim=1)
        total = probs if total is None else total + probs
        count += 1
    return total / count


def dense_probs(model: nn.Module, images: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Dense evaluation: soft-max of the position-averaged scores, averaged over sizes and flips."""
    views = (view for size in sizes for resized in [resize_shorter(images, size)]
             for view in (resized, resized.flip(-1)))
    return _mean_probs(model, views, lambda view: dense_logits(model, view))


def whole_image_logits(model: nn.Module, images: torch.Tensor, mode: str, *, sizes: Sequence[int],
                       crop_size: int | None) -> torch.Tensor:
    """Log of the averaged probabilities of a whole-image test (dense, crop144, dense_multicrop)."""
    sizes, crop = whole_image_sizes(mode, min(images.shape[-2:]), sizes, crop_size)
    if mode == "dense":
        probs = dense_probs(model, images, sizes)
    elif mode == "crop144":
        probs = _mean_probs(model, crop144_views(images, sizes, crop))
    else:
        probs = (dense_probs(model, images, sizes) + _mean_probs(model, grid_views(images, sizes, crop))) / 2
    return probs.clamp_min(1e-12).log()
