"""Gaussian denoising as in DnCNN (Zhang et al. 2017, arXiv 1608.03981): data, noise, metrics.

- Images are float tensors in [0, 1], shape (C, H, W); noise levels sigma are on the 0-255
  scale, as in the paper (sigma=25 means a standard deviation of 25/255).
- Training data are patches (40x40 by default) cut with a stride from each clean image at
  the scales 1, 0.9, 0.8, 0.7, each in one of the eight flips/rotations, as the official
  code does; `PatchLoader` draws them on the device, with fresh noise each time, from
  generators seeded by (seed, epoch, batch), so a resumed run replays the same batches.
- Evaluation adds seeded noise to each clean image (the seed mixes in the image's name, so
  a subset gets the same noise as the full set), denoises the whole image, clips to [0, 1]
  and reports PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window with sigma 1.5,
  K1=0.01, K2=0.03, valid region) per image and their means.
A source of clean images is a folder or a .tar/.tar.gz; test sets are its sub-folders.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .._text import count
from ..data.decode import IMAGE_EXTENSIONS, decode_image, match_channels
from ..data.folder import image_files, is_archive
from ..data.loader import derive_seed, epoch_permutation
from ..engine.evaluate import run_evaluator
from ..engine.progress import Progress
from ..engine.runtime import Runtime
from ..errors import CnnzooError, DataError

PAPER_SCALES = (1.0, 0.9, 0.8, 0.7)

log = logging.getLogger(__name__)


class DenoiseDataError(CnnzooError):
    """A source of clean images that is missing, empty or unreadable."""


# ------------------------------------------------------------------------------ noise


def add_gaussian_noise(clean: torch.Tensor, sigma: float | torch.Tensor, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """clean + N(0, (sigma/255)^2); `sigma` is a number or one value per image of a batch.

    Not clipped: the paper's noisy inputs keep their full Gaussian range.
    """
    noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    sigma = torch.as_tensor(sigma, dtype=clean.dtype, device=clean.device)
    if sigma.ndim == 1:
        sigma = sigma.view(-1, *([1] * (clean.ndim - 1)))
    return clean + noise * (sigma / 255.0)


def image_seed(seed: int, name: str) -> int:
    """The noise seed of one evaluation image: the same whichever subset it is evaluated in."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def seeded_noisy(clean: torch.Tensor, sigma: float, *, seed: int, name: str) -> torch.Tensor:
    """An evaluation image's noisy version: noise seeded by (seed, image name), so validation,
    the final test and `cnnzoo denoise --eval` all see the same noisy input."""
    return add_gaussian_noise(clean, sigma, generator=torch.Generator().manual_seed(image_seed(seed, name)))


# ------------------------------------------------------------------------------ metrics


def psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(range^2 / MSE), per image of a (N,C,H,W) batch
    (a single (C,H,W) image gives a 0-d tensor)."""
    diff = (estimate.double() - reference.double()).flatten(start_dim=1 if estimate.ndim == 4 else 0)
    mse = diff.pow(2).mean(dim=-1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0, *,
         window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) per image of a batch.

    Local means, variances and covariance under a Gaussian window, over the valid region
    (no padding), averaged over pixels and channels.
    """
    single = estimate.ndim == 3
    x = (estimate[None] if single else estimate).double()
    y = (reference[None] if single else reference).double()
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x.device).expand(channels, 1, window_size, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_image = ssim_map.flatten(1).mean(dim=1)
    return per_image[0] if single else per_image


# ------------------------------------------------------------------------------ images


def load_image(source: str | os.PathLike | bytes, channels: int = 1) -> torch.Tensor:
    """A (C, H, W) float image in [0, 1]: grey for channels=1, RGB for channels=3. Decoded as the
    classification data is (cnnzoo.data.decode: 16-bit scaled, transparency composited on white,
    float images scaled or refused), so both tasks see the same pixels."""
    return _load(source, channels)[0]


def _load(source: str | os.PathLike | bytes, channels: int) -> tuple[torch.Tensor, bool]:
    """(load_image's image, whether the file had colour that a grey image lost)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    try:
        decoded = decode_image(source if isinstance(source, bytes) else str(source))
        arr = match_channels(decoded, channels)
    except (OSError, ValueError, SyntaxError) as err:
        name = "image bytes" if isinstance(source, bytes) else str(source)
        raise DenoiseDataError(f"cannot read {name}: {err}") from None
    lost = channels == 1 and has_colour(decoded)
    return torch.from_numpy(arr.copy()).float().div_(255.0).permute(2, 0, 1).contiguous(), lost


def has_colour(array: np.ndarray) -> bool:
    """Whether an H x W x C image has colour (an RGB file whose three channels are equal is grey)."""
    return array.shape[2] >= 3 and not (np.array_equal(array[..., 0], array[..., 1])
                                        and np.array_equal(array[..., 1], array[..., 2]))


def load_image_for(source: str | os.PathLike, channels: int, what: str) -> torch.Tensor:
    """load_image, warning when a colour image is reduced to grey for a one-channel model (`what`
    names the model), and noting when a grey image is repeated for a colour one."""
    image, lost = _load(source, channels)
    if lost:
        log.warning("%s is a colour image; %s denoises one channel, so it is converted to grey and so is the result "
                    "(denoise colour with a colour model, e.g. a `cnnzoo train --task denoise --model dncnn_color` "
                    "checkpoint)", source, what)
    elif channels == 3 and not has_colour(decode_image(str(source))):
        log.info("%s is grey; the colour model %s denoises it as three equal channels", source, what)
    return image


def save_image(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a (C, H, W) image in [0, 1] (clipped, rounded to 8 bits) as PNG/JPEG/..."""
    arr = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    try:
        Image.fromarray(arr).save(path)
    except (OSError, ValueError) as err:
        raise DenoiseDataError(f"cannot write {path}: {err}") from None


def list_image_files(source: str | os.PathLike) -> dict[str, bytes | Path]:
    """Relative POSIX name -> file path (folders) or bytes (archives), sorted by name; a single
    image file is a set of one."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return {path.name: path}
    if not (path.is_dir() or is_archive(path)):
        raise DenoiseDataError(f"{path} is not a folder, a .tar(.gz) archive or an image file; the denoise task "
                               "needs clean images, e.g. --data ../shared/data/denoise-gray.tar.gz")
    try:
        return image_files(path)
    except DataError as err:
        raise DenoiseDataError(str(err)) from None


def image_sets(source: str | os.PathLike) -> dict[str, dict[str, bytes | Path]]:
    """The images of a source grouped by top-level sub-folder ("" for files at the top)."""
    groups: dict[str, dict[str, bytes | Path]] = {}
    for name, payload in list_image_files(source).items():
        parts = PurePosixPath(name).parts
        groups.setdefault(parts[0] if len(parts) > 1 else "", {})[name] = payload
    if not groups:
        raise DenoiseDataError(f"no images in {source}")
    return groups


def read_images(files: dict[str, bytes | Path], channels: int = 1) -> list[tuple[str, torch.Tensor]]:
    """(name, image) of every file; one warning when colour images were reduced to grey."""
    loaded = [(name, *_load(payload, channels)) for name, payload in files.items()]
    reduced = [name for name, _, lost in loaded if lost]
    if reduced:
        log.warning("%d of %d images (%s%s) are colour and were converted to grey for a one-channel model",
                    len(reduced), len(loaded), reduced[0], ", ..." if len(reduced) > 1 else "")
    return [(name, image) for name, image, _ in loaded]


def read_image_set(source: str | os.PathLike, subset: str | None = None,
                   channels: int = 1) -> list[tuple[str, torch.Tensor]]:
    """(name, image) of every image in `source`, or only in its sub-folder `subset`."""
    groups = image_sets(source)
    if subset is None:
        return read_images({k: v for g in groups.values() for k, v in g.items()}, channels)
    if subset not in groups:
        known = ", ".join(sorted(g for g in groups if g)) or "none"
        raise DenoiseDataError(f"{source} has no sub-folder {subset!r} (it has: {known})")
    return read_images(groups[subset], channels)


# ------------------------------------------------------------------------------ patches


def dihedral(x: torch.Tensor, mode: int) -> torch.Tensor:
    """One of the eight flips/rotations of the official code's data_aug (mode 0 = identity):
    rotate by 90 * (mode // 2) degrees, then flip upside down when mode is odd."""
    x = torch.rot90(x, mode // 2, dims=(-2, -1))
    return x.flip(-2) if mode % 2 else x


def rescale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Bicubic resize by `scale`, clipped to [0, 1] and rounded to 8 bits (like cv2 on uint8)."""
    if scale == 1.0:
        return image
    h, w = (int(image.shape[-2] * scale), int(image.shape[-1] * scale))
    out = F.interpolate(image[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    return out.clamp(0, 1).mul(255).round().div(255)


def patch_origins(height: int, width: int, patch_size: int, stride: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(0, height - patch_size + 1, stride) for x in range(0, width - patch_size + 1, stride)]


def extract_patches(image: torch.Tensor, patch_size: int = 40, stride: int = 10,
                    scales: Sequence[float] = PAPER_SCALES) -> torch.Tensor:
    """All (N, C, p, p) patches of one image at each scale, in raster order (no augmentation)."""
    patches = []
    for scale in scales:
        scaled = rescale(image, scale)
        tiles = scaled.unfold(1, patch_size, stride).unfold(2, patch_size, stride)  # C, ny, nx, p, p
        patches.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], patch_size, patch_size))
    return torch.cat(patches) if patches else image.new_empty(0, image.shape[0], patch_size, patch_size)


class PatchLoader:
    """Batches of (noisy, clean) training patches drawn on `device`.

    The rescaled images are stored once as uint8 on the device; a batch is a set of patch
    origins gathered by index, each patch turned by a random one of the eight dihedral modes
    (when `augment`) and given fresh Gaussian noise: `sigma` fixed, or uniform in
    `sigma_range` per patch (blind training, DnCNN-B). Order, modes and noise come from
    generators seeded by (seed, epoch, batch index), so resuming at a batch replays it.
    The loader protocol is cnnzoo.data.DeviceLoader's (set_epoch, state_dict, len).
    """

    def __init__(self, images: Sequence[torch.Tensor], *, batch_size: int = 128, patch_size: int = 40,
                 stride: int = 10, scales: Sequence[float] = PAPER_SCALES, sigma: float = 25.0,
                 sigma_range: tuple[float, float] | None = None, augment: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu", drop_last: bool = True):
        if not images:
            raise DenoiseDataError("no training images")
        self.device = torch.device(device)
        self.batch_size, self.patch_size, self.drop_last = batch_size, patch_size, drop_last
        self.sigma, self.sigma_range, self.augment, self.seed = sigma, sigma_range, augment, int(seed)
        self.channels = images[0].shape[0]
        buffers, starts, widths = [], [], []
        offset = 0
        for image in images:
            for scale in scales:
                scaled = (rescale(image, scale) * 255).round().to(torch.uint8)
                _, h, w = scaled.shape
                for y, x in patch_origins(h, w, patch_size, stride):
                    starts.append(offset + (y * w + x) * self.channels)
                    widths.append(w)
                buffers.append(scaled.permute(1, 2, 0).reshape(-1))  # HWC, flat
                offset += buffers[-1].numel()
        if not starts:
            raise DenoiseDataError(f"every training image is smaller than the {patch_size}x{patch_size} patch")
        self.pixels = torch.cat(buffers).to(self.device)
        self.starts = torch.tensor(starts, dtype=torch.int64, device=self.device)
        self.widths = torch.tensor(widths, dtype=torch.int64, device=self.device)
        # Row/column offsets inside a patch for each of the eight dihedral modes: gathering with a
        # mode's offsets gives the turned patch directly, for a whole batch of mixed modes at once.
        rows = torch.arange(patch_size, device=self.device).view(-1, 1).expand(patch_size, patch_size)
        self._dy = torch.stack([dihedral(rows, m) for m in range(8)])[..., None]  # 8, p, p, 1
        self._dx = torch.stack([dihedral(rows.t(), m) for m in range(8)])[..., None]
        self._dc = torch.arange(self.channels, device=self.device).view(1, 1, 1, -1)
        self.epoch, self.position = 0, 0

    @property
    def num_samples(self) -> int:
        return int(self.starts.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return max(1, n // self.batch_size) if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])

    def gather(self, index: torch.Tensor, modes: torch.Tensor | None = None) -> torch.Tensor:
        """Clean (B, C, p, p) float patches for patch indices `index`, each turned by its
        dihedral mode in `modes` (default: none turned)."""
        modes = torch.zeros_like(index) if modes is None else modes
        starts, widths = self.starts[index].view(-1, 1, 1, 1), self.widths[index].view(-1, 1, 1, 1)
        flat = starts + (self._dy[modes] * widths + self._dx[modes]) * self.channels + self._dc
        return self.pixels[flat].permute(0, 3, 1, 2).float().div_(255.0)

    def _batch(self, index: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, self.epoch, step, 3))
        modes = torch.randint(0, 8, index.shape, generator=gen, device=self.device) if self.augment else None
        clean = self.gather(index, modes)
        if self.sigma_range is not None:
            lo, hi = self.sigma_range
            sigma = torch.rand(clean.shape[0], generator=gen, device=self.device) * (hi - lo) + lo
        else:
            sigma = self.sigma
        return add_gaussian_noise(clean, sigma, generator=gen), clean

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_permutation(self.num_samples, self.seed, self.epoch).to(self.device)
        for step in range(self.position, len(self)):
            batch = self._batch(order[step * self.batch_size:(step + 1) * self.batch_size], step)
            self.position = step + 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def denoise(model: nn.Module, noisy: torch.Tensor, *, clip: bool = True, tile: int | None = None,
            overlap: int = 32) -> torch.Tensor:
    """The model's estimate of a clean (C,H,W) or (N,C,H,W) image, clipped to [0, 1].

    With `tile`, the image goes through in tiles of that side that overlap by `overlap`
    pixels on each side, keeping only their centres: exact for a fully convolutional model
    whose receptive field is at most 2 * overlap + 1 pixels (DnCNN-S: 35), and it bounds the
    memory needed for large photos.
    """
    single = noisy.ndim == 3
    batch = noisy[None] if single else noisy
    device = next(model.parameters()).device
    if tile is None or max(batch.shape[-2:]) <= tile:
        out = model(batch.to(device)).float().cpu()
    else:
        out = _tiled(model, batch, tile, overlap, device)
    out = out.clamp(0, 1) if clip else out
    return out[0] if single else out


def _tiled(model: nn.Module, batch: torch.Tensor, tile: int, overlap: int, device: torch.device) -> torch.Tensor:
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    height, width = batch.shape[-2:]
    out = torch.empty(batch.shape, dtype=torch.float32)
    step = tile - 2 * overlap
    for top in range(0, height, step):
        for left in range(0, width, step):
            y0, x0 = max(0, top - overlap), max(0, left - overlap)
            y1, x1 = min(height, top + step + overlap), min(width, left + step + overlap)
            piece = model(batch[..., y0:y1, x0:x1].to(device)).float().cpu()
            bottom, right = min(height, top + step), min(width, left + step)
            out[..., top:bottom, left:right] = piece[..., top - y0:bottom - y0, left - x0:right - x0]
    return out


@dataclass
class ImageResult:
    set_name: str
    name: str
    psnr_noisy: float
    psnr: float
    ssim: float | None
    mse: float  # per-pixel, before clipping the estimate


@dataclass
class DenoiseReport:
    """Per-image PSNR/SSIM of one test set at one noise level, and their means."""

    set_name: str
    sigma: float
    images: list[ImageResult] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        return sum(r.psnr for r in self.images) / len(self.images)

    @property
    def psnr_noisy(self) -> float:
        return sum(r.psnr_noisy for r in self.images) / len(self.images)

    @property
    def ssim(self) -> float | None:
        values = [r.ssim for r in self.images if r.ssim is not None]
        return sum(values) / len(values) if values else None

    def format(self, per_image: bool = False) -> str:
        lines = []
        if per_image:
            width = max(len(r.name) for r in self.images)
            lines = [f"  {r.name:<{width}}  noisy {r.psnr_noisy:6.2f} dB  denoised {r.psnr:6.2f} dB"
                     + (f"  SSIM {r.ssim:.4f}" if r.ssim is not None else "") for r in self.images]
        ssim_text = f"  SSIM {self.ssim:.4f}" if self.ssim is not None else ""
        lines.append(f"{self.set_name or 'images'}: {count(len(self.images), 'image')}, sigma {self.sigma:g}: "
                     f"PSNR {self.psnr:.2f} dB (noisy {self.psnr_noisy:.2f} dB){ssim_text}")
        return "\n".join(lines)


class ImagePairLoader:
    """Whole (noisy, clean) images one at a time (their sizes differ), with noise seeded per
    image name: the same noisy input at every validation, in the final test and in
    `cnnzoo eval`/`cnnzoo denoise --eval`. Batches are (noisy, clean, set name, image name)."""

    def __init__(self, images: Sequence[tuple[str, str, torch.Tensor]], *, sigma: float, seed: int,
                 device: torch.device | str = "cpu"):
        self.images, self.sigma, self.seed, self.device = list(images), float(sigma), int(seed), torch.device(device)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, str, str]]:
        for set_name, name, clean in self.images:
            noisy = seeded_noisy(clean, self.sigma, seed=self.seed, name=name)
            yield noisy[None].to(self.device), clean[None].to(self.device), set_name, name


class DenoiseEvaluator:
    """PSNR, SSIM and MSE per image of an ImagePairLoader, averaged over all images and, for a
    test (`per_set`), per test set; the model runs on whole images, in tiles above `tile` pixels."""

    def __init__(self, *, sigma: float, with_ssim: bool = True, per_set: bool = False, tile: int | None = None):
        self.sigma, self.with_ssim, self.per_set, self.tile = float(sigma), with_ssim, per_set, tile
        self.keys: list[tuple[str, str]] = []
        self.rows: list[torch.Tensor] = []  # (mse, psnr, ssim, noisy psnr) per image, fetched at the end

    def update(self, model: nn.Module, batch: tuple) -> None:
        noisy, clean, set_name, name = batch
        estimate = _estimate(model, noisy, self.tile).to(clean.device)
        mse = (estimate - clean).pow(2).mean().double()
        estimate = estimate.clamp(0, 1)
        score = ssim(estimate, clean)[0] if self.with_ssim else mse.new_zeros(())
        self.keys.append((set_name, name))
        self.rows.append(torch.stack([mse, psnr(estimate, clean)[0], score, psnr(noisy, clean)[0]]))

    def results(self) -> list[ImageResult]:
        values = torch.stack(self.rows).tolist() if self.rows else []
        return [ImageResult(set_name, name, noisy_psnr, value, score if self.with_ssim else None, mse)
                for (set_name, name), (mse, value, score, noisy_psnr) in zip(self.keys, values)]

    def compute(self) -> dict[str, float]:
        results = self.results()
        metrics = _summarise(results, self.with_ssim)
        if self.per_set:
            for set_name, group in _by_set(results).items():
                metrics.update({f"{set_name}_{k}": v for k, v in _summarise(group, self.with_ssim).items()
                                if k != "mse"})
        return metrics

    def report(self) -> DenoiseSetsReport:
        return DenoiseSetsReport([DenoiseReport(name, self.sigma, group) for name, group in
                                  _by_set(self.results()).items()])


@dataclass
class DenoiseSetsReport:
    """The report of `cnnzoo eval` for a denoiser: one DenoiseReport per test set."""

    sets: list[DenoiseReport]

    def lines(self, per_image: bool = False) -> list[str]:
        return [report.format(per_image) for report in self.sets]

    def to_dict(self) -> dict:
        return {"sets": {r.set_name or "images": {"images": len(r.images), "sigma": r.sigma, "psnr": r.psnr,
                                                  "psnr_noisy": r.psnr_noisy, "ssim": r.ssim} for r in self.sets}}

    def summary_rows(self) -> list[dict]:
        """One row per test set, for `cnnzoo eval --format csv`."""
        return [{"set": name, **values} for name, values in self.to_dict()["sets"].items()]

    def write(self, out_dir: Path, evaluation: Any) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "metrics.json"
        path.write_text(json.dumps(dict(checkpoint=evaluation.checkpoint, model=evaluation.model,
                                        dataset=evaluation.dataset, metrics=evaluation.metrics, **self.to_dict()),
                                   indent=2) + "\n")
        return [path]


def _estimate(model: nn.Module, noisy: torch.Tensor, tile: int | None) -> torch.Tensor:
    if tile is None or max(noisy.shape[-2:]) <= tile:
        return model(noisy).float()
    return denoise(model, noisy, clip=False, tile=tile)


def _by_set(results: list[ImageResult]) -> dict[str, list[ImageResult]]:
    groups: dict[str, list[ImageResult]] = {}
    for r in results:
        groups.setdefault(r.set_name, []).append(r)
    return groups


def _summarise(results: list[ImageResult], with_ssim: bool) -> dict[str, float]:
    if not results:
        return {}
    n = len(results)
    metrics = {"psnr": sum(r.psnr for r in results) / n, "mse": sum(r.mse for r in results) / n}
    if with_ssim:
        metrics["ssim"] = sum(r.ssim for r in results) / n  # type: ignore[misc]
    return metrics


def score(model: nn.Module, loader: ImagePairLoader, evaluator: DenoiseEvaluator) -> DenoiseEvaluator:
    """Run `evaluator` over `loader` through the engine's one evaluation loop, in fp32 on the
    model's device (for weights that come without a training config)."""
    runtime = Runtime(next(model.parameters()).device, None, False)
    return run_evaluator(model, loader, evaluator, runtime, Progress("off"), "denoise")


def evaluate_denoiser(model: nn.Module, images: Sequence[tuple[str, torch.Tensor]], sigma: float, *,
                      seed: int = 0, with_ssim: bool = True, set_name: str = "",
                      tile: int | None = None) -> DenoiseReport:
    """Add seeded noise of level `sigma` to each clean image, denoise it, and score it: the
    evaluator of the training engine, on one set of images."""
    loader = ImagePairLoader([(set_name, name, clean) for name, clean in images], sigma=sigma, seed=seed,
                             device=next(model.parameters()).device)
    evaluator = score(model, loader, DenoiseEvaluator(sigma=sigma, with_ssim=with_ssim, tile=tile))
    return DenoiseReport(set_name, float(sigma), evaluator.results())
