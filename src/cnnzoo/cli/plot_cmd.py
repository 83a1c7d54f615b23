"""`cnnzoo plot RUN_DIR [RUN_DIR ...] [-o OUT]`: the training curves of one or more runs in one PNG.

Why: comparing recipes or architectures means putting their curves on the same axes; the
runs' metrics.csv files are all it needs, so it works on finished, interrupted and running runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._text import count


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="training curves of one or more runs (overlaid) as a PNG",
                              description="Loss, accuracy (or PSNR/SSIM), learning rate and images/s per epoch, "
                                          "from each run's metrics.csv, with best.pt's epoch marked.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=Path)
    p.add_argument("-o", "--out", type=Path, metavar="OUT",
                   help="the PNG to write (default: RUN_DIR/plots/curves.png for one run, curves.png for several)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..viz import plot_run

    default = args.run_dirs[0] / "plots" / "curves.png" if len(args.run_dirs) == 1 else Path("curves.png")
    plot = plot_run(args.run_dirs, args.out or default)
    print(f"wrote {plot.path} ({count(plot.panels, 'panel')}, {count(len(args.run_dirs), 'run')})")
    return 0
