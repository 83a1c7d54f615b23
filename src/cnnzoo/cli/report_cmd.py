"""`cnnzoo report RUN_DIR`: (re)build RUN_DIR/report.html and the PNGs under RUN_DIR/plots.

Why a command: runs trained without matplotlib, or before this existed, get their pictures
afterwards. It re-evaluates best.pt on the test split for the confusion matrix, the gallery
of mistakes and Grad-CAM (the test metrics shown are the run's own, from test_metrics.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write a run's self-contained report.html (and its PNG plots)",
                              description="Curves, test metrics, confusion matrix, mistakes, Grad-CAM, model summary "
                                          "and config of a run, in one HTML file with the images embedded.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..viz.report import write_report_files
    from ..viz.run_end import report_inputs

    started = time.perf_counter()
    files = write_report_files(report_inputs(args.run_dir, read_data=True))
    for path in files[:-1]:
        print(f"plot: {path}")
    print(f"report: {files[-1]}  ({time.perf_counter() - started:.1f} s)")
    return 0
