"""`cnnzoo predict CHECKPOINT IMAGE_OR_DIR...`: top-k classes with probabilities."""

from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
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
    failed = 0
    for pred in predict_files(checkpoint, inputs, topk=args.topk, device=args.device, trust=args.trust_checkpoint,
                              ckpt=ckpt):
        if pred.error:
            failed += 1
            print(f"{pred.path}: error: {pred.error}", file=sys.stderr)
            continue
        print(f"{pred.path}: " + ", ".join(f"{name} {100 * p:.2f}%" for name, p in pred.top))
    if failed:
        print(f"cnnzoo predict: {failed} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0
