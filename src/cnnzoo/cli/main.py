"""Entry point of the `cnnzoo` command.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds a parser
whose default `func(args) -> int | None` runs the command. Errors a user can fix
(`CnnzooError`, and an OSError about a path the user gave) print one line and exit with
code 2, never a traceback; failures at run time exit 1. Any other exception is a bug in cnnzoo:
one `internal error` line and exit 1 (CNNZOO_DEBUG=1 shows the traceback). The library reports
notes and warnings through `logging`; the CLI decides that they reach the terminal's stderr,
as `note: ...` and `warning: ...` lines.

The commands that compute for long (train, eval) run with OpenMP's passive wait policy unless
the user chose one: under load, the default spin-waiting made 2 threads use 4x the CPU and run
2-5x slower than with OMP_WAIT_POLICY=PASSIVE (docs/speedrun.md). OpenMP reads the variable once,
when torch loads, before this module runs, so the command starts itself again with it set: one
more start of Python, torch and cnnzoo (3-4 CPU-seconds measured on the loaded development
machine). A run on one thread (`--threads 1`, or one CPU allowed) does not spin and is not
restarted, and setting OMP_WAIT_POLICY to anything (ACTIVE included) opts out. Both commands
also tell glibc's malloc to keep freed memory (`engine.runtime.keep_freed_memory`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
from typing import Iterator

from ..errors import CnnzooError

# Modules under cnnzoo.cli, in the order `cnnzoo --help` lists them.
SUBCOMMANDS = (
    "list_cmd",
    "info",
    "recipes_cmd",
    "summary_cmd",
    "train",
    "eval_cmd",
    "predict",
    "denoise",
    "explain",
    "plot_cmd",
    "report_cmd",
    "weights_cmd",
    "export_cmd",
    "bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

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
    name = "cnnzoo"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for the run's command.txt
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        name = f"cnnzoo {args.command}"
        if argv is None and args.command in PASSIVE_WAIT_COMMANDS:  # the real command, not main([...]) in a test
            if "OMP_WAIT_POLICY" not in os.environ and _threads_wanted(args) > 1:
                restart_with_passive_wait(args.argv)
            from ..engine.runtime import keep_freed_memory

            keep_freed_memory()  # malloc keeps each step's activations for the next (see the function)
        with terminal_logging():
            return args.func(args) or 0
    except CnnzooError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnzoo list | head`
        return 0
    except OSError as err:
        return report_os_error(name, err)
    except Exception as err:  # a bug: the last resort, so that no input ends in a bare traceback
        if os.environ.get("CNNZOO_DEBUG"):
            raise
        detail = " ".join(str(err).split())[:300]
        print(f"{name}: internal error: {type(err).__name__}: {detail} (this is a bug in cnnzoo: please report it "
              "with the command; CNNZOO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


# A path the user gave that cannot be used as asked (a name over the OS limit, a file where a
# folder belongs, no permission): bad input, exit 2. Any other OSError (a full disk, an I/O
# error) is a failure at run time, exit 1.
BAD_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT,
                             errno.EACCES, errno.EPERM, errno.ELOOP, errno.EROFS, errno.EINVAL})


def report_os_error(name: str, err: OSError) -> int:
    """One line naming the file and the reason; 2 for an unusable path, 1 for other failures."""
    where = f"{err.filename}: " if err.filename else ""
    bad_path = err.errno in BAD_PATH_ERRNOS and err.filename is not None
    label = "error" if bad_path else "failed"
    print(f"{name}: {label}: {where}{err.strerror or err}", file=sys.stderr)
    return 2 if bad_path else 1


PASSIVE_WAIT_COMMANDS = ("train", "eval")


def _threads_wanted(args: argparse.Namespace) -> int:
    from ..engine.runtime import default_threads

    return getattr(args, "threads", None) or default_threads()


def restart_with_passive_wait(argv: list[str]) -> None:
    """Replace this process by the same command with OMP_WAIT_POLICY=PASSIVE (see the module docstring)."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "cnnzoo", *argv])


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment (tests and tools replace it), one line per record."""

    LABELS = {logging.INFO: "note", logging.WARNING: "warning"}

    def emit(self, record: logging.LogRecord) -> None:
        label = self.LABELS.get(record.levelno, record.levelname.lower())
        print(f"{label}: {record.getMessage()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def terminal_logging(level: int = logging.INFO) -> Iterator[None]:
    """Show the library's notes and warnings (the `cnnzoo` loggers) on stderr while inside."""
    logger = logging.getLogger("cnnzoo")
    handler, old_level, old_propagate = _StderrHandler(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


if __name__ == "__main__":
    sys.exit(main())
