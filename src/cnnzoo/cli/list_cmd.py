"""`cnnzoo list [PATTERN]`: a table of registered models."""

from __future__ import annotations

import argparse

from ..registry import list_models, model_info
from ..errors import CnnzooError
from .table import format_markdown, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list registered models", description="List registered models (shell-style wildcards).",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="wildcard such as 'resnet*' or '*_cifar' (default: all)")
    parser.add_argument("--family", help="only this family (e.g. resnet, vgg)")
    parser.add_argument("--input-style", choices=("cifar", "imagenet"), help="only CIFAR-style or ImageNet-style models")
    parser.add_argument("--papers", action="store_true", help="show each paper's full title")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, family=args.family, input_style=args.input_style)
    if not names:
        raise CnnzooError(f"no model matches {args.pattern!r}; try `cnnzoo list` for all models")
    headers = ["name", "family", "input", "params", "paper"]
    rows = []
    for name in names:
        info = model_info(name)
        params = f"{info['ref_params']:,}" if info["ref_params"] else "-"
        row = [name, info["family"], f"{info['input_style']} {'x'.join(map(str, info['input_size']))}", params]
        rows.append(row + [_cite(info["paper"], full=args.papers)])
    if args.markdown:
        print(format_markdown(headers, rows))
    else:
        print(format_table(headers, rows, right_align={3}))
        print(f"{len(names)} model(s)")
    return 0


def _cite(paper: dict, full: bool) -> str:
    """'He et al. 2016', or with `full` the title and arXiv id as well."""
    authors = [a.strip() for a in paper["authors"].split(",") if a.strip()]
    lead = f"{authors[0]} et al." if len(authors) > 2 else " & ".join(authors) or "?"
    cite = f"{lead} {paper['year']}"
    if full:
        cite += f", {paper['title']}" + (f", arXiv {paper['arxiv']}" if paper["arxiv"] else "")
    return cite
