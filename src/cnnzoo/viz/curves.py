"""Accuracy against time for several implementations side by side (the time-to-accuracy benchmark)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ._mpl import Plot, new_figure, save


def plot_accuracy_vs_time(series: Mapping[str, Mapping[str, Sequence[float]]], out: str | Path, *,
                          title: str = "") -> Plot:
    """Two panels, test accuracy (%) against wall seconds and against CPU seconds, one line per
    entry of `series` (label -> {"wall": [...], "cpu": [...], "acc": [... in 0..1]})."""
    fig = new_figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, clock in zip(axes, ("wall", "cpu")):
        for label, points in series.items():
            order = sorted(range(len(points["acc"])), key=lambda i: points[clock][i])
            ax.plot([points[clock][i] for i in order], [100 * points["acc"][i] for i in order], marker="o",
                    label=label)
        ax.set_xlabel(f"{clock} time (s)" if clock == "wall" else "CPU time (s, all threads)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out, panels=2)
