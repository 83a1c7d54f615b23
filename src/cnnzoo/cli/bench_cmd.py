"""`cnnzoo bench MODEL...`: latency (median, p90) and images/s of models in the settings asked
for, measured side by side in one process (see cnnzoo.export.bench)."""

from __future__ import annotations

import argparse
import csv
import io
import json

from .summary_cmd import parse_size
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="images/s and latency of models: eager, fused, bf16, compiled, ONNX Runtime",
        description="Time models with torch.utils.benchmark, warm-up excluded. The settings take turns round after "
                    "round (this machine may be shared), and --compare prints each one's speed-up over plain eager "
                    "fp32 (the median of the per-round ratios).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names")
    p.add_argument("--batch", type=_int_list, default=[1], metavar="N[,N...]", help="batch sizes (default 1)")
    p.add_argument("--input-size", type=parse_size, metavar="C,H,W",
                   help="input size (default: each model's default input size)")
    p.add_argument("--train", action="store_true", help="time training steps (forward, backward, SGD update)")
    p.add_argument("--precision", default="fp32", metavar="fp32[,bf16]",
                   help="precisions: fp32 and/or bf16 (autocast; slow on CPUs without native bf16)")
    p.add_argument("--channels-last", action="store_true", help="also time the channels_last memory format")
    p.add_argument("--fuse", action="store_true",
                   help="also time the fast inference form: BatchNorm folded, channels_last, inference_mode")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the fast form")
    p.add_argument("--onnxruntime", action="store_true", help="also time ONNX Runtime (needs cnnzoo[export])")
    p.add_argument("--compare", action="store_true",
                   help="time plain eager fp32 too and print every setting's speed-up over it")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per setting (default 7)")
    p.add_argument("--min-time", type=float, default=0.2, metavar="S",
                   help="seconds per timed block of calls (default 0.2)")
    p.add_argument("--threads", type=int, help="intra-op threads for PyTorch and ONNX Runtime (default: PyTorch's)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.set_defaults(func=run)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,32, got {text!r}")
    return values


def settings_from(args: argparse.Namespace) -> list[str]:
    from ..errors import CnnzooError

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad or not precisions:
        raise CnnzooError(f"--precision takes fp32 and/or bf16, got {args.precision!r}")
    settings = ["eager"] if "fp32" in precisions or args.compare else []
    settings += ["channels_last"] * args.channels_last + ["fused"] * args.fuse
    settings += ["bf16"] * ("bf16" in precisions) + ["compiled"] * args.compile + ["onnxruntime"] * args.onnxruntime
    return settings


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export.bench import bench_model
    from ..registry import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    results = []
    for name in args.models:
        model = create_model(name)
        size = args.input_size or tuple(model.default_cfg["input_size"])
        for batch in args.batch:
            results += bench_model(name, model, settings=settings, batch=batch, input_size=size, train=args.train,
                                   rounds=args.rounds, min_time=args.min_time, threads=args.threads)
    print(render(results, args.format, compare=args.compare), end="")
    return 0


def render(results, fmt: str, compare: bool = False) -> str:
    rows = [r.as_dict() for r in results]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({**r, "input_size": "x".join(map(str, r["input_size"]))} for r in rows)
        return out.getvalue()
    headers = ["model", "setting", "mode", "batch", "input", "median ms", "p90 ms", "img/s", "cpu ms"]
    headers += ["vs eager", "max |diff|"] if compare else []
    table = []
    for r in results:
        row = [r.model, r.setting, r.mode, str(r.batch), "x".join(map(str, r.input_size)), f"{r.median_ms:.2f}",
               f"{r.p90_ms:.2f}", f"{r.images_per_s:.1f}", f"{r.cpu_ms:.2f}"]
        if compare:
            row += [f"{r.ratio:.2f}x", "" if r.max_abs_diff is None else f"{r.max_abs_diff:.2g}"]
        table.append(row)
    return format_table(headers, table, right_align=set(range(3, len(headers)))) + "\n"
