"""Patch-whitening initialisation of a first convolution (Jordan 2024, "94% on CIFAR-10 in 3.29
Seconds on a Single GPU", arXiv 2404.00498, after tysam-code's hlb-CIFAR10 and Page's DAWNBench
network).

The first layer of a small network spends much of its early training learning to decorrelate
neighbouring pixels. Patch whitening does that from the data in one shot: take every k x k patch
of a few thousand training images, estimate their (uncentred) second-moment matrix, and set the
filters to its eigenvectors divided by sqrt(eigenvalue + eps), each with its negative (so that a
following ReLU/GELU keeps both signs). A convolution with these filters maps the patches to
coordinates of unit variance that are uncorrelated; the paper then freezes the filters.

For a convolution with fewer than 2 x (in_chans x k x k) filters the leading principal directions
are used (largest eigenvalues first); filters beyond twice the patch dimension keep their values.
"""

from __future__ import annotations

import torch
from torch import nn


def image_patches(images: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Every kernel-sized patch of a float batch [N, C, H, W] (stride 1, no padding), as [P, C*kh*kw]."""
    kh, kw = kernel_size
    c = images.shape[1]
    patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)


def whitening_filters(images: torch.Tensor, kernel_size: tuple[int, int], eps: float = 5e-4) -> torch.Tensor:
    """[D, C, kh, kw] filters, D = C*kh*kw, that whiten the patches of `images`: principal directions,
    largest first, each scaled by 1/sqrt(eigenvalue + eps)."""
    patches = image_patches(images, kernel_size).double()
    moment = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending
    order = eigenvalues.flip(0), eigenvectors.flip(1)
    scaled = order[1] / (order[0].clamp_min(0) + eps).sqrt()
    return scaled.T.reshape(-1, images.shape[1], *kernel_size).float()


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> int:
    """Set `conv`'s filters to the whitening filters of `images` and their negatives; returns how
    many principal directions were used. The bias, if any, is zeroed (a whitened patch has no offset)."""
    if conv.groups != 1 or images.shape[1] != conv.in_channels:
        raise ValueError(f"patch whitening needs a dense convolution over the images' {images.shape[1]} channels; "
                         f"got in_channels={conv.in_channels}, groups={conv.groups}")
    filters = whitening_filters(images, conv.kernel_size, eps)
    used = min(conv.out_channels // 2, filters.shape[0])
    weight = conv.weight
    weight[:used] = filters[:used].to(weight)
    weight[used:2 * used] = -filters[:used].to(weight)
    if conv.bias is not None:
        conv.bias.zero_()
    return used


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d registered in `model` (the one that sees the images in every cnnzoo model)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d to whiten")
