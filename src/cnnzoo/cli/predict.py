"""`cnnzoo predict CHECKPOINT IMAGE_OR_DIR...`: top-k classes with probabilities."""

from __future__ import annotations

import argparse
import sys

from .._text import count
from ..export.formats import BACKENDS
from .table import add_format_argument, format_csv, format_json, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="classify image files with a checkpoint (top-k with probabilities)",
        description="Classify image files (folders are searched recursively) with the preprocessing stored "
                    "in the checkpoint.",
    )
    p.add_argument("inputs", nargs="+", metavar="[CHECKPOINT] IMAGE_OR_DIR",
                   help="a checkpoint written by `cnnzoo train`, then images (with --weights: images only)")
    p.add_argument("--model", help="with --weights: the architecture (default: the tag's)")
    p.add_argument("--weights", metavar="TAG_OR_FILE",
                   help="published weights instead of a checkpoint (a tag or a file such as akamaster's .th): "
                        "their preprocessing and class names are used")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the model: PyTorch (BatchNorm folded, channels_last), or ONNX Runtime on the CPU "
                        "(exported in memory first; needs cnnzoo[export]; measured faster on CPUs, see docs/export.md)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
    add_format_argument(p, "the predictions (table: one row per image; csv: one row per image and rank; json: a "
                           "list of images with their top-k, unreadable ones with their error)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.predict import predict_files

    if args.topk < 1:
        from ..errors import CnnzooError

        raise CnnzooError(f"--topk must be at least 1, got {args.topk}")
    ckpt = None
    if args.weights:
        from ..engine.weights_init import weights_checkpoint

        ckpt, checkpoint, inputs = weights_checkpoint(args.weights, args.model), args.weights, args.inputs
    elif len(args.inputs) < 2:
        from ..errors import CnnzooError

        raise CnnzooError("give a CHECKPOINT and images, or --weights TAG_OR_FILE [--model NAME] and images")
    else:
        checkpoint, inputs = args.inputs[0], args.inputs[1:]
    predictions = predict_files(checkpoint, inputs, topk=args.topk, device=args.device, trust=args.trust_checkpoint,
                                ckpt=ckpt, backend=args.backend)
    readable = [p for p in predictions if not p.error]
    for pred in predictions:  # on stderr in every format, so stdout holds only the results
        if pred.error:
            print(f"{pred.path}: error: {pred.error}", file=sys.stderr)
    if args.format == "json":
        print(format_json({"checkpoint": str(checkpoint), "predictions": [as_dict(p) for p in predictions]}))
    elif args.format == "csv":
        print(format_csv(["image", "rank", "class", "probability"],
                         [[p.path, rank, name, f"{prob:.6f}"] for p in readable
                          for rank, (name, prob) in enumerate(p.top, 1)]))
    elif readable:
        k = max(len(p.top) for p in readable)
        rows = [[p.path, *(f"{name} {100 * prob:.2f}%" for name, prob in p.top)] for p in readable]
        print(format_table(["image", *(f"top-{i}" for i in range(1, k + 1))], rows))
    failed = len(predictions) - len(readable)
    if failed:
        print(f"cnnzoo predict: {count(failed, 'file')} could not be read", file=sys.stderr)
    return 1 if failed else 0


def as_dict(pred) -> dict:
    if pred.error:
        return {"image": pred.path, "error": pred.error}
    return {"image": pred.path, "top": [{"class": name, "probability": prob} for name, prob in pred.top]}
