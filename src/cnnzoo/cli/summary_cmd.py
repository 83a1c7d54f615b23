"""`cnnzoo summary NAME`: the per-layer table (output shape, parameters, MACs) and totals."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from torch import nn

from ..analysis.summary import summary
from ..engine.optim import freeze_backbone
from ..errors import CnnzooError
from ..registry import create_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("summary", help="per-layer shapes, parameters and MACs",
                                   description="Per-layer output shapes, parameters and MACs, then totals (FLOPs = 2 x MACs).")
    parser.add_argument("name", help="registered model name (see `cnnzoo list`), or a checkpoint of `cnnzoo train` "
                                     "(shows what its run froze)")
    parser.add_argument("--pretrained", metavar="TAG_OR_FILE",
                        help="load published weights (the classifier re-made for --num-classes when it differs)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="freeze everything but the classifier, as `cnnzoo train --freeze-backbone` does")
    parser.add_argument("--input-size", type=parse_size, metavar="C,H,W",
                        help="input size (default: the model's default input size)")
    parser.add_argument("--depth", type=int, metavar="N", help="show modules at most N levels deep (default: every layer)")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--model-arg", action="append", default=[], type=parse_model_arg, metavar="KEY=VALUE",
                        help="a model option, e.g. width_mult=0.5 or attn_layer=cbam (repeatable)")
    parser.set_defaults(func=run)


def build(args: argparse.Namespace, in_chans: int | None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """(model, its run's input size or None) from a model name, published weights or a checkpoint."""
    if Path(args.name).is_file():
        from ..engine.inference import model_from_checkpoint, read_checkpoint

        ckpt = read_checkpoint(args.name)
        model = model_from_checkpoint(ckpt)
        if ckpt["config"].get("model", {}).get("freeze_backbone"):
            freeze_backbone(model)
        return model, tuple(ckpt["meta"]["input_size"])
    options = dict(num_classes=args.num_classes, in_chans=in_chans, **dict(args.model_arg))
    if args.pretrained:
        from ..weights import create_pretrained

        model = create_pretrained(args.name, args.pretrained, **{k: v for k, v in options.items() if v is not None})
        print(model.pretrained_loaded)
        return model, None
    return create_model(args.name, **options), None


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,224,224, got {text!r}")
    return size


def parse_model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as width_mult=0.5, got {text!r}")
    return key, yaml.safe_load(value)  # numbers, booleans, lists and strings as YAML reads them


def run(args: argparse.Namespace) -> int:
    if args.depth is not None and args.depth < 1:
        raise CnnzooError("--depth must be at least 1")
    in_chans = args.input_size[0] if args.input_size else None
    model, input_size = build(args, in_chans)
    if args.freeze_backbone:
        freeze_backbone(model)
    input_size = args.input_size or input_size or tuple(model.default_cfg["input_size"])
    check_minimum(model, input_size)
    try:
        print(summary(model, input_size, depth=args.depth))
    except RuntimeError as err:  # e.g. an input too small for the network's downsampling
        raise CnnzooError(f"{args.name} cannot run on input {'x'.join(map(str, input_size))}: {err}".splitlines()[0]) from None
    return 0


def check_minimum(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """The model's declared minimum input (registry min_input_size), named instead of the shape
    error a forward pass would give ("Output size is too small")."""
    cfg = getattr(model, "default_cfg", None) or {}
    minimum = cfg.get("min_input_size")
    if minimum and (input_size[1] < minimum[1] or input_size[2] < minimum[2]):
        raise CnnzooError(f"--input-size: {cfg.get('architecture', 'the model')} needs inputs of at least "
                          f"{minimum[1]}x{minimum[2]} pixels, got {input_size[1]}x{input_size[2]}; use for example "
                          f"--input-size {input_size[0]},{minimum[1]},{minimum[2]}")
