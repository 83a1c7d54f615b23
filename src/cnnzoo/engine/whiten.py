"""Patch whitening of a model's first convolution as a training option (`model.whiten_images`).

The filters come from the training data (cnnzoo.layers.whitening; airbench, Jordan 2024, arXiv
2404.00498), are set once when a run starts and stay frozen; the convolution's bias trains for
the first `model.whiten_bias_epochs` epochs only (airbench: 3), then stops. A task computes the
filters from its own images (`whiten_first_conv`); the trainer freezes them in every run, fresh
or resumed, so the optimiser sees the same parameters either way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.whitening import first_conv, whiten_conv_
from .config import Config


def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float) -> str:
    """Whiten `model`'s first convolution from normalised float `images`; returns a line saying so."""
    conv = first_conv(model)
    used = whiten_conv_(conv, images, eps)
    k = "x".join(map(str, conv.kernel_size))
    return (f"first convolution whitened from the {k} patches of {len(images):,} training images "
            f"({used} principal directions and their negatives; frozen)")


def freeze_whitened(model: nn.Module, cfg: Config) -> None:
    """Keep the whitened filters fixed (a no-op without model.whiten_images)."""
    if cfg.model.whiten_images:
        first_conv(model).weight.requires_grad_(False)


def train_whitening_bias(model: nn.Module, cfg: Config, epoch: int) -> None:
    """The whitened conv's bias trains in epochs before model.whiten_bias_epochs (0-based `epoch`)."""
    m = cfg.model
    bias = first_conv(model).bias if m.whiten_images else None
    if bias is not None and m.whiten_bias_epochs is not None:
        bias.requires_grad_(epoch < m.whiten_bias_epochs)
