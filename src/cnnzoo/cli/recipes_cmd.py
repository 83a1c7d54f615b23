"""`cnnzoo recipes`: the training recipes shipped inside the package, one line each."""

from __future__ import annotations

import argparse

from ..engine.config import recipe_summary, shipped_recipes
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipes", help="list the shipped training recipes (use one with `cnnzoo train --config NAME`)",
        description="The YAML recipes shipped with cnnzoo: name and what each trains. `cnnzoo train --config NAME` "
                    "uses one; `cnnzoo train --config NAME --print-config` shows all its settings.")
    p.add_argument("--path", action="store_true", help="also show where each file is")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipes = shipped_recipes()
    width = max(40, 118 - max(map(len, recipes), default=0))  # lines of at most about 120 characters
    rows = [[name, _shorten(recipe_summary(path), width)] + ([str(path)] if args.path else [])
            for name, path in recipes.items()]
    print(format_table(["recipe", "what it trains"] + (["file"] if args.path else []), rows))
    return 0


def _shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."
