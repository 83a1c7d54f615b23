"""Kernels and features: the first layer's filters as an image grid (Krizhevsky et al. 2012,
Fig. 3), the feature maps of a named layer, and a health report of depthwise kernels.

Why the depthwise report: the MobileNet papers (Howard et al. 2017; Sandler et al. 2018,
"MobileNetV2", arXiv 1801.04381, which motivates the linear bottleneck) and the articles
about them note that after training many depthwise kernels are dead — all (near) zero, their
channel stuck behind a ReLU or decayed away by weight decay, because a 3x3 depthwise kernel has
only 9 weights and one input channel to live on. Counting them per layer shows it.

Near-zero, as counted here: a depthwise kernel (one output channel's k x k weights) whose
largest absolute weight is below `threshold` (default 1e-2, i.e. 1%) times the largest
absolute weight of any kernel in the same layer. Relative to the layer, so it does not depend
on a layer's scale; the BatchNorm after the convolution is not folded in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import CnnzooError
from ._mpl import Plot, grid_layout, new_figure, save, show_image

NEAR_ZERO = 1e-2  # relative to the layer's largest kernel; see the module docstring
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.Tanh, nn.Sigmoid)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first nn.Conv2d in registration order (the layer that sees the pixels)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CnnzooError(f"{type(model).__name__} has no nn.Conv2d layer")


def plot_first_layer_kernels(model: nn.Module, out: str | Path, max_kernels: int = 96) -> Plot:
    """The first convolution's kernels as a grid: RGB for 3-channel input (each kernel stretched to
    [0, 1] on its own, as in the AlexNet figure), grey for any other (the mean over input channels)."""
    name, conv = first_conv(model)
    weight = conv.weight.detach().float().cpu()[:max_kernels]
    kernels = weight if weight.shape[1] == 3 else weight.mean(dim=1, keepdim=True)
    low = kernels.flatten(1).amin(dim=1)[:, None, None, None]
    high = kernels.flatten(1).amax(dim=1)[:, None, None, None]
    kernels = (kernels - low) / (high - low).clamp(min=1e-12)
    columns = min(12, kernels.shape[0])
    rows = math.ceil(kernels.shape[0] / columns)
    fig = new_figure(0.75 * columns + 0.3, 0.75 * rows + 0.7)
    for index, kernel in enumerate(kernels):
        show_image(fig.add_subplot(rows, columns, index + 1), kernel)
    k = conv.kernel_size
    fig.suptitle(f"{name}: {conv.out_channels} kernels of {conv.in_channels}x{k[0]}x{k[1]}"
                 f"{' (first ' + str(max_kernels) + ')' if conv.out_channels > max_kernels else ''}", fontsize=9)
    grid_layout(fig, rows, top_in=0.35)
    return save(fig, out, panels=kernels.shape[0])


def feature_maps(model: nn.Module, image: torch.Tensor, layer: str) -> torch.Tensor:
    """The output [C, H, W] of module `layer` for one normalised image [C, H, W] (eval mode)."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise CnnzooError(f"no layer named {layer!r} in {type(model).__name__}; `cnnzoo summary` lists the names") from None
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()) if isinstance(o, torch.Tensor) else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        handle.remove()
        model.train(was_training)
    if not kept or kept[0].dim() != 4:
        raise CnnzooError(f"layer {layer!r} gives no 4-D feature map for this image")
    return kept[0][0].float().cpu()


def plot_feature_maps(maps: torch.Tensor, out: str | Path, title: str = "", max_maps: int = 64) -> Plot:
    """The channels of a feature map [C, H, W] as a grid, each stretched to its own range."""
    maps = maps[:max_maps]
    columns = min(8, maps.shape[0])
    rows = math.ceil(maps.shape[0] / columns)
    fig = new_figure(1.2 * columns + 0.3, 1.25 * rows + 0.6)
    for index, channel in enumerate(maps):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(channel.numpy(), cmap="viridis", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(index), fontsize=6)
    fig.suptitle(title, fontsize=9)
    grid_layout(fig, rows, title_in=0.15, top_in=0.35)
    return save(fig, out, panels=maps.shape[0])


# ------------------------------------------------------------------------------ depthwise health


@dataclass
class DepthwiseLayer:
    """Near-zero kernels of one depthwise convolution (see the module docstring for the definition)."""

    name: str
    kernels: int
    near_zero: int
    kernel_size: tuple[int, int]

    @property
    def fraction(self) -> float:
        return self.near_zero / max(self.kernels, 1)


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def depthwise_health(model: nn.Module, threshold: float = NEAR_ZERO) -> list[DepthwiseLayer]:
    """Per depthwise layer: how many kernels have max |w| < threshold x the layer's largest max |w|."""
    layers = []
    for name, module in model.named_modules():
        if is_depthwise(module):
            peak = module.weight.detach().abs().flatten(1).amax(dim=1).float().cpu()
            near_zero = int((peak < threshold * float(peak.max())).sum()) if float(peak.max()) > 0 else len(peak)
            layers.append(DepthwiseLayer(name, len(peak), near_zero, tuple(module.kernel_size)))
    return layers


@dataclass
class Table:
    """Rows of text for a table (the CLI prints it, the report renders it); `note` says how to read it."""

    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _near_zero_note(threshold: float) -> str:
    return (f"near-zero: a kernel whose largest |weight| is below {threshold:g} x the largest |weight| "
            "of any kernel in its layer")


def depthwise_table(layers: Sequence[DepthwiseLayer], threshold: float = NEAR_ZERO) -> Table:
    rows = [[l.name, "x".join(map(str, l.kernel_size)), str(l.kernels), str(l.near_zero), f"{100 * l.fraction:.1f}%"]
            for l in layers]
    total, dead = sum(l.kernels for l in layers), sum(l.near_zero for l in layers)
    rows.append(["total", "", str(total), str(dead), f"{100 * dead / max(total, 1):.1f}%"])
    return Table(["Layer", "Kernel", "Kernels", "Near-zero", "Fraction"], rows, _near_zero_note(threshold))


def plot_depthwise_health(layers: Sequence[DepthwiseLayer], out: str | Path, title: str = "",
                          threshold: float = NEAR_ZERO) -> Plot:
    """A bar per depthwise layer: the percentage of near-zero kernels."""
    fig = new_figure(min(max(5.0, 0.3 * len(layers) + 2.0), 16.0), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(layers)), [100 * l.fraction for l in layers], color="C3")
    ax.set_xticks(range(len(layers)), labels=[l.name for l in layers], rotation=90, fontsize=6)
    ax.set_ylabel("near-zero kernels (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title + ': ' if title else ''}depthwise kernels with max|w| < {threshold:g} x the layer's "
                 "largest", fontsize=9)
    fig.tight_layout()
    return save(fig, out, panels=1)


def activation_names(model: nn.Module) -> str:
    """The activation types a model uses, e.g. 'ReLU6' or 'Hardswish, ReLU'."""
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, ACTIVATIONS)})
    return ", ".join(found) or "none"


def compare_depthwise(models: Mapping[str, nn.Module], threshold: float = NEAR_ZERO) -> Table:
    """One table for several models (e.g. ReLU vs ReLU6 vs linear-bottleneck variants): their
    activations, depthwise kernels, near-zero kernels and the worst layer."""
    rows = []
    for label, model in models.items():
        layers = depthwise_health(model, threshold)
        total, dead = sum(l.kernels for l in layers), sum(l.near_zero for l in layers)
        worst = max(layers, key=lambda l: l.fraction, default=None)
        rows.append([label, activation_names(model), str(len(layers)), str(total), str(dead),
                     f"{100 * dead / max(total, 1):.1f}%",
                     f"{worst.name} {100 * worst.fraction:.0f}%" if worst else "-"])
    header = ["Model", "Activations", "DW layers", "Kernels", "Near-zero", "Fraction", "Worst layer"]
    return Table(header, rows, _near_zero_note(threshold))
