"""`cnnzoo explain conv ...`, `cnnzoo explain fc ...` and `cnnzoo explain receptive-field NAME`:
the arithmetic of convolutions (weights, parameters, MACs, output size), of a fully connected
layer against a convolution on the same image, and of receptive fields, with numbers checked
against torch.nn.Conv2d / nn.Linear. The picture topics (gradcam, attention, kernels, features,
depthwise) live in explain_viz.py."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ..analysis import conv_arith as ca
from ..analysis import receptive_field as rf
from ..errors import CnnzooError
from ..registry import create_model
from .explain_viz import register_topics
from .table import format_table

MAX_GRID = 81  # widest footprint drawn (characters are doubled by the spacing)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("explain", help="conv arithmetic, receptive fields, and pictures of what a "
                                                   "network does (Grad-CAM, attention, kernels)",
                                   description="The arithmetic behind the architectures (convolution "
                                               "weights/parameters/MACs, receptive fields) and pictures of what a "
                                               "trained network does (Grad-CAM, attention maps, kernels, feature "
                                               "maps, dead depthwise kernels).")
    sub = parser.add_subparsers(dest="topic", metavar="TOPIC", required=True)
    _register_conv(sub)
    _register_fc(sub)
    _register_rf(sub)
    register_topics(sub)


def _register_conv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conv", help="weight shape, parameters, MACs and output size of a convolution",
                       description="A standard, group, depthwise(-separable) or dilated convolution side by "
                                   "side with the standard one, checked against torch.nn.Conv2d.")
    p.add_argument("--in", dest="in_chs", type=int, metavar="C_IN", help="input channels")
    p.add_argument("--out", dest="out_chs", type=int, metavar="C_OUT",
                   help="output channels (with --depthwise: the pointwise step's; omit for a depthwise conv alone)")
    p.add_argument("--kernel", type=int, default=3, metavar="K", help="kernel size (default 3)")
    p.add_argument("--stride", type=int, default=1, metavar="S")
    p.add_argument("--padding", type=int, metavar="P",
                   help="padding on each side (default: 'same': PyTorch's padding='same' at stride 1, "
                        "d*(k-1)//2 per side at a larger stride, where PyTorch has no 'same')")
    p.add_argument("--dilation", type=int, default=1, metavar="D")
    p.add_argument("--groups", type=int, default=1, metavar="G")
    p.add_argument("--depthwise", action="store_true", help="depthwise (groups = C_in), separable when --out is given")
    p.add_argument("--multiplier", type=int, default=1, metavar="K", help="depthwise channel multiplier")
    p.add_argument("--bias", action="store_true", help="count a bias per output channel")
    p.add_argument("--size", type=_parse_hw, metavar="H,W", help="input height,width, for MACs and output size")
    p.add_argument("--example", action="store_true",
                   help="the worked example: an all-ones 3x3 kernel over the values 1..25")
    p.set_defaults(func=run_conv)


def _register_fc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fc", help="a fully connected layer on an image against a convolution on it",
                       description="Weights and MACs of a fully connected layer on a whole image (every neuron "
                                   "has a weight per pixel and channel) next to a convolution on the same image "
                                   "(one small kernel shared by every position), checked against torch.")
    p.add_argument("--size", type=_parse_hw, default=(100, 100), metavar="H,W", help="image height,width (default 100,100)")
    p.add_argument("--in", dest="in_chs", type=int, default=3, metavar="C", help="image channels (default 3)")
    p.add_argument("--hidden", type=int, default=1, metavar="N", help="fully connected neurons (default 1)")
    p.add_argument("--kernel", type=int, default=3, metavar="K", help="the convolution's kernel size (default 3)")
    p.add_argument("--out", dest="out_chs", type=int, metavar="C_OUT",
                   help="the convolution's output maps (default: as many as --hidden)")
    p.add_argument("--bias", action="store_true", help="count a bias per neuron / output map")
    p.set_defaults(func=run_fc)


def _register_rf(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("receptive-field", help="receptive field, jump and effective stride per layer",
                       description="Receptive field, jump (effective stride) and effective padding per layer "
                                   "of a registered model, or of a stack of dilated convolutions "
                                   "(--dilations) with the input pixels that reach one output pixel.")
    p.add_argument("name", nargs="?", help="registered model name (see `cnnzoo list`)")
    p.add_argument("--input-size", type=_parse_chw, metavar="C,H,W", help="default: the model's input size")
    p.add_argument("--all", action="store_true", help="list every layer, not only convolutions and pools")
    p.add_argument("--grid", action="store_true", help="draw which input pixels reach one output pixel")
    p.add_argument("--paths", action="store_true", help="in the grid, shade by number of paths (1-9)")
    p.add_argument("--dilations", type=_parse_ints, metavar="D1,D2,...",
                   help="instead of a model: a stack of stride-1 convolutions with these dilations")
    p.add_argument("--kernel", type=int, default=3, metavar="K", help="kernel size of the --dilations stack")
    p.set_defaults(func=run_rf)


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _parse_hw(text: str) -> tuple[int, int]:
    values = _parse_ints(text)
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected H,W (or one side), got {text!r}")
    return (values[0], values[-1])


def _parse_chw(text: str) -> tuple[int, int, int]:
    values = _parse_ints(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,224,224, got {text!r}")
    return values  # type: ignore[return-value]


# ------------------------------------------------------------------------------ conv


def conv_specs(args: argparse.Namespace) -> tuple[ca.ConvSpec, list[ca.ConvSpec], str]:
    """The standard convolution, the variant's layers and the variant's name."""
    if args.in_chs is None:
        raise CnnzooError("--in is required (or use --example)")
    if min(args.in_chs, args.kernel, args.stride, args.dilation, args.groups, args.multiplier) < 1:
        raise CnnzooError("channels, kernel, stride, dilation, groups and multiplier must be positive")
    common = dict(stride=args.stride, padding=args.padding, bias=args.bias)
    # The standard convolution a group/depthwise one is compared with keeps its dilation, so
    # both see the same span and (with an explicit --padding) give the same output size.
    dilated = dict(common, dilation=args.dilation)
    try:
        if args.depthwise:
            if args.groups != 1:
                raise CnnzooError("--depthwise already sets groups to C_in; leave out --groups")
            dw_kwargs = dict(multiplier=args.multiplier, **dilated)
            if args.out_chs is None:
                variant = [ca.depthwise(args.in_chs, args.kernel, **dw_kwargs)]
                std = ca.standard(args.in_chs, args.in_chs * args.multiplier, args.kernel, **dilated)
                return std, variant, variant[0].label
            dw, pw = ca.depthwise_separable(args.in_chs, args.out_chs, args.kernel, **dw_kwargs)
            return ca.standard(args.in_chs, args.out_chs, args.kernel, **dilated), [dw, pw], "depthwise-separable"
        if args.out_chs is None:
            raise CnnzooError("--out is required (except for a depthwise convolution alone)")
        if args.groups != 1:
            spec = ca.grouped(args.in_chs, args.out_chs, args.kernel, groups=args.groups, **dilated)
            return ca.standard(args.in_chs, args.out_chs, args.kernel, **dilated), [spec], spec.label
        std = ca.standard(args.in_chs, args.out_chs, args.kernel, **common)
        if args.dilation != 1:
            spec = ca.ConvSpec(args.in_chs, args.out_chs, args.kernel, dilation=args.dilation,
                               label=f"dilated (d={args.dilation})", **common)
            return std, [spec], spec.label
        return std, [], "standard"
    except ValueError as err:
        raise CnnzooError(str(err)) from None


def conv_report(args: argparse.Namespace) -> str:
    try:
        return _conv_report(args)
    except ValueError as err:  # e.g. a kernel wider than the padded input
        raise CnnzooError(str(err)) from None


def _conv_report(args: argparse.Namespace) -> str:
    std, variant, name = conv_specs(args)
    size = args.size
    layers = [std] + variant
    # Each layer of the variant sees its predecessor's output (a strided depthwise step
    # shrinks what the pointwise step runs on).
    sizes = [size] + ca.chain_input_sizes(variant, size)
    rows = [_conv_row(s, at) for s, at in zip(layers, sizes)]
    if len(variant) > 1:
        total = ca.chain_stats(f"{name} (total)", variant, size)
        rows.append([total.label, "", f"{total.params:,}", _fmt_macs(total.macs, total.params, size), "",
                     _fmt_shape(total.output_shape)])
    header = ["Layer", "Weight shape", "Params", "MACs" if size else "MACs/position", "Span", "Output"]
    if not size:  # no input size: no output size either
        header, rows = header[:-1], [row[:-1] for row in rows]
    lines = [_describe(args, std), "", format_table(header, rows, right_align={2, 3})]
    if variant:
        ours = sum(s.params for s in variant)
        lines.append(f"\n{name} / standard: {ours:,} / {std.params:,} parameters = {ours / std.params:.4f}"
                     + _ratio_formula(args, std))
        if size:
            macs = ca.chain_stats(name, variant, size).macs
            lines.append(f"{name} / standard: {macs:,} / {std.macs(size):,} MACs = {macs / std.macs(size):.4f}")
    if args.dilation != 1 and not args.depthwise:
        span = variant[0].effective_kernel
        same_span = ca.standard(args.in_chs, args.out_chs, span, bias=args.bias)
        lines.append(f"a standard {span[0]}x{span[1]} kernel with the same span would need "
                     f"{same_span.params:,} parameters")
    lines.append(_torch_check(layers, sizes))
    return "\n".join(lines)


def _conv_row(spec: ca.ConvSpec, size: tuple[int, int] | None) -> list[str]:
    st = ca.stats(spec, size)
    span = "x".join(map(str, spec.effective_kernel))
    weights = spec.params - (spec.out_chs if spec.bias else 0)
    return [spec.label, _fmt_shape(st.weight_shape, brackets=True), f"{st.params:,}",
            _fmt_macs(st.macs, weights, size), span, _fmt_shape(st.output_shape)]


def _fmt_macs(macs: int | None, per_position: int, size: tuple[int, int] | None) -> str:
    # Without an input size, a standard convolution costs one MAC per weight per output pixel.
    return f"{macs:,}" if size else f"{per_position:,}"


def _fmt_shape(shape: tuple | None, brackets: bool = False) -> str:
    if shape is None:
        return ""
    return "[" + ", ".join(map(str, shape)) + "]" if brackets else "x".join(map(str, shape))


def _describe(args: argparse.Namespace, std: ca.ConvSpec) -> str:
    text = (f"{args.in_chs} -> {args.out_chs if args.out_chs is not None else args.in_chs * args.multiplier} channels, "
            f"{args.kernel}x{args.kernel} kernel, stride {args.stride}, padding {_padding_text(args, std)}, "
            f"dilation {args.dilation}")
    return text + (f", on a {args.size[0]}x{args.size[1]} input" if args.size else "")


def _padding_text(args: argparse.Namespace, spec: ca.ConvSpec) -> str:
    if args.padding is not None:
        return str(args.padding)
    before, after = spec.padding[0], spec.padding_after[0]
    if args.stride > 1:
        return f"{before} (d(k-1)//2 per side; PyTorch's padding='same' is for stride 1 only)"
    if before != after:
        return f"same ({before} before, {after} after, as PyTorch's padding='same')"
    return "same"


def _ratio_formula(args: argparse.Namespace, std: ca.ConvSpec) -> str:
    if args.depthwise and args.out_chs is not None and args.multiplier == 1 and not args.bias:
        k2 = args.kernel**2
        return f"  (= 1/C_out + 1/k^2 = 1/{args.out_chs} + 1/{k2} = {1 / args.out_chs + 1 / k2:.4f})"
    if args.groups != 1 and not args.bias:
        return f"  (= 1/groups = 1/{args.groups})"
    return ""


def _torch_check(specs: list, sizes: list[tuple[int, int] | None], what: str = "torch.nn.Conv2d") -> str:
    """Every layer built in torch and run at the size it sees (16x16 where no size was given)."""
    given = sizes[0] is not None
    if not given:
        sizes = [(16, 16)] + ca.chain_input_sizes(specs[1:], (16, 16))
    for spec, at in zip(specs, sizes):
        try:
            mismatches = ca.check_against_torch(spec, at)
        except (RuntimeError, ValueError) as err:
            return f"not checked against {what} at {at[0]}x{at[1]}: {str(err).splitlines()[0]}"
        if mismatches:
            detail = "; ".join(f"{k}: ours {a}, torch {b}" for k, (a, b) in mismatches.items())
            raise CnnzooError(f"the arithmetic disagrees with {what} for {spec.label}: {detail}")
    where = "" if given else " (MACs at 16x16)"
    return f"checked against {what}{where}: weight shapes, parameters, output sizes and MACs agree"


def example_report() -> str:
    image = [[float(5 * r + c + 1) for c in range(5)] for r in range(5)]
    kernel = [[1.0] * 3 for _ in range(3)]
    x, w = torch.tensor(image)[None, None], torch.ones(1, 1, 3, 3)
    lines = ["input (5x5, the values 1..25):", _grid(image),
             "kernel: 3x3 of ones (each output = sum of a 3x3 window)", ""]
    for dilation in (1, 2):
        ours = ca.naive_conv2d(image, kernel, dilation=dilation)
        theirs = F.conv2d(x, w, dilation=dilation)[0, 0].tolist()
        agree = "agrees with" if ours == theirs else "DIFFERS from"
        span = 2 * dilation + 1
        lines += [f"dilation {dilation} (span {span}x{span}, no padding): output {len(ours)}x{len(ours[0])}, "
                  f"{agree} torch.nn.functional.conv2d", _grid(ours), ""]
    return "\n".join(lines).rstrip()


def _grid(values: list[list[float]]) -> str:
    cells = [[f"{v:g}" for v in row] for row in values]
    width = max(len(c) for row in cells for c in row)
    return "\n".join("  " + " ".join(c.rjust(width) for c in row) for row in cells)


def run_conv(args: argparse.Namespace) -> int:
    print(example_report() if args.example else conv_report(args))
    return 0


# ------------------------------------------------------------------------------ fully connected


def fc_report(args: argparse.Namespace) -> str:
    if min(args.in_chs, args.hidden, args.kernel, args.out_chs or 1) < 1:
        raise CnnzooError("--in, --hidden, --kernel and --out must be positive")
    (h, w), c = args.size, args.in_chs
    maps = args.out_chs or args.hidden
    fc = ca.LinearSpec(h * w * c, args.hidden, bias=args.bias,
                       label=f"fully connected ({args.hidden} neuron{'s' if args.hidden > 1 else ''})")
    conv = ca.ConvSpec(c, maps, args.kernel, bias=args.bias,
                       label=f"convolution {args.kernel}x{args.kernel} ({maps} map{'s' if maps > 1 else ''})")
    try:
        conv_out = (maps, *conv.output_size(args.size))
    except ValueError as err:
        raise CnnzooError(str(err)) from None
    rows = [[fc.label, _fmt_shape(fc.weight_shape, brackets=True), f"{fc.params:,}", f"{fc.macs:,}", str(args.hidden)],
            [conv.label, _fmt_shape(conv.weight_shape, brackets=True), f"{conv.params:,}",
             f"{conv.macs(args.size):,}", _fmt_shape(conv_out)]]
    lines = [f"a {h}x{w}x{c} image ({h * w * c:,} values)", "",
             format_table(["Layer", "Weight shape", "Params", "MACs", "Output"], rows, right_align={2, 3}), "",
             (f"fully connected: every neuron has a weight per value, {h} x {w} x {c} = {h * w * c:,}, "
              f"times {args.hidden} neuron{'s' if args.hidden > 1 else ''} = {fc.macs:,} weights"),
             (f"convolution: one {args.kernel}x{args.kernel}x{c} kernel per map ({args.kernel ** 2 * c} weights), "
              f"shared by all {conv_out[1] * conv_out[2]:,} positions, so {conv.params:,} parameters for "
              f"{maps} map{'s' if maps > 1 else ''} of {conv_out[1]}x{conv_out[2]} outputs"),
             f"fully connected / convolution: {fc.params:,} / {conv.params:,} parameters = {fc.params / conv.params:,.1f}",
             _torch_check([conv], [args.size]),
             _torch_check([fc], [args.size], what="torch.nn.Linear")]
    return "\n".join(lines)


def run_fc(args: argparse.Namespace) -> int:
    print(fc_report(args))
    return 0


# ------------------------------------------------------------------------------ receptive field


def stack_report(dilations: tuple[int, ...], kernel: int, *, paths: bool) -> str:
    layers = rf.dilated_stack(dilations, kernel)
    fields = rf.stack_fields(layers)
    rows = [[f"conv{i + 1}", f"{kernel}x{kernel}", str(g.dilation[0]), str(f.size[0]), str(f.jump[0])]
            for i, (g, f) in enumerate(zip(layers, fields))]
    out = [f"{len(layers)} stride-1 {kernel}x{kernel} convolutions with dilations {', '.join(map(str, dilations))}", "",
           format_table(["Layer", "Kernel", "Dilation", "RF", "Jump"], rows, right_align={2, 3, 4}), ""]
    return "\n".join(out + [_footprint_text(layers, paths)])


def _footprint_text(layers: list[rf.LayerGeom], paths: bool) -> str:
    field = rf.stack_fields(layers)[-1] if layers else rf.RF()
    if max(field.size) > MAX_GRID:
        return f"(the {field.size[0]}x{field.size[1]} field is too large to draw; the limit is {MAX_GRID})"
    title = ("paths from each input pixel to one output pixel (1-9, relative; '.': none)" if paths
             else "input pixels that reach one output pixel ('#': reached, '.': not)")
    return f"{title}:\n{rf.format_grid(rf.footprint(layers), paths=paths)}"


def model_rf_report(args: argparse.Namespace) -> str:
    model = create_model(args.name, in_chans=args.input_size[0] if args.input_size else None)
    try:
        report = rf.receptive_fields(model, args.input_size, all_layers=args.all)
    except RuntimeError as err:
        size = "x".join(map(str, args.input_size or model.default_cfg["input_size"]))
        raise CnnzooError(f"{args.name} cannot run on input {size}: {str(err).splitlines()[0]}") from None
    text = f"{args.name}\n\n{report}"
    if args.grid or args.paths:
        field = report.features or report.output
        if field.chain is None:
            text += (f"\n\n{args.name} is not a single chain of convolutions (it has branches or global "
                     "context), so its footprint is not drawn")
        else:
            text += "\n\n" + _footprint_text(list(field.chain), args.paths)
    return text


def run_rf(args: argparse.Namespace) -> int:
    if args.dilations and args.name:
        raise CnnzooError("give either a model NAME or --dilations, not both")
    if args.dilations:
        if args.kernel < 1:
            raise CnnzooError("--kernel must be positive")
        print(stack_report(args.dilations, args.kernel, paths=args.paths))
    elif args.name:
        print(model_rf_report(args))
    else:
        raise CnnzooError("give a model NAME (see `cnnzoo list`) or --dilations D1,D2,...")
    return 0
