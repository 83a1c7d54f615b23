"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", arXiv 1610.02391): where a classifier looks.

The class score's gradient with respect to a convolutional feature map, averaged over the
map's positions, weighs each channel; the ReLU of the weighted sum of the channels is the map,
upsampled to the image. Why here: it works for every classifier in the zoo without changing
the model — forward hooks find and keep the feature map, a gradient hook on it keeps the
gradient. The model runs in eval mode (no auxiliary heads, BatchNorm on running statistics).

Target layer, when none is named: the last module, in execution order, whose output is a
4-D map larger than 1x1 (for a ResNet the last stage; for LeNet-5 on 32x32 the 5x5 map of S4);
if every 4-D output is 1x1 (a deep model on a tiny image), the last 4-D output, which then
gives a flat map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnzooError
from ._mpl import Plot, grid_layout, new_figure, save, show_image


@dataclass
class GradCAM:
    """Grad-CAM of a batch: `maps` [N, H, W] in [0, 1] at the input's size, and what they explain."""

    maps: torch.Tensor
    layer: str  # the module the maps come from (a `model.named_modules()` name)
    layer_size: tuple[int, int]  # that module's spatial output size
    targets: list[int]  # the class explained per image (the top-1 prediction unless given)
    probs: torch.Tensor  # [N, classes] softmax of the logits
    classes: list[str]

    def top(self, index: int, k: int = 3) -> list[tuple[str, float]]:
        values, indices = self.probs[index].topk(min(k, self.probs.shape[1]))
        return [(self.classes[j], float(p)) for p, j in zip(values.tolist(), indices.tolist())]


def spatial_layers(model: nn.Module, image: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every module with a 4-D tensor output, in the order they finish."""
    found: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                found.append((name, tuple(output.shape)))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(image[:1])
    finally:
        for h in handles:
            h.remove()
    return found


def default_target_layer(model: nn.Module, image: torch.Tensor) -> str:
    """The last module whose output is a map larger than 1x1 (else the last 4-D output)."""
    layers = spatial_layers(model, image)
    if not layers:
        raise CnnzooError(f"{type(model).__name__} has no module with a 4-D (N, C, H, W) output to explain")
    spatial = [name for name, shape in layers if shape[2] > 1 or shape[3] > 1]
    return spatial[-1] if spatial else layers[-1][0]


def gradcam(model: nn.Module, images: torch.Tensor, target_layer: str | None = None,
            classes: Sequence[str] | None = None, targets: Sequence[int] | None = None) -> GradCAM:
    """Grad-CAM maps for a normalised batch [N, C, H, W]; `targets`: class indices (default: top-1)."""
    was_training = model.training
    model.eval()
    try:
        layer = target_layer or default_target_layer(model, images)
        return _gradcam(model, images, layer, classes, targets)
    finally:
        model.train(was_training)


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CnnzooError(f"no layer named {name!r} in {type(model).__name__}; `cnnzoo summary` lists the names") from None


def _gradcam(model: nn.Module, images: torch.Tensor, layer: str, classes: Sequence[str] | None,
             targets: Sequence[int] | None) -> GradCAM:
    kept: dict[str, torch.Tensor] = {}

    def keep_output(module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise CnnzooError(f"layer {layer!r} outputs {_describe(output)}, not a 4-D feature map; "
                              "choose a convolutional layer")
        # detached: `kept` is reached from the hook on `output`, so keeping `output` itself would make a
        # cycle through its autograd graph that the garbage collector never frees (every activation)
        kept["activation"] = output.detach()
        output.register_hook(lambda grad: kept.__setitem__("gradient", grad))
        # Later in-place operations (ReLU(inplace=True)) must not change the map we keep.
        return output.clone()

    handle = _module(model, layer).register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # a graph even when every weight is frozen
            logits = model(x)
            logits = getattr(logits, "logits", logits).float()
            chosen = list(targets) if targets is not None else logits.argmax(dim=1).tolist()
            score = logits.gather(1, torch.tensor(chosen, device=logits.device)[:, None]).sum()
            model.zero_grad(set_to_none=True)
            score.backward()
    finally:
        handle.remove()
    activation, gradient = kept["activation"].detach().float(), kept["gradient"].float()
    maps = _weighted_maps(activation, gradient, tuple(images.shape[-2:]))
    names = list(classes) if classes is not None else [str(i) for i in range(logits.shape[1])]
    return GradCAM(maps=maps.cpu(), layer=layer, layer_size=tuple(activation.shape[-2:]), targets=chosen,
                   probs=logits.detach().softmax(dim=1).cpu(), classes=names)


def _describe(output: Any) -> str:
    return f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__


def _weighted_maps(activation: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return torch.nan_to_num(cam / peak, nan=0.0, posinf=0.0).clamp(0.0, 1.0)


def plot_gradcam(image: torch.Tensor, cam: GradCAM, index: int, out: str | Path, topk: int = 3,
                 title: str = "") -> Plot:
    """Two panels: the image (uint8 or [0,1] CHW) with its top classes, and the map overlaid on it."""
    fig = new_figure(6.4, 3.6)
    left = fig.add_subplot(1, 2, 1)
    top = ", ".join(f"{name} {100 * p:.1f}%" for name, p in cam.top(index, topk))
    show_image(left, image, f"{title}\n{top}" if title else top, fontsize=8)
    right = fig.add_subplot(1, 2, 2)
    show_image(right, image)
    right.imshow(cam.maps[index].numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    right.set_title(f"Grad-CAM for '{cam.classes[cam.targets[index]]}'\nlayer {cam.layer} "
                    f"({cam.layer_size[0]}x{cam.layer_size[1]})", fontsize=8)
    grid_layout(fig, 1, title_in=0.45, top_in=0.05)
    return save(fig, out, panels=2)


def plot_gradcam_grid(images: torch.Tensor, cam: GradCAM, out: str | Path, titles: Sequence[str] | None = None,
                      columns: int = 4) -> Plot:
    """Several images in one PNG, each as an image + overlay pair; `titles` e.g. 'true 3'."""
    n = images.shape[0]
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = new_figure(3.0 * columns, 1.8 * rows + 0.4)
    for index in range(n):
        name, p = cam.top(index, 1)[0]
        top = f"predicted {name} ({100 * p:.0f}%)"
        ax = fig.add_subplot(rows, 2 * columns, 2 * index + 1)
        show_image(ax, images[index], f"{titles[index]}\n{top}" if titles else top, fontsize=7)
        ax = fig.add_subplot(rows, 2 * columns, 2 * index + 2)
        show_image(ax, images[index], f"Grad-CAM: {cam.classes[cam.targets[index]]}", fontsize=7)
        ax.imshow(cam.maps[index].numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    fig.suptitle(f"Grad-CAM of the predicted class at layer {cam.layer} ({cam.layer_size[0]}x{cam.layer_size[1]})",
                 fontsize=9)
    grid_layout(fig, rows, title_in=0.32, top_in=0.3)
    return save(fig, out, panels=2 * n)
