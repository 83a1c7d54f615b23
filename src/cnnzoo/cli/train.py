"""`cnnzoo train`: train a model on a dataset from a recipe plus command-line overrides.

With no arguments: LeNet-5 on scikit-learn's digits, on the CPU, in a few seconds.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import shlex
import signal
import sys
import time

import yaml

from ..engine.config import (Config, ConfigError, config_from_dict, config_to_dict, find_recipe, load_recipe,
                             parse_assignment, set_key, validate)
from .._text import count
from ..errors import CnnzooError
from ..registry import model_info

log = logging.getLogger(__name__)

# flag (argparse dest) -> config key. Flags are shortcuts; --set KEY=VALUE reaches every key.
FLAG_KEYS = {
    "task": "task",
    "model": "model.name", "init_from": "model.init_from", "freeze_backbone": "model.freeze_backbone",
    "pretrained": "model.pretrained", "normalize": "data.normalize", "allow_partial": "model.allow_partial",
    "data": "data.dataset", "batch_size": "data.batch_size", "image_size": "data.image_size",
    "val_fraction": "data.val_fraction", "workers": "data.num_workers", "on_bad_image": "data.on_bad_image",
    "download": "data.download",
    "opt": "optim.name", "lr": "optim.lr", "momentum": "optim.momentum", "weight_decay": "optim.weight_decay",
    "sched": "schedule.name", "epochs": "schedule.epochs", "max_steps": "schedule.max_steps",
    "warmup": "schedule.warmup",
    "label_smoothing": "regularization.label_smoothing", "drop_rate": "regularization.drop_rate",
    "drop_path_rate": "regularization.drop_path_rate", "mixup": "regularization.mixup_alpha",
    "cutmix": "regularization.cutmix_alpha", "cutout": "regularization.cutout",
    "device": "runtime.device", "threads": "runtime.threads", "amp": "runtime.amp", "channels_last": "runtime.channels_last",
    "compile": "runtime.compile", "seed": "runtime.seed", "out": "runtime.out",
    "save_every_steps": "runtime.save_every_steps", "skip_nonfinite": "runtime.skip_nonfinite",
    "progress": "runtime.progress", "report": "runtime.report", "trust_checkpoint": "runtime.trust_checkpoint",
    "tta": "eval.tta",
    "sync_bn": "runtime.sync_bn", "grad_accum": "optim.grad_accum", "dist_timeout": "runtime.dist_timeout",
    "stream": "data.stream",
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
    g.add_argument("--allow-partial", action="store_true", default=None,
                   help="with --init-from: start even when weights besides the classifier are missing from the file "
                        "(they are listed and left random; without this flag that is an error)")
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
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the arithmetic (default: the CPUs this process may use)")
    g.add_argument("--amp", help="auto, off, bf16 or fp16 (auto: bf16 on GPUs that have it; on a CPU with bf16 "
                                 "hardware a short cached probe picks the faster of fp32 and bf16; fp32 otherwise)")
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
                                 "fliptranslate, dense, crop144 or dense_multicrop")
    g.add_argument("--trust-checkpoint", action="store_true", default=None,
                   help="allow pickled Python objects in --init-from/--resume files (trusted files only)")
    add_process_flags(p)
    p.set_defaults(func=run)


def add_process_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("processes (data-parallel training, docs/distributed.md)")
    g.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (one per GPU, or N CPU processes over gloo), started "
                        "through torch.distributed.run; the same as `torchrun --nproc-per-node N -m cnnzoo train ...`")
    g.add_argument("--nnodes", type=int, metavar="N", default=1,
                   help="with --nproc: machines taking part; run the same command on each (default 1)")
    g.add_argument("--node-rank", type=int, metavar="R",
                   help="with --nnodes: this machine's rank, for a fixed (static) rendezvous; without it the "
                        "machines meet through c10d and are numbered as they arrive")
    g.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="with --nnodes > 1: where the machines meet (a free port on one of them)")
    g.add_argument("--rdzv-id", default="cnnzoo", metavar="ID",
                   help="with --nnodes > 1: a name for this job, the same on every machine (default cnnzoo)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm statistics over the global batch instead of each process's share")
    g.add_argument("--grad-accum", type=int, metavar="K",
                   help="split each batch into K micro-batches whose gradients add up before one optimiser step "
                        "(same global batch, less memory)")
    g.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="how long a process waits for the others before stopping with an error (default 600)")
    g.add_argument("--stream", choices=("auto", "on", "off"),
                   help="image folders: stream batches from decoding workers (on), decode all into memory (off), "
                        "or stream when the decoded images would exceed data.memory_budget_gb (auto, default)")


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
    given = overrides(args)
    for key, value in given:
        set_key(raw, key, value)
    apply_task_defaults(raw, get_task(raw.get("task", "classify")))
    if resume is None:
        fit_recipe_image_size(raw, typed={key for key, _ in given})
    cfg = validate(config_from_dict(raw))
    return cfg, resume


def fit_recipe_image_size(raw: dict, typed: set[str]) -> None:
    """A recipe's data.image_size below the model's minimum input is raised to it, with a note; a
    size the user typed (--image-size, --set data.image_size=) is theirs, and validate refuses it."""
    size, name = (raw.get("data") or {}).get("image_size"), (raw.get("model") or {}).get("name")
    if "data.image_size" in typed or not isinstance(size, int) or not isinstance(name, str):
        return
    minimum = model_info(name)["min_input_size"]
    if minimum and size < min(minimum[1:]):
        log.info("the recipe's data.image_size %d is below %s's minimum input; using %d px (choose with "
                 "--image-size)", size, name, min(minimum[1:]))
        set_key(raw, "data.image_size", min(minimum[1:]))


def in_flag_words(message: str, args: argparse.Namespace) -> str:
    """`message` with every config key the user set by a flag named as that flag (`data.image_size:
    ...` -> `--image-size: ...`); keys set by a recipe or --set keep their names."""
    for dest, key in FLAG_KEYS.items():
        if getattr(args, dest, None) is not None:
            flag = "--" + dest.replace("_", "-")
            # a dotted key wherever it stands; `task` only as the key a message starts with
            pattern = rf"(?<![\w.-]){re.escape(key)}(?![\w])" if "." in key else rf"^{key}(?=:)"
            message = re.sub(pattern, flag, message)
    return message


def apply_task_defaults(raw: dict, task) -> None:
    """Fill in the task's own defaults (model, optimiser, ...) for keys nobody set."""
    for key, value in {"model.name": task.default_model, **task.defaults}.items():
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            set_key(raw, key, value)


def run(args: argparse.Namespace) -> int:
    try:
        return train_command(args)
    except CnnzooError as err:  # main() prints it; in the words the user typed
        err.args = (in_flag_words(str(err), args), *err.args[1:])
        raise


def train_command(args: argparse.Namespace) -> int:
    from ..engine.distributed import Launch, check_config, env_rank, launch

    if args.nproc:
        spec = Launch(args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id)
        spec.check()
        cfg, _ = build_config(args)  # mistakes show once, here, not in every process
        check_config(cfg, args.nproc * args.nnodes)
        return launch(spec, getattr(args, "argv", ["train"]))
    if env_rank() == 0:
        return _run(args)
    logging.getLogger("cnnzoo").setLevel(logging.ERROR)  # the other processes of a run stay quiet
    return _follow(args)


def _follow(args: argparse.Namespace) -> int:
    """A process other than rank 0: the same run, but what rank 0 reports is not repeated; only
    a failure of its own (lost contact with the others) is printed, under its rank."""
    from ..engine.distributed import FollowerExit

    try:
        return _run(args, main=False)
    except FollowerExit as err:
        return err.exit_code
    except CnnzooError:  # bad input: every process found it, rank 0 said it
        return 2


def _run(args: argparse.Namespace, main: bool = True) -> int:
    from ..engine.distributed import ProcessGroupError
    from ..engine.resume import RunFailure
    from ..engine.runtime import set_threads
    from ..engine.trainer import train

    cfg, resume = build_config(args)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    if cfg.runtime.threads is None:
        set_threads(None)  # the command's default: every CPU this process may run on
    try:
        result = train(cfg, resume=resume)
    except RunFailure as err:  # a failure at run time, not bad input
        if main or isinstance(err, ProcessGroupError):  # the others' own failures only
            print(f"cnnzoo train: stopped: {in_flag_words(str(err), args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # before training started, or a second Ctrl-C
        signum = getattr(err, "signum", signal.SIGINT)
        when = " before training started; nothing was saved" if hasattr(err, "signum") else ""
        if main:
            print(f"cnnzoo train: stopped by {signal.Signals(signum).name}{when}", file=sys.stderr)
        return 128 + signum
    if not main:
        return result.exit_code
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
        print(f"report: {files[-1]} and {count(len(files) - 1, 'picture')} in {run_dir / 'plots'} "
              f"({time.perf_counter() - started:.1f}s)")


__all__ = ["Config", "FLAG_KEYS", "build_config", "register", "run"]
