"""`cnnzoo eval CHECKPOINT`: evaluate a trained checkpoint, with optional test-time augmentation.

The evaluation is the task's own (cnnzoo.engine.evaluate.evaluate_checkpoint), the one the
run's final test used; this module only parses the arguments and prints the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.tta import TTA_MODES
from ..errors import CnnzooError
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint (top-1/top-5, per-class accuracy, confusion matrix, TTA)",
        description="Evaluate a checkpoint on its dataset's test split (or --data/--split) with the evaluation "
                    "its run's final test used, so the numbers agree. Writes metrics.json (and for classifiers "
                    "per_class.csv and confusion.csv) to --out (default: next to the checkpoint).",
    )
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by `cnnzoo train` (best.pt, last.pt)")
    p.add_argument("--weights", metavar="TAG_OR_FILE",
                   help="instead of a checkpoint: published weights (a tag from `cnnzoo weights list` or a file such "
                        "as akamaster's .th) for --model, with their preprocessing and class names; needs --data")
    p.add_argument("--data", help="dataset name or path (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation (default: the run's eval.tta); dense, "
                                                    "crop144 and dense_multicrop are the papers' whole-image tests")
    p.add_argument("--crop-size", type=int, help="10-crop side in pixels (default 7/8 of the image side)")
    p.add_argument("--scales", help="multi-scale factors, comma-separated (default: the run's eval.scales)")
    p.add_argument("--sizes", help="dense/crop144/dense_multicrop: shorter sides in pixels the whole image is "
                                   "rescaled to, comma-separated (default: the paper's, scaled to the model's input)")
    p.add_argument("--image-size", type=int, help="resize the evaluated images to this size first")
    p.add_argument("--batch-size", type=int, help="default: the run's evaluation batch size")
    p.add_argument("--device", help="default: the run's device setting (auto: CUDA when there is one)")
    p.add_argument("--model", help="with --weights: the architecture; else refuse the checkpoint unless it holds it")
    p.add_argument("--out", help="folder for the report files")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate_checkpoint
    from ..engine.inference import read_checkpoint

    suffix = "" if args.tta in (None, "none") else f"-{args.tta}"
    if args.weights:
        ckpt, source = weights_as_checkpoint(args), args.weights
        out = Path(args.out) if args.out else Path("runs") / f"eval-{ckpt['model_name']}-{args.split}{suffix}"
    elif args.checkpoint:
        ckpt, source = read_checkpoint(args.checkpoint, trust=args.trust_checkpoint, expect_model=args.model), args.checkpoint
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}{suffix}"
    else:
        raise CnnzooError("give a CHECKPOINT, or --model NAME --weights TAG_OR_FILE --data DATA")
    result = evaluate_checkpoint(source, data=args.data, split=args.split, tta=args.tta,
                                 crop_size=args.crop_size, scales=_scales(args.scales), sizes=_sizes(args.sizes),
                                 batch_size=args.batch_size,
                                 device=args.device, image_size=args.image_size, out_dir=out, ckpt=ckpt)
    print(f"{'weights' if args.weights else 'checkpoint'}: {result.checkpoint} ({result.model})")
    if result.task == "classify":
        print_classification(result)
        result.files += draw_classification(result.report, out)
    else:
        for line in result.report.lines():
            print(line)
    print(f"wrote {', '.join(str(f) for f in result.files)}")
    return 0


def draw_classification(report, out: Path) -> list[Path]:
    """confusion.png and per_class.png beside the CSV files, when matplotlib is installed."""
    from ..viz import has_matplotlib, plot_confusion, plot_per_class_accuracy

    if not has_matplotlib():
        return []
    classes = list(report.classes)
    plot_confusion(report.confusion, classes, out / "confusion.png")
    plot_per_class_accuracy(classes, [acc for _, _, acc in report.per_class], out / "per_class.png",
                            support=[n for _, n, _ in report.per_class])
    return [out / "confusion.png", out / "per_class.png"]


def weights_as_checkpoint(args: argparse.Namespace) -> dict:
    """--weights: published weights as a checkpoint-like dict (cnnzoo.engine.weights_init)."""
    from ..engine.weights_init import weights_checkpoint

    if args.checkpoint:
        raise CnnzooError("give either a CHECKPOINT or --weights, not both")
    if not args.data:
        raise CnnzooError("--weights needs --data: the images to evaluate on (class folders named as the weights' classes)")
    return weights_checkpoint(args.weights, args.model, data=args.data, image_size=args.image_size)


def print_classification(result) -> None:
    report = result.report
    print(f"data: {result.dataset}, {result.split} split, {report.images:,} images, TTA: {report.tta}")
    print(f"top-1 accuracy {100 * report.top1:.2f}%   top-5 accuracy {100 * report.top5:.2f}%   "
          f"loss {report.loss:.4f}")
    rows = [[name, f"{n:,}", f"{100 * acc:.2f}%"] for name, n, acc in report.per_class if n]
    print(format_table(["class", "images", "accuracy"], rows, right_align={1, 2}))
    absent = sum(1 for _, n, _ in report.per_class if not n)
    if absent:
        print(f"({absent} of the model's {len(report.per_class)} classes have no images in the data)")


def _scales(text: str | None, flag: str = "--scales") -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CnnzooError(f"{flag}: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CnnzooError(f"{flag}: expected positive numbers, got {text!r}")
    return values


def _sizes(text: str | None) -> list[int] | None:
    values = _scales(text, "--sizes")
    if values is None:
        return None
    if any(v != int(v) for v in values):
        raise CnnzooError(f"--sizes: expected whole numbers of pixels, got {text!r}")
    return [int(v) for v in values]
