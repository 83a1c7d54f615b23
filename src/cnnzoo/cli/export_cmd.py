"""`cnnzoo export CHECKPOINT_OR_MODEL --format onnx|torchscript|exported -o FILE`: a deployable
file, loaded back and checked against the eager model before the command succeeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from .summary_cmd import parse_model_arg, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..export.formats import DEFAULT_OPSET, FORMATS, RTOL

    p = subparsers.add_parser(
        "export", help="export a model to ONNX, TorchScript or torch.export, verified against eager",
        description="Export a checkpoint (or a registered model, optionally with --weights) and verify the file: "
                    "it is loaded back (ONNX Runtime, torch.jit.load, torch.export.load), run on sample inputs and "
                    f"compared with the eager model (max |diff| at most {RTOL:g} x the largest logit, top-1 "
                    "agreement); preprocessing and class names travel in the file's metadata.",
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_MODEL",
                   help="a checkpoint written by `cnnzoo train`, or a registered model name")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (ONNX Runtime and other runtimes), torchscript (torch.jit.load; scripted where the "
                        "model allows, else traced) or exported (a torch.export .pt2 archive)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--input-size", type=parse_size, metavar="C,H,W",
                   help="the input the graph is captured at (default: the checkpoint's or model's input size)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size at run time (default: batch 1 fixed)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset version (default {DEFAULT_OPSET})")
    p.add_argument("--weights", metavar="TAG_OR_FILE", help="with a model name: published weights to load")
    p.add_argument("--model-arg", action="append", default=[], type=parse_model_arg, metavar="KEY=VALUE",
                   help="with a model name: a model option, e.g. width_mult=0.5 (repeatable)")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep BatchNorm layers separate (default: folded into the convolution before them)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")
    p.set_defaults(func=run)


def load_source(args: argparse.Namespace):
    """(model, input size, class names or None, model name) from a checkpoint, weights or a name."""
    from ..registry import create_model

    if Path(args.source).is_file():
        from ..engine.inference import model_from_checkpoint, read_checkpoint

        ckpt = read_checkpoint(args.source, trust=args.trust_checkpoint)
        return _from_ckpt(ckpt, model_from_checkpoint(ckpt))
    if args.weights:
        from ..engine.inference import model_from_checkpoint
        from ..engine.weights_init import weights_checkpoint

        ckpt = weights_checkpoint(args.weights, args.source)
        return _from_ckpt(ckpt, model_from_checkpoint(ckpt))
    model = create_model(args.source, **dict(args.model_arg)).eval()
    return model, tuple(model.default_cfg["input_size"]), None, args.source


def _from_ckpt(ckpt: dict, model):
    prep = ckpt["preprocessing"]
    cfg = getattr(model, "default_cfg", None)
    if cfg is not None and hasattr(cfg, "replace"):  # the run's statistics, not the registry's
        model.default_cfg = cfg.replace(mean=tuple(prep["mean"]), std=tuple(prep["std"]),
                                        input_size=tuple(prep["input_size"]))
    return model, tuple(int(v) for v in prep["input_size"]), list(ckpt.get("classes") or []), ckpt["model_name"]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export.formats import export_model, model_metadata, sample_inputs
    from ..export.fuse import fast_inference_model

    model, input_size, classes, name = load_source(args)
    input_size = args.input_size or input_size
    fast = model if args.no_fold_bn else fast_inference_model(model, sample_inputs(input_size, 1), channels_last=False)
    with torch.no_grad():
        report = export_model(fast, args.format, args.output, input_size=input_size,
                              dynamic_batch=args.dynamic_batch, opset=args.opset, reference=model,
                              metadata=model_metadata(model, input_size, classes, name))
    print(report.summary())
    return 0
