"""`cnnzoo list [PATTERN]`: a table of registered models."""

from __future__ import annotations

import argparse
import difflib

from .._text import count
from ..errors import CnnzooError
from ..registry import cite, list_families, list_models, model_info
from .table import format_markdown, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list registered models", description="List registered models (shell-style wildcards).",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="wildcard such as 'resnet*' or '*_cifar' (default: all)")
    parser.add_argument("--family", help="only this family (e.g. resnet, vgg); a prefix takes every family it "
                                         "begins (mobilenet: mobilenet_v1, _v2 and _v3)")
    parser.add_argument("--input-style", choices=("cifar", "imagenet"), help="only CIFAR-style or ImageNet-style models")
    parser.add_argument("--papers", action="store_true", help="show each paper's full title")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, input_style=args.input_style)
    if args.family:
        families = matching_families(args.family)
        names = [n for n in names if model_info(n)["family"] in families]
    if not names:
        where = f" in family {args.family!r}" if args.family else ""
        raise CnnzooError(f"no model matches {args.pattern!r}{where}; try `cnnzoo list` for all models")
    headers = ["name", "family", "input", "params", "paper"]
    rows = []
    for name in names:
        info = model_info(name)
        params = f"{info['ref_params']:,}" if info["ref_params"] else "-"
        row = [name, info["family"], f"{info['input_style']} {'x'.join(map(str, info['input_size']))}", params]
        rows.append(row + [cite(info["paper"], full=args.papers)])
    if args.markdown:
        print(format_markdown(headers, rows))
    else:
        print(format_table(headers, rows, right_align={3}))
        print(count(len(names), "model"))
    return 0


def matching_families(text: str) -> set[str]:
    """The family named, else every family that begins with `text`, else an error with suggestions."""
    known = list_families()
    if text in known:
        return {text}
    found = {f for f in known if f.startswith(text)}
    if found:
        return found
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"families: {', '.join(known)}"
    raise CnnzooError(f"no model family {text!r}; {hint}")
