"""`cnnzoo eval CHECKPOINT`: evaluate a trained checkpoint, with optional test-time augmentation.

Dispatches on the checkpoint's task; each task's evaluation lives in EVALUATORS.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..engine.tta import TTA_MODES
from ..errors import CnnzooError
from .denoise import eval_checkpoint as eval_denoise
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint (top-1/top-5, per-class accuracy, confusion matrix, TTA)",
        description="Evaluate a checkpoint on its dataset's test split (or --data/--split). Writes "
                    "metrics.json, per_class.csv and confusion.csv to --out (default: next to the checkpoint).",
    )
    p.add_argument("checkpoint", help="a checkpoint written by `cnnzoo train` (best.pt, last.pt)")
    p.add_argument("--data", help="dataset name or path (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation")
    p.add_argument("--crop-size", type=int, help="10-crop side in pixels (default 7/8 of the image side)")
    p.add_argument("--scales", default="0.875,1,1.125", help="multi-scale factors, comma-separated")
    p.add_argument("--image-size", type=int, help="resize the evaluated images to this size first")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", help="refuse the checkpoint unless it holds this architecture")
    p.add_argument("--out", help="folder for the report files")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.inference import read_checkpoint

    ckpt = read_checkpoint(args.checkpoint, trust=args.trust_checkpoint, expect_model=args.model)
    task = ckpt.get("task", "classify")
    if task not in EVALUATORS:
        raise CnnzooError(f"{args.checkpoint}: no evaluation for task {task!r} (known: {', '.join(EVALUATORS)})")
    return EVALUATORS[task](args, ckpt)


def _scales(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CnnzooError(f"--scales: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CnnzooError(f"--scales: expected positive numbers, got {text!r}")
    return values


def eval_classify(args: argparse.Namespace, ckpt: dict) -> int:
    from ..engine.evaluate import evaluate_checkpoint

    suffix = "" if args.tta == "none" else f"-{args.tta}"
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}{suffix}"
    report = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, tta=args.tta,
                                 crop_size=args.crop_size, scales=_scales(args.scales), batch_size=args.batch_size,
                                 device=args.device, trust=args.trust_checkpoint, image_size=args.image_size,
                                 out_dir=out, ckpt=ckpt)
    print(f"checkpoint: {report.checkpoint} ({report.model})")
    print(f"data: {report.dataset}, {report.split} split, {report.images:,} images, TTA: {report.tta}")
    print(f"top-1 accuracy {100 * report.top1:.2f}%   top-5 accuracy {100 * report.top5:.2f}%   "
          f"loss {report.loss:.4f}")
    rows = [[name, f"{n:,}", f"{100 * acc:.2f}%"] for name, n, acc in report.per_class]
    print(format_table(["class", "images", "accuracy"], rows, right_align={1, 2}))
    print(f"wrote {', '.join(str(f) for f in report.files)}")
    return 0


# task name -> evaluation of (args, the checkpoint read from args.checkpoint); other tasks add theirs here.
EVALUATORS: dict[str, Callable[[argparse.Namespace, dict], int]] = {"classify": eval_classify, "denoise": eval_denoise}
