"""Deterministic whole-tensor transforms of uint8 image batches: resize, centre crop, normalise."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear resize of uint8 [N, C, H, W] so the shorter side is `size`, then centre crop to square.

    Antialiased when shrinking (like Pillow), computed in float32 chunk by chunk, rounded back.
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    out_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    parts = [F.interpolate(images[i:i + chunk].float(), size=out_hw, mode="bilinear", align_corners=False,
                           antialias=scale < 1).round_().clamp_(0, 255).to(torch.uint8)
             for i in range(0, images.shape[0], chunk)]
    return center_crop(torch.cat(parts), size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size].contiguous()


_STATS_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _stats(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel offset and scale in 0..255 units, built once per device (no copy per batch)."""
    key = (tuple(mean), tuple(std), str(device))
    if key not in _STATS_CACHE:
        m = torch.tensor([v * 255 for v in mean], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor([1 / (v * 255) for v in std], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        _STATS_CACHE[key] = (m, s)
    return _STATS_CACHE[key]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or float in 0..255) images to float32 `(x / 255 - mean) / std`, memory format kept."""
    m, s = _stats(mean, std, images.device)
    if len(mean) not in (1, images.shape[1]):
        raise ValueError(f"{len(mean)} mean values for {images.shape[1]}-channel images")
    return (images.to(torch.float32) - m) * s
