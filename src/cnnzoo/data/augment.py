"""Whole-batch data augmentation on the batch's device, driven by one torch.Generator.

Every operation draws its random parameters for the whole batch at once and applies them
with tensor indexing or broadcasting, so there is no per-image Python loop:
- random crop with zero padding + horizontal flip: two gathers on the uint8 batch (the
  torchvision `RandomCrop(padding=p)` + `RandomHorizontalFlip` pair, fused); with reflect padding
  (airbench's translation) the gathers read reflected indices and nothing is padded;
- alternating flip (Jordan 2024, arXiv 2404.00498): each image gets a fixed random flip in the
  first epoch and the opposite one in the next, so every image is seen both ways in any two
  consecutive epochs instead of by chance; a pure function of (seed, image index, epoch);
- random-resized crop (Szegedy et al. 2015, torchvision's sampling: scale 0.08-1, ratio 3/4-4/3,
  10 tries then a centre crop) with the flip folded in: one `grid_sample` with per-image boxes
  (bilinear, not antialiased);
- cutout (DeVries & Taylor 2017, arXiv:1708.04552): one square per image, centre anywhere in the
  image, zeroed after normalisation (so it holds the dataset mean, as in the paper's code);
- mixup (Zhang et al. 2017, arXiv:1710.09412) and cutmix (Yun et al. 2019, arXiv:1905.04899):
  one lambda and one partner permutation per batch; with both on, each batch picks one at
  random (probability `switch_prob` for cutmix) without a host-device sync.
Randomness comes from the generator passed in, so a seeded generator replays a batch exactly.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .transforms import normalize


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def sample_gamma(alpha: float, n: int, gen: torch.Generator, tries: int = 16) -> torch.Tensor:
    """Gamma(alpha, 1) by Marsaglia & Tsang (2000), vectorised: `tries` candidates, first accepted wins.

    torch's own gamma sampler takes no generator; this one does. For alpha < 1 it samples
    Gamma(alpha + 1) and multiplies by U^(1/alpha). A sample with no accepted candidate (about
    0.05^16) keeps its first one.
    """
    a = alpha + 1 if alpha < 1 else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn((n, tries), generator=gen, device=gen.device)
    u = _rand(gen, n, tries)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp_min(1e-30).log())
    first = ok.to(torch.uint8).argmax(1, keepdim=True)
    g = d * v.gather(1, first).squeeze(1).clamp_min(1e-30)
    return g * _rand(gen, n).pow(1 / alpha) if alpha < 1 else g


def sample_beta(alpha: float, n: int, gen: torch.Generator) -> torch.Tensor:
    g1, g2 = sample_gamma(alpha, n, gen), sample_gamma(alpha, n, gen)
    return (g1 / (g1 + g2)).nan_to_num(0.5)


_ARANGE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _ramps(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(0..size-1, size-1..0) on `device`, made once: fewer kernel launches per batch."""
    key = (size, str(device))
    if key not in _ARANGE:
        ramp = torch.arange(size, device=device)
        _ARANGE[key] = (ramp, ramp.flip(0))
    return _ARANGE[key]


def crop_flip(images: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator, *, pad_mode: str = "zeros",
              flips: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop of the padded batch back to its size, and flip: a row gather, then a column gather.

    pad_mode "zeros" pads with zeros; "reflect" mirrors the border (without repeating the edge
    pixel, as torch's reflect padding) by gathering reflected indices of the unpadded batch.
    `flips` (bool [N]) chooses the flipped images instead of a coin per image.
    """
    n, c, h, w = images.shape
    dev = images.device
    r = _rand(gen, 3, n).to(dev)
    off = (r[:2] * (2 * padding + 1)).long()  # (y, x) offsets into the padded image
    fwd, rev = _ramps(w, dev)
    flipped = flips.to(dev)[:, None] if flips is not None else r[2, :, None] < 0.5
    cols = (torch.where(flipped, rev, fwd) if hflip else fwd) + off[1, :, None]
    rows = off[0, :, None] + _ramps(h, dev)[0]
    if pad_mode == "reflect":
        source, rows, cols = images, _reflect(rows - padding, h), _reflect(cols - padding, w)
    else:
        source = F.pad(images, (padding,) * 4) if padding else images
    picked = torch.gather(source, 2, rows.view(n, 1, h, 1).expand(n, c, h, source.shape[-1]))
    return torch.gather(picked, 3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside 0..size-1 mirrored back in (-1 -> 1, size -> size - 2), for shifts below size."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def alternating_flips(index: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """bool [N]: whether each image (by its index in the split) is flipped in `epoch`. Epoch 0 flips a
    seeded random half; every later epoch flips exactly the images the epoch before did not."""
    x = index.long() * 0x9E3779B1 + (int(seed) & 0xFFFFFFFF) * 0x85EBCA77  # int64 arithmetic wraps
    x = x ^ (x >> 15)
    x = x * 0x2C1B3C6D
    x = x ^ (x >> 12)
    return ((x >> 7) & 1).bool() ^ bool(epoch % 2)


def _rrc_boxes(n: int, h: int, w: int, scale: Sequence[float], ratio: Sequence[float], gen: torch.Generator,
               tries: int = 10) -> tuple[torch.Tensor, ...]:
    """torchvision's RandomResizedCrop box sampling for a whole batch: (x0, y0, cw, ch) in pixels."""
    area = _rand(gen, n, tries) * (scale[1] - scale[0]) + scale[0]
    logr = _rand(gen, n, tries) * (math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0])
    r = logr.exp()
    cw = (area * h * w * r).sqrt().round()
    ch = (area * h * w / r).sqrt().round()
    ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)
    found = ok.any(1)
    in_ratio = w / h
    fw = float(w) if in_ratio <= ratio[1] else float(round(h * ratio[1]))
    fh = float(h) if in_ratio >= ratio[0] else float(round(w / ratio[0]))
    cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.full_like(found, fw, dtype=cw.dtype))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.full_like(found, fh, dtype=ch.dtype))
    x0 = torch.where(found, (_rand(gen, n) * (w - cw + 1)).floor(), ((w - cw) / 2).floor())
    y0 = torch.where(found, (_rand(gen, n) * (h - ch + 1)).floor(), ((h - ch) / 2).floor())
    return x0, y0, cw, ch


def random_resized_crop(images: torch.Tensor, size: tuple[int, int], gen: torch.Generator, *, hflip: bool = False,
                        scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random box of every image and resize it to `size` (bilinear), optionally flipping. Float out."""
    n, _, h, w = images.shape
    x0, y0, cw, ch = (t.to(images.device) for t in _rrc_boxes(n, h, w, scale, ratio, gen))
    sign = torch.where(_rand(gen, n) < 0.5, -1.0, 1.0).to(images.device) if hflip else 1.0
    return resample_boxes(images, x0, y0, cw, ch, size, sign)


def resample_boxes(images: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, cw: torch.Tensor, ch: torch.Tensor,
                   size: tuple[int, int], sign: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Box (x0, y0, cw, ch) of each image, in pixels (continuous: a pixel spans [i, i + 1)), resampled
    to `size` bilinearly by one `grid_sample`; a sign of -1 mirrors the box. Float out."""
    n, c, h, w = images.shape
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = cw / w * sign
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [n, c, *size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image; its centre is uniform over the image, so it may be clipped."""
    n, _, h, w = x.shape
    cy = (_rand(gen, n) * h).long().to(x.device) - size // 2
    cx = (_rand(gen, n) * w).long().to(x.device) - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ys >= cy[:, None]) & (ys < cy[:, None] + size)
    in_x = (xs >= cx[:, None]) & (xs < cx[:, None] + size)
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)


def scale_boxes(n: int, h: int, w: int, scales: Sequence[int], crop: tuple[int, int], gen: torch.Generator,
                hflip: bool = True) -> tuple[torch.Tensor, ...]:
    """Per image: the shorter side S (an integer uniform in [scales[0], scales[-1]]), the crop's
    top-left corner (y, x) (integers, uniform over the image resized to that S) and a mirror
    flag. All on the generator's device."""
    lo, hi = int(scales[0]), int(scales[-1])
    side = (_rand(gen, n) * (hi - lo + 1)).floor() + lo
    ratio = side / min(h, w)  # resized pixels per stored pixel
    room_y = (h * ratio).floor() - crop[0]
    room_x = (w * ratio).floor() - crop[1]
    y = (_rand(gen, n) * (room_y + 1)).floor()
    x = (_rand(gen, n) * (room_x + 1)).floor()
    flip = _rand(gen, n) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool, device=gen.device)
    return side, y, x, flip


def scale_crop_flip(images: torch.Tensor, scales: Sequence[int], crop: tuple[int, int], gen: torch.Generator,
                    *, hflip: bool = True) -> torch.Tensor:
    """Scale augmentation as VGG (Simonyan & Zisserman 2014, S in [256, 512]) and ResNet (He et
    al. 2016, S in [256, 480]) trained: every image rescaled so its shorter side is its own
    random S, a random `crop` (224x224) cut from it, and mirrored with probability 1/2.

    One `grid_sample` over the batch: a crop of the image resized to S is a box of crop * s / S
    stored pixels (s = stored shorter side), sampled bilinearly without antialiasing (as the
    papers' Caffe/OpenCV resizing). `scales = (S, S)` is single-scale training; with S equal to
    the stored side it is an integer crop (to float32 rounding). Images should be stored with the largest S
    (`load_dataset(train_size=...)`), so every rescale is a reduction. Float out, 0..255.
    """
    n, _, h, w = images.shape
    side, y, x, flip = (t.to(images.device) for t in scale_boxes(n, h, w, scales, crop, gen, hflip))
    stored_per_resized = min(h, w) / side
    sign = torch.where(flip, -1.0, 1.0)
    return resample_boxes(images, x * stored_per_resized, y * stored_per_resized, crop[1] * stored_per_resized,
                          crop[0] * stored_per_resized, crop, sign)


def pca_lighting(x: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor, std: float,
                 gen: torch.Generator) -> torch.Tensor:
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, section 4.1, "fancy PCA"): to every
    pixel of an image add sum_i alpha_i lambda_i p_i, with p_i, lambda_i the eigenvectors and
    eigenvalues of the training set's RGB covariance and alpha_i ~ N(0, std^2) drawn once per
    image (std 0.1 in the paper). The covariance is of pixel values in [0, 1] (cnnzoo.data.pca),
    so the shift is scaled by 255 here, where `x` is in 0..255 units. Float out, not clipped."""
    n, c = x.shape[:2]
    alpha = torch.randn((n, c), generator=gen, device=gen.device).to(x.device) * std
    shift = (alpha * eigvals.to(x.device)) @ eigvecs.to(x.device).T  # [n, c]: sum_i alpha_i lambda_i p_i
    return x.float() + 255.0 * shift[:, :, None, None]


def _cutmix_keep(h: int, w: int, lam: torch.Tensor, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A [1, 1, H, W] mask that is 0 inside one box of area (1 - lam), and the kept fraction."""
    r = (1 - lam).sqrt()
    cut_h, cut_w = (h * r).floor(), (w * r).floor()
    cy, cx = (_rand(gen, 1) * h).floor(), (_rand(gen, 1) * w).floor()
    y1, y2 = (cy - cut_h / 2).floor().clamp(0, h), (cy + cut_h / 2).floor().clamp(0, h)
    x1, x2 = (cx - cut_w / 2).floor().clamp(0, w), (cx + cut_w / 2).floor().clamp(0, w)
    ys, xs = torch.arange(h, device=gen.device), torch.arange(w, device=gen.device)
    inside = ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
    kept = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return (~inside).float().to(device)[None, None], kept.to(device)


class BatchAugment:
    """Callable `(uint8 images, labels, generator) -> (normalised float32 images, targets)`.

    Targets are the int64 labels, or float soft targets `[N, num_classes]` summing to 1 when
    mixup or cutmix is on (`F.cross_entropy` takes both; label smoothing stays in the loss,
    which is what `label_smoothing_free=True` states).
    """

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, hflip: bool = False,
                 cutout: int = 0, random_resized_crop: tuple[int, int] | None = None, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, num_classes: int | None = None, label_smoothing_free: bool = True,
                 rrc_scale: tuple[float, float] = (0.08, 1.0), rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 switch_prob: float = 0.5, pad_mode: str = "zeros", flip: str = "random", flip_seed: int = 0,
                 scale_jitter: tuple[int, int] | None = None, crop_size: tuple[int, int] | None = None,
                 lighting: tuple[torch.Tensor, torch.Tensor] | None = None, lighting_std: float = 0.1):
        if random_resized_crop and crop_padding:
            raise ValueError("choose either random_resized_crop or crop_padding, not both")
        if scale_jitter and (random_resized_crop or crop_padding or not crop_size):
            raise ValueError("scale_jitter needs crop_size and excludes random_resized_crop and crop_padding")
        if (mixup_alpha > 0 or cutmix_alpha > 0) and not num_classes:
            raise ValueError("mixup and cutmix need num_classes to build soft targets")
        if not label_smoothing_free:
            raise ValueError("label smoothing belongs to the loss (F.cross_entropy(label_smoothing=...))")
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_padding, self.hflip, self.cutout = int(crop_padding), bool(hflip), int(cutout)
        self.rrc = tuple(random_resized_crop) if random_resized_crop else None
        self.rrc_scale, self.rrc_ratio = rrc_scale, rrc_ratio
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob = float(mixup_alpha), float(cutmix_alpha), switch_prob
        self.num_classes = num_classes
        if pad_mode not in ("zeros", "reflect") or flip not in ("random", "alternate"):
            raise ValueError(f"pad_mode must be zeros or reflect and flip random or alternate, got {pad_mode!r}, "
                             f"{flip!r}")
        self.pad_mode, self.flip, self.flip_seed = pad_mode, flip, int(flip_seed)
        self.scale_jitter, self.crop_size = (tuple(scale_jitter), tuple(crop_size)) if scale_jitter else (None, None)
        self.lighting, self.lighting_std = lighting, float(lighting_std)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __repr__(self) -> str:
        opts = dict(crop_padding=self.crop_padding, hflip=self.hflip, cutout=self.cutout, random_resized_crop=self.rrc,
                    mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha,
                    pad_mode=self.pad_mode if self.pad_mode != "zeros" else None,
                    flip=self.flip if self.flip != "random" else None, scale_jitter=self.scale_jitter,
                    pca_lighting=self.lighting_std if self.lighting is not None else 0)
        return f"BatchAugment({', '.join(f'{k}={v}' for k, v in opts.items() if v)})"

    def geometric(self, images: torch.Tensor, gen: torch.Generator, index: torch.Tensor | None = None,
                  epoch: int = 0) -> torch.Tensor:
        if self.scale_jitter:
            return scale_crop_flip(images, self.scale_jitter, self.crop_size, gen, hflip=self.hflip)
        if self.rrc:
            return random_resized_crop(images, self.rrc, gen, hflip=self.hflip, scale=self.rrc_scale,
                                       ratio=self.rrc_ratio)
        if self.crop_padding or self.hflip:
            flips = (alternating_flips(index, epoch, self.flip_seed)
                     if self.hflip and self.flip == "alternate" and index is not None else None)
            return crop_flip(images, self.crop_padding, self.hflip, gen, pad_mode=self.pad_mode, flips=flips)
        return images

    def mix(self, x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
        use_cutmix = _rand(gen, 1) < (self.switch_prob if self.mixup_alpha > 0 else 1.0)
        if self.cutmix_alpha <= 0:
            use_cutmix = torch.zeros_like(use_cutmix)
        lam_mix = sample_beta(self.mixup_alpha or 1.0, 1, gen)
        keep, kept = _cutmix_keep(h, w, sample_beta(self.cutmix_alpha or 1.0, 1, gen), gen, x.device)
        use_cutmix, lam_mix = use_cutmix.to(x.device), lam_mix.to(x.device)
        weight = torch.where(use_cutmix.view(1, 1, 1, 1), keep, lam_mix.view(1, 1, 1, 1))
        x = x * weight + x[perm] * (1 - weight)
        lam = torch.where(use_cutmix, kept, lam_mix)
        onehot = F.one_hot(labels, self.num_classes).float()
        return x, onehot * lam + onehot[perm] * (1 - lam)

    def transform(self, images: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None,
                  epoch: int = 0) -> torch.Tensor:
        """The per-image part (crops, flip, colour noise, normalisation, cutout): any number of images
        at once. `index` (the images' positions in their split) and `epoch` drive alternating flips;
        without them the flips are random."""
        x = self.geometric(images, generator, index, epoch)
        if self.lighting is not None:
            x = pca_lighting(x, *self.lighting, self.lighting_std, generator)
        x = normalize(x, self.mean, self.std)
        return cutout(x, self.cutout, generator) if self.cutout else x

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.transform(images, generator)
        return self.mix(x, labels, generator) if self.mixes else (x, labels)


HANDWRITING = ("digits", "mnist")  # a mirrored digit is another symbol: no flips


def augment_policy(bundle: Any, *, crop_padding: int | None = None, hflip: bool | None = None,
                   random_resized_crop: bool | None = None) -> dict[str, Any]:
    """The crop and flip settings of a dataset: the ones given, or its usual ones.

    Usual: an Inception-style random-resized crop + flip for large images (stored larger than
    the input); otherwise a random crop after size/8 zero padding (CIFAR: 4) + flip, except for
    handwritten digits: size/16 padding and no flip. The result is BatchAugment's keywords.
    """
    size = tuple(bundle.input_size[1:])
    handwriting = bundle.name in HANDWRITING
    rrc = random_resized_crop if random_resized_crop is not None else bool(bundle.large_images)
    if bundle.large_images and not rrc:
        raise ConfigError("regularization.random_resized_crop: large images are stored 1.14x larger than the "
                          "input for random-resized crops; leave it on (or unset) for this dataset")
    if crop_padding is None:
        crop_padding = 0 if rrc else max(1, min(size) // (16 if handwriting else 8))
    return dict(crop_padding=crop_padding, hflip=(not handwriting) if hflip is None else hflip,
                random_resized_crop=size if rrc else None)


def scale_policy(bundle: Any, scales: Sequence[int], *, crop_padding: int | None = None, hflip: bool | None = None,
                 random_resized_crop: bool | None = None) -> dict[str, Any]:
    """BatchAugment's keywords for VGG/ResNet scale augmentation: shorter side S in `scales`
    ([S] or [S_min, S_max]), a crop of the bundle's input size, and flip (unless refused).
    The bundle's training images must be stored with shorter side S_max (load_dataset's train_size)."""
    lo, hi = int(min(scales)), int(max(scales))
    crop = tuple(bundle.input_size[1:])
    if random_resized_crop or crop_padding:
        key = "random_resized_crop" if random_resized_crop else "crop_padding"
        raise ConfigError(f"regularization.{key}: scale augmentation (regularization.scale_jitter) makes its own "
                          "crops; leave it unset")
    if lo < max(crop):
        raise ConfigError(f"regularization.scale_jitter: the shorter side S={lo} is smaller than the "
                          f"{crop[0]}x{crop[1]} crop; use S >= {max(crop)}")
    stored = min(bundle.train.images.shape[-2:])
    if stored < hi:
        raise ConfigError(f"regularization.scale_jitter: training images are stored at {stored}px, below "
                          f"S_max={hi}; load them with train_size={hi}")
    return {"crop_padding": 0, "hflip": bundle.name not in HANDWRITING if hflip is None else hflip,
            "random_resized_crop": None, "scale_jitter": (lo, hi), "crop_size": crop}
