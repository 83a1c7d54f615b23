"""`cnnzoo summary NAME`: the per-layer table (output shape, parameters, MACs) and totals."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from torch import nn

from ..analysis.summary import summary
from ..engine.optim import freeze_backbone
from ..errors import CnnzooError, UnknownOptionError
from ..registry import create_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("summary", help="per-layer shapes, parameters and MACs",
                                   description="Per-layer output shapes, parameters and MACs, then totals (FLOPs = 2 x "
                                               "MACs); when some parameters are frozen, a Trainable column per layer.")
    parser.add_argument("name", help="registered model name (see `cnnzoo list`), a checkpoint of `cnnzoo train` "
                                     "(shows what its run froze), or a weights file (with --model NAME unless the file "
                                     "names its architecture)")
    parser.add_argument("--model", metavar="NAME", help="with a weights file: the architecture to load it into")
    parser.add_argument("--pretrained", metavar="TAG_OR_FILE",
                        help="load published weights (the classifier re-made for --num-classes when it differs)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="freeze everything but the classifier, as `cnnzoo train --freeze-backbone` does")
    parser.add_argument("--input-size", type=parse_size, metavar="C,H,W",
                        help="input size (default: the model's default input size)")
    parser.add_argument("--depth", type=int, metavar="N", help="show modules at most N levels deep (default: every layer)")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--in-chans", type=int, help="input channels (default: --input-size's, else the model's)")
    parser.add_argument("--model-arg", action="append", default=[], type=parse_model_arg, metavar="KEY=VALUE",
                        help="a model option, e.g. width_mult=0.5 or attn_layer=cbam (repeatable)")
    parser.add_argument("--keras", action="store_true",
                        help="totals as Keras counts them: BatchNorm moving means/variances as non-trainable params")
    parser.set_defaults(func=run)


# What a checkpoint fixes: its model is built as its run built it.
BUILT_BY_THE_RUN = {"--model": "model", "--pretrained": "pretrained", "--num-classes": "num_classes",
                    "--in-chans": "in_chans", "--model-arg": "model_arg"}


def build(args: argparse.Namespace, in_chans: int | None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """(model, its run's input size or None) from a model name, published weights, a checkpoint
    or a weights file."""
    if Path(args.name).is_file():
        from ..engine.checkpoint import load_checkpoint

        obj = load_checkpoint(args.name, required_keys=()) if Path(args.name).suffix != ".safetensors" else {}
        if isinstance(obj, dict) and {"model_name", "config", "meta"} <= set(obj):
            return from_checkpoint(args, obj)
        return from_weights_file(args, model_options(args, in_chans)), None
    options = model_options(args, in_chans)
    if args.model:
        raise CnnzooError(f"--model is for a weights file; {args.name} is a model name")
    if args.pretrained:
        from ..weights import create_pretrained

        model = creating(args.name, lambda: create_pretrained(args.name, args.pretrained, **options))
        print(model.pretrained_loaded)
        return model, None
    return creating(args.name, lambda: create_model(args.name, **options)), None


def from_checkpoint(args: argparse.Namespace, ckpt: dict) -> tuple[nn.Module, tuple[int, ...]]:
    from ..engine.checkpoint_schema import check_checkpoint
    from ..engine.inference import model_from_checkpoint

    check_checkpoint(args.name, ckpt)  # what every reader of a training checkpoint checks

    given = [flag for flag, dest in BUILT_BY_THE_RUN.items() if getattr(args, dest)]
    if given:
        raise CnnzooError(f"{', '.join(given)}: {args.name} is a checkpoint of {ckpt['model_name']!r}, whose model is "
                          "built as its run built it; leave out the model options")
    model = model_from_checkpoint(ckpt)
    if ckpt["config"].get("model", {}).get("freeze_backbone"):
        freeze_backbone(model)
    return model, tuple(ckpt["meta"]["input_size"])


def from_weights_file(args: argparse.Namespace, options: dict) -> nn.Module:
    """A weights file (a state dict, safetensors, a publisher's file) loaded into its architecture."""
    from ..engine.weights_init import read_state_dict
    from ..weights import create_pretrained, entry_for

    if args.pretrained:
        raise CnnzooError(f"--pretrained: {args.name} is already a weights file; give one or the other")
    _, named = read_state_dict(args.name)
    entry = entry_for(args.name)
    arch = args.model or named or (entry.architecture if entry is not None else None)
    if arch is None:
        raise CnnzooError(f"{args.name} does not say which architecture its weights are for; name it with --model NAME")
    model = creating(arch, lambda: create_pretrained(arch, args.name, **options))
    print(model.pretrained_loaded)
    return model


def model_options(args: argparse.Namespace, in_chans: int | None) -> dict:
    """--model-arg options with --num-classes and --in-chans, refusing values that contradict."""
    extra = dict(args.model_arg)
    if args.in_chans is not None and in_chans is not None and args.in_chans != in_chans:
        raise CnnzooError(f"--in-chans {args.in_chans} contradicts --input-size {','.join(map(str, args.input_size))}")
    flags = {"num_classes": ("--num-classes", args.num_classes), "in_chans": ("--in-chans", args.in_chans or in_chans)}
    for key, (flag, value) in flags.items():
        if key in extra and value is not None and extra[key] != value:
            raise CnnzooError(f"--model-arg {key}={extra[key]} contradicts {flag} {value}; give it once, as {flag}")
    return {**extra, **{key: value for key, (_, value) in flags.items() if value is not None}}


def creating(name: str, make):
    """make() with a model's refusal of its options as one line (an unknown name or option is a
    CnnzooError already)."""
    try:
        return make()
    except UnknownOptionError as err:
        raise CnnzooError(f"--model-arg: {err}") from None
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        first = " ".join(str(err).split())[:200]
        raise CnnzooError(f"--model-arg: {name} cannot be built with these options ({type(err).__name__}: {first})") \
            from None


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
    try:
        return key, yaml.safe_load(value)  # numbers, booleans, lists and strings as YAML reads them
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML") from None


def run(args: argparse.Namespace) -> int:
    if args.depth is not None and args.depth < 1:
        raise CnnzooError("--depth must be at least 1")
    in_chans = args.input_size[0] if args.input_size else None
    model, input_size = build(args, in_chans)
    if args.freeze_backbone:
        freeze_backbone(model)
    input_size = args.input_size or input_size or tuple(model.default_cfg["input_size"])
    if args.in_chans:
        input_size = (args.in_chans, *input_size[1:])
    check_minimum(model, input_size)
    try:
        print(summary(model, input_size, depth=args.depth, keras=args.keras))
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
