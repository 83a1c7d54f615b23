"""Receptive field, jump (effective stride) and effective padding of every layer of a model.

For a layer with kernel k, stride s, padding p and dilation d (dilated span k' = d(k-1)+1)
and an input whose features have receptive field r, jump j and first centre c:
    r_out = r + (k' - 1) * j          j_out = j * s          c_out = c + ((k' - 1)/2 - p) * j
(Araujo, Norris & Sim 2019, "Computing Receptive Fields of Convolutional Neural Networks",
Distill; Dumoulin & Visin 2016). The jump is the distance, in input pixels, between two
neighbouring features (the product of the strides so far, also called the effective stride);
c - (r - 1)/2 is minus the effective padding.

`receptive_fields(model)` runs one image through a model under a torch function mode that
carries these numbers along with every tensor, so it follows any architecture: branches
joined by addition or concatenation take the union of their fields, a padding shifts the
centre, global pooling (and flatten) sees the whole image, and a gate computed from a global
pool (squeeze-excite) keeps the local field but is flagged as mixing in global context.

A stack of dilated convolutions has holes: `footprint` counts, for one output pixel, the
paths from each input pixel, and `format_grid` draws them; with dilations 2, 2, 2 only one
pixel in four reaches the output (the gridding effect of Yu & Koltun 2016 / Wang et al.
2018), with 1, 2, 4 every pixel of the 15x15 field does.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._common import default_input_size, eval_mode, model_device

Pair = tuple[int, int]


@dataclass(frozen=True)
class LayerGeom:
    """What a conv/pool layer does to positions: kernel, stride, padding (before the first
    pixel) and dilation, per axis (height, width)."""

    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)


@dataclass(frozen=True)
class RF:
    """Receptive field of the features of one tensor, per axis (height, width)."""

    size: Pair = (1, 1)
    jump: Pair = (1, 1)
    start: tuple[float, float] = (0.0, 0.0)  # centre of feature (0, 0)'s field, input pixel coords
    is_global: bool = False  # after global pooling: every input pixel
    context: bool = False  # local field plus global context from a squeeze-excite gate
    chain: tuple[LayerGeom, ...] | None = ()  # the conv/pool layers from the input, when a chain

    @property
    def effective_padding(self) -> tuple[float, float]:
        return tuple((r - 1) / 2 - c for r, c in zip(self.size, self.start))  # type: ignore[return-value]

    def apply(self, geom: LayerGeom) -> "RF":
        if self.is_global:
            return self
        size, jump, start = [], [], []
        for r, j, c, k, s, p, d in zip(self.size, self.jump, self.start, geom.kernel, geom.stride,
                                       geom.padding, geom.dilation):
            span = d * (k - 1) + 1
            size.append(r + (span - 1) * j)
            jump.append(j * s)
            start.append(c + ((span - 1) / 2 - p) * j)
        chain = self.chain + (geom,) if self.chain is not None else None
        return replace(self, size=tuple(size), jump=tuple(jump), start=tuple(start), chain=chain)

    def shifted(self, pad_before: Pair) -> "RF":
        """After padding the feature map by `pad_before` (negative: cropping) on top/left."""
        start = tuple(c - p * j for c, p, j in zip(self.start, pad_before, self.jump))
        chain = None if any(pad_before) else self.chain
        return replace(self, start=start, chain=chain)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.is_global:
            return "global"
        text = "x".join(map(str, self.size)) if self.size[0] != self.size[1] else str(self.size[0])
        return text + ("+g" if self.context else "")


def merge(fields: Sequence[RF]) -> RF:
    """The union of several fields (inputs of an addition, concatenation, product)."""
    local = [f for f in fields if not f.is_global]
    if not local:
        return fields[0]
    context = any(f.context for f in fields) or len(local) < len(fields)
    if len(set(local)) == 1:
        return replace(local[0], context=context)
    size, start = [], []
    for axis in range(2):
        lo = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in local)
        hi = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in local)
        size.append(int(round(hi - lo)) + 1)
        start.append((lo + hi) / 2)
    jump = tuple(max(f.jump[axis] for f in local) for axis in range(2))
    return RF(tuple(size), jump, tuple(start), False, context, _merge_chains([f.chain for f in local]))  # type: ignore[arg-type]


def _merge_chains(chains: list[tuple[LayerGeom, ...] | None]) -> tuple[LayerGeom, ...] | None:
    # y - R(y) (a chain joined with a prefix of itself, e.g. the input) reaches the same pixels
    # as the longer chain when every kernel has a centre tap; anything else is not a chain.
    if any(c is None for c in chains):
        return None
    longest = max(chains, key=len)
    return longest if all(longest[:len(c)] == c for c in chains) else None


# ------------------------------------------------------------------------------ tracing


def _pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    return value if len(value) == 2 else (value[0], value[0])  # type: ignore[return-value]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv_geom(args: tuple, kwargs: dict) -> LayerGeom:
    weight = _arg(args, kwargs, 1, "weight")
    kernel = tuple(weight.shape[-2:])
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # PyTorch puts the odd pixel of an even span at the end
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return LayerGeom(kernel, stride, _pair(padding), dilation)  # type: ignore[arg-type]


def _pool_geom(args: tuple, kwargs: dict, has_dilation: bool) -> LayerGeom:
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    padding = _pair(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if has_dilation else (1, 1)
    return LayerGeom(kernel, stride, padding, dilation)


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


class _Tracer(TorchFunctionMode):
    """Attaches an RF to every spatial tensor computed from the traced input."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[int, tuple[weakref.ref, RF]] = {}
        self.last_pooled: RF | None = None  # the local field the last global pooling summarised

    def get(self, tensor: torch.Tensor) -> RF | None:
        entry = self._fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def set(self, tensor: torch.Tensor, field: RF) -> None:
        self._fields[id(tensor)] = (weakref.ref(tensor), field)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in _tensors(list(args) + list(kwargs.values())) if self.get(t) is not None]
        if inputs:
            outputs = [out] if isinstance(out, torch.Tensor) else list(_tensors(out))[:1]
            for tensor in outputs:
                self.set(tensor, self._propagate(getattr(func, "__name__", ""), args, kwargs, inputs, tensor))
        return out

    def _propagate(self, name: str, args: tuple, kwargs: dict, inputs: list[torch.Tensor], out: torch.Tensor) -> RF:
        first = inputs[0]
        field = merge([self.get(t) for t in inputs])  # type: ignore[misc]
        if name == "conv2d":
            return self.get(args[0]).apply(_conv_geom(args, kwargs))  # type: ignore[union-attr]
        if name in ("max_pool2d", "max_pool2d_with_indices", "_max_pool2d", "avg_pool2d"):
            return self.get(args[0]).apply(_pool_geom(args, kwargs, has_dilation=name != "avg_pool2d"))  # type: ignore[union-attr]
        if name == "pad":
            pad = list(_arg(args, kwargs, 1, "pad")) + [0, 0, 0, 0]
            return self.get(args[0]).shifted((pad[2], pad[0]))  # type: ignore[union-attr]
        if out.ndim < 4 or first.ndim < 4 or (tuple(out.shape[-2:]) == (1, 1) and tuple(first.shape[-2:]) != (1, 1)):
            if not field.is_global:
                self.last_pooled = field
            return replace(field, is_global=True, chain=None)
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return field.apply(_adaptive_geom(first.shape[-2:], out.shape[-2:]))
        return field


def _adaptive_geom(in_size: Sequence[int], out_size: Sequence[int]) -> LayerGeom:
    # Exact when the sizes divide; otherwise the largest window adaptive pooling uses.
    kernel = tuple(math.ceil(i / o) + (0 if i % o == 0 else 1) for i, o in zip(in_size, out_size))
    stride = tuple(max(1, i // o) for i, o in zip(in_size, out_size))
    return LayerGeom(kernel, stride)  # type: ignore[arg-type]


@dataclass
class RFRow:
    name: str
    type: str
    geom: LayerGeom | None
    output_shape: tuple[int, ...]
    field: RF


_GEOM_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
               nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)


def _module_geom(module: nn.Module) -> LayerGeom | None:
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            padding = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
        return LayerGeom(_pair(module.kernel_size), _pair(module.stride), _pair(padding), _pair(module.dilation))
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = module.dilation if isinstance(module, nn.MaxPool2d) else 1
        stride = module.stride if module.stride not in (None, (), []) else module.kernel_size
        return LayerGeom(_pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(dilation))
    return None


@dataclass
class RFReport:
    """Per-layer fields of a model, the field of its output, and that of the last feature map
    (what the final global pooling summarises), for one input size."""

    rows: list[RFRow]
    output: RF
    features: RF | None
    input_size: tuple[int, ...]

    def __str__(self) -> str:
        return format_report(self)


def receptive_fields(model: nn.Module, input_size: Sequence[int] | None = None, *,
                     all_layers: bool = False) -> RFReport:
    """Per-layer receptive fields of `model` for one image of `input_size` (C, H, W; default:
    the model's default_cfg).

    Rows list the layers that change the field (convolutions, pools, paddings) in the order
    they run, or every leaf module with `all_layers`.
    """
    input_size = input_size or default_input_size(model)
    rows: list[RFRow] = []
    tracer = _Tracer()

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = output if isinstance(output, torch.Tensor) else next(iter(_tensors(output)), None)
            field = tracer.get(tensor) if tensor is not None else None
            if field is not None:
                rows.append(RFRow(name, type(module).__name__, _module_geom(module), tuple(tensor.shape[1:]), field))
        return record

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    chosen = leaves if all_layers else [(n, m) for n, m in leaves if isinstance(m, _GEOM_TYPES)]
    handles = [m.register_forward_hook(hook(n)) for n, m in chosen]
    x = torch.zeros(1, *input_size, device=model_device(model))
    try:
        with eval_mode(model), tracer:
            tracer.set(x, RF())
            out = model(x)
        tensor = out if isinstance(out, torch.Tensor) else next(iter(_tensors(out)))
        output = tracer.get(tensor) or RF(is_global=True, chain=None)
    finally:
        for h in handles:
            h.remove()
    features = tracer.last_pooled if output.is_global else output
    return RFReport(rows, output, features, tuple(input_size))


def stack_fields(layers: Sequence[LayerGeom]) -> list[RF]:
    """The field after each layer of a plain stack."""
    fields, field = [], RF()
    for geom in layers:
        field = field.apply(geom)
        fields.append(field)
    return fields


def dilated_stack(dilations: Sequence[int], kernel: int = 3) -> list[LayerGeom]:
    """Stride-1 'same' convolutions with the given dilations, e.g. (1, 2, 4)."""
    return [LayerGeom((kernel, kernel), (1, 1), (d * (kernel - 1) // 2,) * 2, (d, d)) for d in dilations]


# ------------------------------------------------------------------------------ footprint


def _footprint_1d(layers: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Paths from each input position to output position 0 along one axis, for layers given
    as (kernel, stride, padding, dilation); index 0 of the result is the leftmost position."""
    counts = {0: 1}
    for k, s, p, d in reversed(layers):
        nxt: dict[int, int] = {}
        for index, c in counts.items():
            for t in range(k):
                pos = index * s - p + t * d
                nxt[pos] = nxt.get(pos, 0) + c
        counts = nxt
    lo, hi = min(counts), max(counts)
    out = np.zeros(hi - lo + 1, dtype=np.int64)
    for pos, c in counts.items():
        out[pos - lo] = c
    return out


def footprint(layers: Sequence[LayerGeom]) -> np.ndarray:
    """(H, W) path counts from each input pixel of the receptive field to one output pixel:
    zero where the pixel does not reach it at all."""
    rows = _footprint_1d([(g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]) for g in layers])
    cols = _footprint_1d([(g.kernel[1], g.stride[1], g.padding[1], g.dilation[1]) for g in layers])
    return np.outer(rows, cols)


def format_grid(counts: np.ndarray, *, paths: bool = False) -> str:
    """The footprint as text: '#' (or a path-count digit 1-9) where a pixel reaches the
    output, '.' where it does not."""
    top = counts.max() if counts.size else 1

    def cell(c: int) -> str:
        if c == 0:
            return "."
        return str(max(1, math.ceil(9 * c / top))) if paths else "#"

    lines = [" ".join(cell(int(c)) for c in row) for row in counts]
    reached = int((counts > 0).sum())
    lines.append(f"{reached} of {counts.size} pixels in the {counts.shape[0]}x{counts.shape[1]} field reach "
                 f"the output ({100 * reached / counts.size:.0f}%)")
    return "\n".join(lines)


def format_report(report: RFReport) -> str:
    headers = ("Layer", "Type", "k", "s", "d", "Output", "RF", "Jump", "Eff. pad")
    table = []
    for r in report.rows:
        g = r.geom
        geo = (_fmt_pair(g.kernel), _fmt_pair(g.stride), _fmt_pair(g.dilation)) if g else ("", "", "")
        f = r.field
        table.append((r.name, r.type, *geo, "x".join(map(str, r.output_shape)), f.describe(),
                      "" if f.is_global else _fmt_pair(f.jump),
                      "" if f.is_global else _fmt_pair(tuple(_fmt_num(p) for p in f.effective_padding))))
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers)]
    right = (False, False, True, True, True, False, True, True, True)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    rule = "-" * len(line(headers))
    out = [line(headers), rule] + [line(row) for row in table] + [rule]
    size = report.input_size
    out.append(f"Input {'x'.join(map(str, size[1:]))}; jump = effective stride, in input pixels")
    if report.output.is_global and report.features is not None:
        out.append(f"Last feature map: {_describe_field(report.features, size)}; the output pools it globally")
    else:
        out.append(f"Output: {_describe_field(report.output, size)}")
    if any(r.field.context for r in report.rows) or report.output.context:
        out.append("+g: the local field plus global context from a squeeze-excite gate (global pooling)")
    return "\n".join(out)


def _describe_field(field: RF, input_size: Sequence[int]) -> str:
    if field.is_global:
        return "every input pixel (global pooling)"
    text = f"receptive field {field.describe()}, jump {_fmt_pair(field.jump)}"
    if any(r > s for r, s in zip(field.size, input_size[1:])):
        text += " (larger than the input: border features see padding)"
    return text


def _fmt_pair(pair: Sequence[Any]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _fmt_num(value: float) -> str | float:
    return int(value) if float(value).is_integer() else value
