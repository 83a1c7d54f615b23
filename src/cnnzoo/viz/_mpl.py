"""matplotlib, imported only when a picture is drawn, and always through the Agg canvas.

Why: cnnzoo must import, train and evaluate without matplotlib (an optional extra,
`cnnzoo[viz]`), and drawing must never need a display or change the backend of a user's
notebook. So nothing here touches `matplotlib.pyplot`: each figure is a bare
`matplotlib.figure.Figure` attached to its own `FigureCanvasAgg`, which selects the Agg backend
for that figure only and keeps no global state (no figure leaks, safe in threads).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CnnzooError

INSTALL_HINT = "pip install 'cnnzoo[viz]'  (or: pip install matplotlib)"
DPI = 100  # figure sizes below are in inches, so a 6.4 x 4.8 figure is a 640 x 480 PNG


class MatplotlibMissing(CnnzooError):
    """A plot was asked for but matplotlib is not installed."""


@dataclass
class Plot:
    """A PNG written by one of the viz functions: where, how large (pixels) and how many panels."""

    path: Path
    size: tuple[int, int]  # (width, height) in pixels
    panels: int  # axes that show data (not colour bars)


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def new_figure(width: float, height: float) -> Any:
    """A `Figure` of width x height inches on an Agg canvas; raises MatplotlibMissing without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing(f"drawing needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: str | Path, panels: int) -> Plot:
    """Write `fig` as a PNG of exactly its figure size (no tight bounding box, so sizes are predictable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # zlib level 1: a third faster to write than the default 6, for files about 10% larger
    fig.savefig(path, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})
    width, height = fig.canvas.get_width_height()
    return Plot(path=path, size=(int(width), int(height)), panels=panels)


def image_for_display(image: Any) -> Any:
    """A CHW image tensor/array (uint8 or float in [0, 1]) as HxW (grey) or HxWx3 floats in [0, 1]."""
    import numpy as np
    import torch

    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if array.max(initial=0) > 1.0 + 1e-6:
        array = array / 255.0
    array = np.clip(array, 0.0, 1.0)
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 3 and array.shape[0] >= 3:
        return np.transpose(array[:3], (1, 2, 0))
    if array.ndim == 3:  # two channels: show the first
        return array[0]
    return array


def show_image(ax: Any, image: Any, title: str | None = None, fontsize: float = 8) -> None:
    """An image without axes ticks; grey images in grey, not in a colour map."""
    shown = image_for_display(image)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def grid_layout(fig: Any, rows: int, title_in: float = 0.0, top_in: float = 0.4, pad_in: float = 0.05,
                wspace: float = 0.06) -> None:
    """Place a grid of image panels by arithmetic instead of `tight_layout` (which measures every
    tick and title and costs several times the drawing itself): `title_in` inches above each
    panel for its title, `top_in` for the figure's title."""
    width, height = fig.get_size_inches()
    available = height - top_in - title_in - 2 * pad_in
    panel = max((available - (rows - 1) * title_in) / rows, 1e-3)
    fig.subplots_adjust(left=pad_in / width, right=1 - pad_in / width, bottom=pad_in / height,
                        top=1 - (top_in + title_in) / height, wspace=wspace, hspace=title_in / panel)
