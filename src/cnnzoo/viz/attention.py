"""What the attention blocks do: BAM/CBAM spatial maps per stage, SE/GE channel excitations
(the SE paper's per-stage plots, Hu et al. 2018, Fig. 6), SK branch weights.

Why: every module in cnnzoo.layers.attention keeps its last map in `last_map`; one eval-mode
forward pass fills them, and this module sorts them into stages and draws them. A "stage" is
a run of attention modules that see features of the same shape (channels, height, width) — in
the residual networks exactly the blocks of one stage; the last module of each stage is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ._mpl import Plot, grid_layout, new_figure, save, show_image


@dataclass
class AttentionMap:
    """The map one attention module recorded for a batch.

    kind: "spatial" (maps [N, H, W], BAM and GE averaged over channels), "channel"
    (excitations [N, C], SE, CBAM's channel part, global GE) or "branch" (SK: [N, branches, C]).
    """

    name: str
    module: str  # the module's class name
    kind: str
    values: torch.Tensor
    feature_shape: tuple[int, int, int]  # (C, H, W) of the features the module attends over


def _kind_and_values(last_map: torch.Tensor) -> tuple[str, torch.Tensor]:
    if last_map.dim() == 5:  # SK: [N, branches, C, 1, 1]
        return "branch", last_map.flatten(2).float()
    if last_map.shape[-2:] == (1, 1):
        return "channel", last_map.flatten(1).float()
    return "spatial", last_map.float().mean(dim=1)


def attention_maps(model: nn.Module, images: torch.Tensor) -> list[AttentionMap]:
    """Run `images` (normalised) through `model` in eval mode and collect every recorded attention map.

    Only modules that store `last_map` themselves are read (CBAM's own `last_map` is a view of
    its spatial part, which is read as a module of its own).
    """
    modules = [(n, m) for n, m in model.named_modules() if "last_map" in vars(m)]
    shapes: dict[str, tuple[int, int, int]] = {}
    handles = [m.register_forward_pre_hook(_record_input_shape(shapes, n)) for n, m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    found = []
    for name, module in modules:
        if isinstance(module.last_map, torch.Tensor) and name in shapes:
            kind, values = _kind_and_values(module.last_map.cpu())
            found.append(AttentionMap(name, type(module).__name__, kind, values, shapes[name]))
    return found


def _record_input_shape(shapes: dict, name: str):
    def hook(module, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4:
            shapes[name] = tuple(inputs[0].shape[1:])
    return hook


def last_per_stage(maps: Sequence[AttentionMap], kind: str) -> list[AttentionMap]:
    """Of the maps of `kind`, the last one of each stage (consecutive modules on same-shaped features)."""
    chosen: list[AttentionMap] = []
    for item in (m for m in maps if m.kind == kind):
        if chosen and chosen[-1].feature_shape == item.feature_shape:
            chosen[-1] = item
        else:
            chosen.append(item)
    return chosen


def _stage_label(item: AttentionMap) -> str:
    c, h, w = item.feature_shape
    return f"{item.name}\n{c} ch, {h}x{w}"


def plot_spatial_attention(images: torch.Tensor, maps: Sequence[AttentionMap], out: str | Path,
                           labels: Sequence[str] | None = None) -> Plot:
    """Rows: images (uint8 or [0,1] CHW); columns: the image, then each stage's spatial map over it."""
    stages = last_per_stage(maps, "spatial")
    n, cols = images.shape[0], 1 + len(stages)
    fig = new_figure(2.1 * cols, 2.3 * n + 0.3)
    for row in range(n):
        ax = fig.add_subplot(n, cols, row * cols + 1)
        show_image(ax, images[row], labels[row] if labels else None)
        for col, stage in enumerate(stages):
            ax = fig.add_subplot(n, cols, row * cols + col + 2)
            show_image(ax, images[row])
            extent = (-0.5, images.shape[-1] - 0.5, images.shape[-2] - 0.5, -0.5)
            ax.imshow(stage.values[row].numpy(), cmap="jet", alpha=0.5, extent=extent, interpolation="nearest")
            if row == 0:
                ax.set_title(_stage_label(stage), fontsize=7)
    fig.suptitle("spatial attention, last module of each stage (red: attended)", fontsize=9)
    grid_layout(fig, n, title_in=0.32, top_in=0.3)
    return save(fig, out, panels=n * cols)


def plot_channel_excitation(maps: Sequence[AttentionMap], out: str | Path, labels: Sequence[str]) -> Plot:
    """One panel per stage: the excitation of every channel, one line per group of images with the
    same label (their mean), as in the SE paper's Fig. 6."""
    stages = last_per_stage(maps, "channel")
    cols = min(len(stages), 3) or 1
    rows = max(1, math.ceil(len(stages) / cols))
    fig = new_figure(4.2 * cols, 3.0 * rows + 0.4)
    groups = sorted(set(labels), key=list(labels).index)
    for index, stage in enumerate(stages):
        ax = fig.add_subplot(rows, cols, index + 1)
        for group in groups:
            rows_of_group = [i for i, label in enumerate(labels) if label == group]
            ax.plot(stage.values[rows_of_group].mean(dim=0).numpy(), linewidth=0.8, label=group)
        ax.set_ylim(0, 1.02)
        ax.set_title(_stage_label(stage).replace("\n", "  "), fontsize=8)
        ax.set_xlabel("channel")
        ax.set_ylabel("excitation")
        if len(groups) <= 10:
            ax.legend(fontsize=6)
    fig.suptitle("channel excitation (sigmoid gate) of the last attention module of each stage", fontsize=9)
    fig.tight_layout()
    return save(fig, out, panels=len(stages))


def plot_branch_weights(maps: Sequence[AttentionMap], out: str | Path) -> Plot:
    """SK: for each stage, the mean softmax weight of each branch (3x3, dilated 3x3 = 5x5 field ...)."""
    stages = last_per_stage(maps, "branch")
    fig = new_figure(max(4.0, 1.2 * len(stages) + 2.0), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    branches = stages[0].values.shape[1] if stages else 0
    width = 0.8 / max(branches, 1)
    for b in range(branches):
        means = [float(s.values[:, b].mean()) for s in stages]
        ax.bar([i + b * width for i in range(len(stages))], means, width, label=f"branch {b} (dilation {b + 1})")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))], labels=[s.name for s in stages], fontsize=7)
    ax.set_ylabel("mean selection weight")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("selective kernel: weight given to each branch, per stage", fontsize=9)
    fig.tight_layout()
    return save(fig, out, panels=1)


def plot_attention(model: nn.Module, images: torch.Tensor, shown: torch.Tensor, out_dir: str | Path,
                   labels: Sequence[str]) -> list[Plot]:
    """Every attention picture the model supports, into `out_dir`: attention_spatial.png,
    attention_channel.png, attention_branch.png. `images`: normalised input; `shown`: the same
    images for display (uint8 CHW); `labels`: a name per image (e.g. its predicted class)."""
    maps = attention_maps(model, images)
    out_dir = Path(out_dir)
    plots = []
    if any(m.kind == "spatial" for m in maps):
        plots.append(plot_spatial_attention(shown, maps, out_dir / "attention_spatial.png", labels))
    if any(m.kind == "channel" for m in maps):
        plots.append(plot_channel_excitation(maps, out_dir / "attention_channel.png", labels))
    if any(m.kind == "branch" for m in maps):
        plots.append(plot_branch_weights(maps, out_dir / "attention_branch.png"))
    return plots
