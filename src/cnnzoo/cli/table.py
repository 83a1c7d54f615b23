"""Plain-text tables for the CLI."""

from __future__ import annotations

import csv
import io
import json


def format_table(headers: list[str], rows: list[list[str]], right_align: set[int] = frozenset()) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right_align else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


FORMATS = ("table", "csv", "json")


def add_format_argument(parser, what: str) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help=f"how to print {what}: an aligned table (default), CSV with a header row, or one JSON "
                             "document; with csv and json, stdout holds nothing else")


def format_csv(headers: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def format_json(document) -> str:
    return json.dumps(document, indent=2)
