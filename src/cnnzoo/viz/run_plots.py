"""Training curves of one or several run directories, read from their metrics.csv.

Why: every run already writes one row per epoch (loss, accuracy or PSNR/SSIM, learning rate,
throughput); a student learns more from the shape of those curves — where validation stops
improving, what the schedule did, where best.pt came from — than from the numbers. Several
runs are drawn on the same axes (one colour per run, train dashed, validation solid) so
recipes and architectures can be compared.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._text import count
from ._mpl import Plot, new_figure, save

# (panel title, y label, metrics.csv columns drawn in it); a panel is drawn when any run has any of its columns.
PANELS = (
    ("loss", "loss", ("train_loss", "val_loss")),
    ("accuracy", "accuracy (%)", ("train_acc", "val_acc")),
    ("PSNR", "PSNR (dB)", ("train_psnr", "val_psnr")),
    ("SSIM", "SSIM", ("val_ssim",)),
    ("learning rate", "learning rate", ("lr",)),
    ("throughput", "training images/s", ("images_per_s",)),
)
PERCENT = ("train_acc", "val_acc")
# Validation metric that chose best.pt when test_metrics.json does not say (classification, denoising).
MONITORED = ("val_acc", "val_psnr")


@dataclass
class RunHistory:
    """The epochs of one run: its name, metrics.csv as columns, and the epoch best.pt came from."""

    name: str
    columns: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_metric: str | None = None

    @property
    def epochs(self) -> list[float]:
        return self.columns.get("epoch", [])


def read_history(run_dir: str | Path) -> RunHistory:
    """metrics.csv of `run_dir` (missing values as NaN) and the best epoch (from test_metrics.json, else the csv)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.is_file():
        from ..errors import CnnzooError

        raise CnnzooError(f"{run_dir} has no metrics.csv; give a run directory written by `cnnzoo train`")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = list(rows[0]) if rows else []
    columns = {name: [_number(row.get(name)) for row in rows] for name in names}
    history = RunHistory(name=run_dir.resolve().name, columns=columns)
    history.best_epoch, history.best_metric = _best_epoch(run_dir, columns)
    return history


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _best_epoch(run_dir: Path, columns: dict[str, list[float]]) -> tuple[int | None, str | None]:
    try:
        chosen = json.loads((run_dir / "test_metrics.json").read_text())
        if chosen.get("checkpoint") == "best.pt" and chosen.get("selected_by"):
            return int(chosen["epoch"]), chosen["selected_by"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for metric in MONITORED:
        values = [v for v in columns.get(metric, []) if not math.isnan(v)]
        if values:
            index = columns[metric].index(max(values))
            return int(columns["epoch"][index]), metric
    return None, None


def plot_run(run_dirs: str | Path | Sequence[str | Path], out: str | Path) -> Plot:
    """One PNG of the curves of one or more runs; returns it with its panel count."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    return plot_histories([read_history(d) for d in run_dirs], out)


def plot_histories(histories: Sequence[RunHistory], out: str | Path) -> Plot:
    fig, panels = curves_figure(histories)
    return save(fig, out, panels)


def curves_figure(histories: Sequence[RunHistory]) -> tuple[Any, int]:
    """The figure of `plot_histories`, not yet saved, and its number of panels."""
    panels = [p for p in PANELS if any(col in h.columns for h in histories for col in p[2])]
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(5.5 * cols, 3.4 * rows + 0.4)  # first: says how to install matplotlib when it is missing
    from matplotlib.ticker import MaxNLocator

    colours = [f"C{i % 10}" for i in range(len(histories))]
    for index, (title, ylabel, columns) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, index + 1)
        for history, colour in zip(histories, colours):
            _draw_columns(ax, history, columns, colour, label_run=len(histories) > 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(_title(histories), fontsize=11)
    _layout(fig, rows, cols)
    return fig, len(panels)


def _layout(fig, rows: int, cols: int) -> None:
    """Margins in inches (tick labels, axis labels, titles), cheaper than tight_layout."""
    width, height = fig.get_size_inches()
    left, right, bottom, top, gap_x, gap_y = 0.8, 0.2, 0.55, 0.6, 0.9, 0.85
    panel_w = (width - left - right - (cols - 1) * gap_x) / cols
    panel_h = (height - bottom - top - (rows - 1) * gap_y) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap_x / panel_w, hspace=gap_y / panel_h)


def _title(histories: Sequence[RunHistory]) -> str:
    if len(histories) == 1:
        h = histories[0]
        best = f"  (best.pt: epoch {h.best_epoch}, on {h.best_metric})" if h.best_epoch else ""
        return f"{h.name}{best}"
    return f"{count(len(histories), 'run')} compared (train dashed, validation solid; o: best.pt's epoch)"


def _draw_columns(ax, history: RunHistory, columns: Sequence[str], colour: str, label_run: bool) -> None:
    epochs = history.epochs
    for column in columns:
        if column not in history.columns:
            continue
        scale = 100.0 if column in PERCENT else 1.0
        values = [v * scale for v in history.columns[column]]
        style = "--" if column.startswith("train_") else "-"
        label = f"{history.name}: {column}" if label_run else column
        ax.plot(epochs, values, style, color=colour, label=label, marker="." if len(epochs) < 30 else None)
        if history.best_epoch is not None and column.startswith("val_") and history.best_epoch in epochs:
            i = epochs.index(history.best_epoch)
            ax.plot([epochs[i]], [values[i]], "o", color=colour, markersize=9, markerfacecolor="none",
                    markeredgewidth=2)
    if history.best_epoch is not None and not label_run:
        ax.axvline(history.best_epoch, color="grey", linestyle=":", linewidth=1,
                   label=f"best epoch {history.best_epoch}")
