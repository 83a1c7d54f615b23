"""`cnnzoo info NAME`: a model's paper, input style, preprocessing and parameter counts."""

from __future__ import annotations

import argparse

from ..registry import create_model, model_info


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show a model's paper and metadata",
                                   description="Show a model's paper, input style, preprocessing and parameters.")
    parser.add_argument("name", help="registered model name (see `cnnzoo list`)")
    parser.add_argument("--no-build", action="store_true", help="do not build the model to count its parameters")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = model_info(args.name)
    paper = info["paper"]
    lines = [
        f"name:         {info['name']}",
        f"family:       {info['family']}",
        f"paper:        {paper['title']}" + (f" — {paper['authors']}" if paper["authors"] else ""),
        f"year:         {paper['year']}",
        f"arXiv:        {paper['arxiv'] or '-'}",
        f"input style:  {info['input_style']}",
        f"task:         {info['task']}",
        f"input size:   {'x'.join(map(str, info['input_size']))}",
        f"mean / std:   {_fmt(info['mean'])} / {_fmt(info['std'])}",
        f"classes:      {info['num_classes']}",
    ]
    if info["ref_params"]:
        lines.append(f"reference:    {info['ref_params']:,} parameters ({info['ref_source']})")
    if not args.no_build:
        model = create_model(args.name)
        lines.append(f"parameters:   {sum(p.numel() for p in model.parameters()):,} (this build)")
    if info["notes"]:
        lines.append(f"notes:        {info['notes']}")
    for key in sorted(set(info) - _SHOWN):
        lines.append(f"{(key + ':').ljust(13)} {info[key]}")
    print("\n".join(lines))
    return 0


# model_info keys printed above; any other (width_mult, min_input_size, ...) is listed after them.
_SHOWN = {"name", "family", "paper", "input_style", "task", "input_size", "mean", "std", "num_classes",
          "ref_params", "ref_source", "notes"}


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
