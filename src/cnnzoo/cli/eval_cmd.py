"""`cnnzoo eval CHECKPOINT`: evaluate a trained checkpoint, with optional test-time augmentation.

The evaluation is the task's own (cnnzoo.engine.evaluate.evaluate_checkpoint), the one the
run's final test used; this module only parses the arguments and prints the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._text import count
from ..engine.config import check_image_size
from ..engine.tta import TTA_MODES
from ..errors import CnnzooError
from ..export.formats import BACKENDS
from .table import add_format_argument, format_csv, format_json, format_table


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
    p.add_argument("--split", choices=("all", "test", "val", "train"),
                   help="which images: the checkpoint's own data is split as its run split it; other data is taken "
                        "as it is (its test/ folder, val/ folder, or all of it). Default: the test split where there "
                        "is one, otherwise (data other than the run's, e.g. a folder of class folders) everything")
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation (default: the run's eval.tta); dense, "
                                                    "crop144 and dense_multicrop are the papers' whole-image tests")
    p.add_argument("--crop-size", type=int, help="10-crop side in pixels (default 7/8 of the image side)")
    p.add_argument("--scales", help="multi-scale factors, comma-separated (default: the run's eval.scales)")
    p.add_argument("--sizes", help="dense/crop144/dense_multicrop: shorter sides in pixels the whole image is "
                                   "rescaled to, comma-separated (default: the paper's, scaled to the model's input)")
    p.add_argument("--image-size", type=int, help="resize the evaluated images to this size first")
    p.add_argument("--batch-size", type=int, help="default: the run's evaluation batch size")
    p.add_argument("--device", help="default: the run's device setting (auto: CUDA when there is one)")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep BatchNorm layers separate (default: folded into the convolution before them, as the "
                        "run's final test did; unfolded numbers differ from it in the last digits)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the model: PyTorch, or ONNX Runtime on the CPU (exported in memory first; needs "
                        "cnnzoo[export]; not with the whole-image --tta modes)")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"),
                   help="autocast precision (default: the run's, as its final test used; off: fp32)")
    p.add_argument("--model", help="with --weights: the architecture; else refuse the checkpoint unless it holds it")
    p.add_argument("--out", help="folder for the report files")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
    add_format_argument(p, "the results (csv: one summary row, one per test set for a denoiser; json: the "
                           "metrics, per-class accuracy and the files written)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate_checkpoint
    from ..engine.inference import read_checkpoint

    suffix = "" if args.tta in (None, "none") else f"-{args.tta}"
    if args.weights:
        ckpt, source = weights_as_checkpoint(args), args.weights
    elif args.checkpoint:
        ckpt, source = read_checkpoint(args.checkpoint, trust=args.trust_checkpoint, expect_model=args.model), args.checkpoint
    else:
        raise CnnzooError("give a CHECKPOINT, or --model NAME --weights TAG_OR_FILE --data DATA")
    refuse_ignored_options(args, ckpt)
    check_image_size(ckpt["model_name"], args.image_size, key="--image-size")
    result = evaluate_checkpoint(source, data=args.data, split=args.split, tta=args.tta,
                                 crop_size=args.crop_size, scales=_scales(args.scales), sizes=_sizes(args.sizes),
                                 batch_size=args.batch_size,
                                 device=args.device, amp=args.amp, image_size=args.image_size, ckpt=ckpt,
                                 fold_bn=not args.no_fold_bn, backend=args.backend)
    name = f"eval-{ckpt['model_name']}-{result.split}{suffix}" if args.weights else f"eval-{result.split}{suffix}"
    out = Path(args.out) if args.out else (Path("runs") if args.weights else Path(args.checkpoint).parent) / name
    result.files = result.report.write(out, result)
    if result.task == "classify":
        result.files += draw_classification(result.report, out)
    wrote = f"wrote {', '.join(str(f) for f in result.files)}"
    if args.format == "table":
        print(f"{'weights' if args.weights else 'checkpoint'}: {result.checkpoint} ({result.model})")
        if result.task == "classify":
            print_classification(result)
        else:
            for line in result.report.lines():
                print(line)
        print(wrote)
        return 0
    header = {"checkpoint": result.checkpoint, "model": result.model, "task": result.task,
              "dataset": result.dataset, "split": result.split}
    if args.format == "json":
        print(format_json({**header, "metrics": result.metrics, **result.report.to_dict(),
                           "files": [str(f) for f in result.files]}))
    else:
        rows = [{**header, **row} for row in result.report.summary_rows()]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        print(format_csv(columns, [[row.get(k, "") for k in columns] for row in rows]))
    print(wrote, file=sys.stderr)  # stdout holds the one document
    return 0


# Options only a classifier's evaluation uses (flag -> argparse dest); a denoiser refuses them
# rather than ignore them.
CLASSIFICATION_ONLY = {"--tta": "tta", "--crop-size": "crop_size", "--scales": "scales", "--split": "split",
                       "--image-size": "image_size", "--batch-size": "batch_size", "--weights": "weights"}


def refuse_ignored_options(args: argparse.Namespace, ckpt: dict) -> None:
    task = ckpt.get("task", "classify")
    if task == "classify":
        return
    given = [flag for flag, dest in CLASSIFICATION_ONLY.items() if getattr(args, dest, None) is not None]
    if given:
        raise CnnzooError(f"{' and '.join(given)}: not used by the evaluation of a {task!r} checkpoint "
                          f"({ckpt.get('model_name')}), which scores its test sets as they are; leave "
                          f"{'them' if len(given) > 1 else 'it'} out")


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
    which = f"all {count(report.images, 'image')}" if result.split == "all" else \
        f"{result.split} split, {count(report.images, 'image')}"
    print(f"data: {result.dataset}, {which}, TTA: {report.tta}")
    top5 = f"top-5 accuracy {100 * report.top5:.2f}%   " if report.top5 is not None else ""
    print(f"top-1 accuracy {100 * report.top1:.2f}%   {top5}loss {report.loss:.4f}")
    rows = [[name, f"{n:,}", f"{100 * acc:.2f}%"] for name, n, acc in report.per_class if n]
    print(format_table(["class", "images", "accuracy"], rows, right_align={1, 2}))
    absent = sum(1 for _, n, _ in report.per_class if not n)
    if absent:
        print(f"({absent} of the model's {count(len(report.per_class), 'class', 'classes')} "
              f"{'has' if absent == 1 else 'have'} no images in the data)")


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
