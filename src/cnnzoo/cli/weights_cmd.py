"""`cnnzoo weights list|info|download|convert`: the published-weights registry from the shell.

Only `download` touches the network; `convert` turns a torchvision/timm file into a
cnnzoo-named safetensors file (written to a temporary name, then renamed into place).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..errors import CnnzooError
from ..registry import create_model, list_models
from .table import format_markdown, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="list, inspect, download and convert published weights",
                                   description="Published weights: list, info, download, convert.")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list weights entries (tag, architecture, source, top-1, size, cached)")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard on tag or architecture (default: all)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs)")
    p.set_defaults(func=run_list)
    p = sub.add_parser("info", help="everything recorded about one entry")
    p.add_argument("tag")
    p.set_defaults(func=run_info)
    p = sub.add_parser("download", help="fetch an entry's file into the cache (hash-verified, atomic)")
    p.add_argument("tag")
    p.add_argument("--base-url", help="fetch <base-url>/<file name> instead of the publisher's URL (a mirror)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)
    p = sub.add_parser("convert", help="convert a torchvision/timm file to a cnnzoo safetensors file")
    p.add_argument("file", type=Path)
    p.add_argument("--model", required=True, help="the cnnzoo architecture, e.g. mobilenet_v2")
    p.add_argument("--from", dest="source", choices=("torchvision", "timm", "akamaster", "cnnzoo"),
                   help="the file's naming (default: detected from its keys)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors file")
    p.set_defaults(func=run_convert)


def _size(entry) -> str:
    return f"{entry.size_bytes / 2**20:,.1f} MB" if entry.size_bytes else "-"


def run_list(args: argparse.Namespace) -> int:
    from ..weights import is_cached, list_weights

    entries = list_weights(args.pattern)
    if not entries:
        raise CnnzooError(f"no weights match {args.pattern!r}; try `cnnzoo weights list`")
    headers = ["tag", "architecture", "source", "top-1", "size", "cached"]
    rows = [[e.tag, e.architecture, e.source, f"{e.top1:.2f}" if e.top1 else "-", _size(e),
             "yes" if is_cached(e) else "no"] for e in entries]
    if args.markdown:
        print(format_markdown(headers[:-1], [r[:-1] for r in rows]))
        return 0
    print(format_table(headers, rows, right_align={3, 4}))
    print(f"{len(entries)} weights entries")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..weights import cached_path, get_weights, is_cached

    e = get_weights(args.tag)
    pre = e.preprocessing
    lines = [
        ("tag", e.tag), ("architecture", e.architecture), ("source", f"{e.source} ({e.upstream_name})"),
        ("url", e.url), ("sha256", f"{e.sha256 or '-'}  ({e.hash_note})"), ("licence", e.license),
        ("format", e.format), ("size", _size(e)),
        ("top-1", f"{e.top1:.3f}%  ({e.top1_source})" if e.top1 else f"-  ({e.top1_source})"),
        ("classes", e.classes or "-"),
        ("preprocessing", f"input {'x'.join(map(str, pre.input_size))}, crop_pct {pre.crop_pct}, {pre.interpolation}, "
                          f"mean {pre.mean}, std {pre.std}" if pre else "-"),
        ("model options", ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in e.model_args) or "-"),
        ("cache", f"{cached_path(e)} ({'present' if is_cached(e) else 'absent'})"),
        ("notes", e.notes or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights import download, get_weights

    path = download(get_weights(args.tag), base_url=args.base_url, progress=not args.no_progress)
    print(f"{args.tag}: {path}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from ..weights.loading import convert_state, read_state_file

    if args.model not in list_models():
        create_model(args.model)  # raises the registry's "unknown model" error with suggestions
    if not args.file.is_file():
        raise CnnzooError(f"{args.file}: no such file")
    if args.output.suffix != ".safetensors":
        raise CnnzooError(f"{args.output}: the output must be a .safetensors file")
    expected = create_model(args.model).state_dict()
    raw, _ = read_state_file(args.file)
    state, source = convert_state(raw, args.model, source=args.source, expected=expected, what=str(args.file))
    from ..weights.converters import check_state

    check_state(expected, state, f"{args.file} as {args.model}")
    _atomic_save(save_file, {k: v.contiguous() for k, v in state.items()}, args.output,
                 dict(architecture=args.model, source=source, converted_from=args.file.name))
    print(f"{args.file} ({source} names) -> {args.output}: {len(state)} tensors for {args.model}")
    return 0


def _atomic_save(save_file, tensors: dict, output: Path, metadata: dict) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)
