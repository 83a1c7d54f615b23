"""`cnnzoo train`: train a model on a dataset from a recipe plus command-line overrides.

With no arguments: LeNet-5 on scikit-learn's digits, on the CPU, in a few seconds.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import signal
import sys
import time

import yaml

from ..engine.config import (Config, ConfigError, config_from_dict, config_to_dict, find_recipe, load_recipe,
                             parse_assignment, set_key, validate)

# flag (argparse dest) -> config key. Flags are shortcuts; --set KEY=VALUE reaches every key.
FLAG_KEYS = {
    "task": "task",
    "model": "model.name", "init_from": "model.init_from", "freeze_backbone": "model.freeze_backbone",
    "pretrained": "model.pretrained", "normalize": "data.normalize",
    "data": "data.dataset", "batch_size": "data.batch_size", "image_size": "data.image_size",
    "val_fraction": "data.val_fraction", "workers": "data.num_workers", "on_bad_image": "data.on_bad_image",
    "download": "data.download",
    "opt": "optim.name", "lr": "optim.lr", "momentum": "optim.momentum", "weight_decay": "optim.weight_decay",
    "sched": "schedule.name", "epochs": "schedule.epochs", "max_steps": "schedule.max_steps",
    "warmup": "schedule.warmup",
    "label_smoothing": "regularization.label_smoothing", "drop_rate": "regularization.drop_rate",
    "drop_path_rate": "regularization.drop_path_rate", "mixup": "regularization.mixup_alpha",
    "cutmix": "regularization.cutmix_alpha", "cutout": "regularization.cutout",
    "device": "runtime.device", "amp": "runtime.amp", "channels_last": "runtime.channels_last",
    "compile": "runtime.compile", "seed": "runtime.seed", "out": "runtime.out",
    "save_every_steps": "runtime.save_every_steps", "skip_nonfinite": "runtime.skip_nonfinite",
    "progress": "runtime.progress", "report": "runtime.report", "trust_checkpoint": "runtime.trust_checkpoint",
    "tta": "eval.tta",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (default: LeNet-5 on the digits, CPU, seconds)",
        description="Train a model. Settings come from the defaults, then a recipe (--config), then flags; "
                    "--set KEY=VALUE sets any key (see docs/training.md). Progress shows as bars on a "
                    "terminal and as log lines otherwise. Ctrl-C saves a checkpoint and prints how to resume.",
    )
    p.add_argument("--config", metavar="RECIPE",
                   help="YAML recipe: a path or a shipped recipe's name (see `cnnzoo recipes`, e.g. resnet20_cifar10)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (or from a checkpoint file)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set schedule.milestones=[91,136] (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    g = p.add_argument_group("model and data")
    g.add_argument("--task", help="classify (default) or denoise")
    g.add_argument("--model", help="registered model name (see `cnnzoo list`)")
    g.add_argument("--data", help="dataset name (digits, mnist, fashion-mnist, cifar10, cifar100) or path")
    g.add_argument("--image-size", type=int, help="resize the images to this many pixels")
    g.add_argument("--val-fraction", type=float, help="validation share carved from the training data")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--workers", type=int, help="image-decoding processes for image folders")
    g.add_argument("--on-bad-image", help="error (default) or skip unreadable images")
    g.add_argument("--download", action="store_true", default=None, help="download CIFAR if it is not found")
    g.add_argument("--init-from", metavar="CKPT", help="start from these weights (fine-tuning)")
    g.add_argument("--pretrained", metavar="TAG_OR_FILE",
                   help="start from published weights (a tag from `cnnzoo weights list`, or a file); the classifier "
                        "is re-made when the data has another number of classes")
    g.add_argument("--freeze-backbone", action="store_true", default=None,
                   help="train only the classifier; backbone BatchNorm statistics stay fixed (needs --pretrained "
                        "or --init-from)")
    g.add_argument("--normalize", choices=("weights", "dataset"),
                   help="with --pretrained/--init-from: normalise with the weights' mean/std (default) or the data's")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    g.add_argument("--opt", help="sgd, adamw, rmsprop or rmsprop_tf")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--sched", help="constant, step, multistep, cosine, sgdr, htd, onecycle or plateau")
    g.add_argument("--warmup", type=float, help="linear warm-up length (schedule.unit, epochs by default)")
    g = p.add_argument_group("regularisation")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--drop-rate", type=float, help="classifier dropout (models that have it)")
    g.add_argument("--drop-path-rate", type=float, help="stochastic depth (models that have it)")
    g.add_argument("--mixup", type=float, metavar="ALPHA")
    g.add_argument("--cutmix", type=float, metavar="ALPHA")
    g.add_argument("--cutout", type=int, metavar="SIZE")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--amp", help="auto, off, bf16 or fp16")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    g.add_argument("--seed", type=int)
    g.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<model>-<data>-<time>)")
    g.add_argument("--save-every-steps", type=int, metavar="N", help="also checkpoint every N steps")
    g.add_argument("--skip-nonfinite", type=int, metavar="N", help="skip up to N steps with a NaN/inf loss")
    g.add_argument("--progress", help="auto, bar, log or off")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                   help="draw plots and report.html into the run directory at the end (default on; needs "
                        "cnnzoo[viz])")
    g.add_argument("--tta", help="test-time augmentation of the final test: none, hflip, tencrop, multiscale, "
                                 "dense, crop144 or dense_multicrop")
    g.add_argument("--trust-checkpoint", action="store_true", default=None,
                   help="allow pickled Python objects in --init-from/--resume files (trusted files only)")
    p.set_defaults(func=run)


def overrides(args: argparse.Namespace) -> list[tuple[str, object]]:
    pairs = [(key, getattr(args, dest)) for dest, key in FLAG_KEYS.items() if getattr(args, dest, None) is not None]
    return pairs + [parse_assignment(text) for text in args.assignments]


def build_config(args: argparse.Namespace):
    """(Config, Resume or None) from the recipe or the resumed run, then the flags."""
    from ..engine.resume import load_resume, resume_config
    from ..engine.task import get_task

    resume = None
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume: the run's settings are in its "
                              "config.yaml; change single keys with flags")
        resume = load_resume(args.resume, trust=bool(args.trust_checkpoint))
        raw = copy.deepcopy(resume_config(resume))
    elif args.config:
        path = find_recipe(args.config)
        raw = load_recipe(path)
        try:
            config_from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    else:
        raw = {}
    for key, value in overrides(args):
        set_key(raw, key, value)
    apply_task_defaults(raw, get_task(raw.get("task", "classify")))
    cfg = validate(config_from_dict(raw))
    return cfg, resume


def apply_task_defaults(raw: dict, task) -> None:
    """Fill in the task's own defaults (model, optimiser, ...) for keys nobody set."""
    for key, value in {"model.name": task.default_model, **task.defaults}.items():
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            set_key(raw, key, value)


def run(args: argparse.Namespace) -> int:
    from ..engine.resume import RunFailure
    from ..engine.trainer import train

    cfg, resume = build_config(args)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        result = train(cfg, resume=resume)
    except RunFailure as err:  # a failure at run time, not bad input
        print(f"cnnzoo train: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # before training started, or a second Ctrl-C
        signum = getattr(err, "signum", signal.SIGINT)
        when = " before training started; nothing was saved" if hasattr(err, "signum") else ""
        print(f"cnnzoo train: stopped by {signal.Signals(signum).name}{when}", file=sys.stderr)
        return 128 + signum
    with open(result.run_dir / "command.txt", "a") as f:  # every command that ran it, resumes included
        f.write(shlex.join(["cnnzoo", *getattr(args, "argv", ["train"])]) + "\n")
    if result.exit_code == 0 and cfg.runtime.report:
        draw_report(result.run_dir)
    return result.exit_code


def draw_report(run_dir) -> None:
    """Plots and report.html of a finished run (nothing, with one note, without matplotlib)."""
    from ..viz import end_of_run

    started = time.perf_counter()
    files = end_of_run(run_dir)
    if files:
        print(f"report: {files[-1]} and {len(files) - 1} pictures in {run_dir / 'plots'} "
              f"({time.perf_counter() - started:.1f}s)", file=sys.stderr)


__all__ = ["Config", "FLAG_KEYS", "build_config", "register", "run"]
