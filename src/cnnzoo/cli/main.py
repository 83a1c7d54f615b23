"""Entry point of the `cnnzoo` command.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds a parser
whose default `func(args) -> int | None` runs the command. Errors a user can fix
(`CnnzooError`) print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CnnzooError

# Modules under cnnzoo.cli, in the order `cnnzoo --help` lists them.
SUBCOMMANDS = (
    "list_cmd",
    "info",
    "summary_cmd",
    "train",
    "eval_cmd",
    "predict",
    "denoise",
    "explain",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cnnzoo",
        description="The classic CNN architectures, faithful to their papers: train, evaluate, analyse.",
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.{module}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except CnnzooError as err:
        print(f"cnnzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnzoo list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
