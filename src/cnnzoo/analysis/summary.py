"""A per-layer summary like Keras' `model.summary()`: output shapes, parameters and MACs.

MACs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the aten ops that
actually run (convolutions with any stride/padding/dilation/groups, linear layers, matmuls,
attention); it reports FLOPs as 2 x MACs, so MACs = FLOPs / 2 exactly. Normalisation,
activations and pooling are not multiply-accumulates and count zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._common import default_input_size, eval_mode, model_device

NOT_RUN = "not run in eval mode"


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple | str
    params: int
    macs: int
    depth: int
    trainable: int = 0  # of `params`, those with requires_grad (the rest are frozen)


@dataclass
class ModelSummary:
    model_name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    macs: int = 0
    norm_statistics: int = 0  # BatchNorm running means and variances: buffers, not parameters
    keras: bool = False  # print the totals as Keras counts them (see `keras_counts`)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def keras_counts(self) -> tuple[int, int, int]:
        """(total, trainable, non-trainable) as Keras' `model.summary()` counts them: BatchNorm's
        moving mean and variance are "non-trainable params" there, buffers here."""
        total = self.total_params + self.norm_statistics
        return total, self.trainable_params, total - self.trainable_params

    def __str__(self) -> str:
        return format_summary(self)


def summary(model: nn.Module, input_size: tuple[int, ...] | None = None, *, depth: int | None = None,
            device: str | torch.device | None = None, keras: bool = False) -> ModelSummary:
    """Run one image of `input_size` (C,H,W; default: the model's default_cfg) through `model`.

    `depth` limits the table to modules at most that deep (1 = the model's children); the
    totals always cover the whole model. The image is made on `device` (default: the
    model's own device). `keras=True` prints the totals as Keras counts them.
    """
    input_size = input_size or default_input_size(model)
    x = torch.zeros((1, *input_size), device=device or model_device(model))
    shapes, order = _record_output_shapes(model, x)
    root = type(model).__name__
    counts = _flop_counts_by_module(model, x)
    rows = []
    for name in order + _not_run(model, shapes):
        module = model.get_submodule(name)
        level = name.count(".") + 1
        if not _shown(module, level, depth):
            continue
        recurse = depth is not None and level == depth
        own = list(module.parameters(recurse=recurse))
        rows.append(LayerRow(
            name=name, type=type(module).__name__, output_shape=shapes.get(name, NOT_RUN),
            params=sum(p.numel() for p in own),
            macs=_module_macs(counts, f"{root}.{name}", module, recurse), depth=level,
            trainable=sum(p.numel() for p in own if p.requires_grad),
        ))
    params = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(
        model_name=getattr(model, "default_cfg", {}).get("architecture", root),
        input_size=tuple(input_size), rows=rows,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        norm_statistics=norm_statistics(model),
        macs=sum(counts.get("Global", {}).values()) // 2, keras=keras,
    )


def _not_run(model: nn.Module, shapes: dict) -> list[str]:
    """Modules with parameters that the eval-mode forward never called (auxiliary heads)."""
    return [n for n, m in model.named_modules() if n and n not in shapes and any(True for _ in m.parameters())]


def _shown(module: nn.Module, level: int, depth: int | None) -> bool:
    is_leaf = not any(True for _ in module.children())
    has_own_params = any(True for _ in module.parameters(recurse=False))
    if depth is None:
        return is_leaf or has_own_params
    return level == depth or (level < depth and (is_leaf or has_own_params))


def _module_macs(counts: dict, key: str, module: nn.Module, recurse: bool) -> int:
    total = sum(counts.get(key, {}).values())
    if not recurse and any(True for _ in module.children()):
        # A container shown for its own parameters: count only what its children did not.
        child_total = sum(sum(counts.get(f"{key}.{n}", {}).values()) for n, _ in module.named_children())
        total -= child_total
    return total // 2


def _record_output_shapes(model: nn.Module, x: torch.Tensor) -> tuple[dict, list[str]]:
    shapes: dict[str, tuple | str] = {}
    order: list[str] = []

    def hook(name):
        def record(module, inputs, output):
            if name not in shapes:
                order.append(name)
                shapes[name] = _shape_of(output)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, order


def _shape_of(output) -> tuple | str:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return " ".join(str(_shape_of(o)) for o in output)
    return type(output).__name__


def _flop_counts_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, dict]:
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_flop_counts()


def _fmt_shape(shape: tuple | str) -> str:
    if isinstance(shape, tuple):
        return "[" + ", ".join(str(s) for s in shape) + "]"
    return shape


def format_summary(s: ModelSummary) -> str:
    headers = ("Layer", "Type", "Output shape", "Params", "MACs")
    table = [(("  " * (r.depth - 1)) + r.name, r.type, _fmt_shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}")
             for r in s.rows]
    right = (False, False, False, True, True)
    if s.total_params != s.trainable_params:  # something is frozen: say where, layer by layer
        headers, right = (*headers[:4], "Trainable", headers[4]), (*right, True)
        table = [(*row[:4], _trainable(r), row[4]) for row, r in zip(table, s.rows)]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    rule = "-" * len(line(headers))
    out = [f"{s.model_name}  input {'x'.join(map(str, s.input_size))} (batch 1)", rule, line(headers), rule]
    out += [line(row) for row in table]
    out += [rule] + (_keras_totals(s) if s.keras else _totals(s))
    return "\n".join(out)


def _keras_totals(s: ModelSummary) -> list[str]:
    total, trainable, frozen = s.keras_counts()
    return [
        f"Total params:          {total:,}  (Keras' count: parameters + {s.norm_statistics:,} BatchNorm statistics)",
        f"Trainable params:      {trainable:,}",
        f"Non-trainable params:  {frozen:,}  (frozen parameters + BatchNorm moving means and variances)",
        f"MACs:                  {s.macs:,}  ({s.macs / 1e6:,.2f} M)",
        f"FLOPs (= 2 x MACs):    {s.flops:,}  ({s.flops / 1e9:,.3f} G)",
    ]


def _totals(s: ModelSummary) -> list[str]:
    out = [
        f"Total params:          {s.total_params:,}",
        f"Trainable params:      {s.trainable_params:,}",
        f"Non-trainable params:  {s.total_params - s.trainable_params:,}"
        + ("  (frozen)" if s.total_params != s.trainable_params else ""),
        f"MACs:                  {s.macs:,}  ({s.macs / 1e6:,.2f} M)",
        f"FLOPs (= 2 x MACs):    {s.flops:,}  ({s.flops / 1e9:,.3f} G)",
    ]
    if s.norm_statistics:
        frozen = s.total_params - s.trainable_params
        out += [f"BatchNorm statistics:  {s.norm_statistics:,}  (running means and variances: buffers, not parameters; "
                f"Keras counts them as non-trainable params: {s.total_params + s.norm_statistics:,} in all, "
                f"{frozen + s.norm_statistics:,} non-trainable)"]
    return out


def _trainable(row: LayerRow) -> str:
    if row.params == 0:
        return "-"
    return "all" if row.trainable == row.params else "frozen" if row.trainable == 0 else f"{row.trainable:,}"


def norm_statistics(model: nn.Module) -> int:
    """Values in BatchNorm running means and variances (buffers updated in training mode, never
    by the optimiser; the step counters are left out)."""
    return sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
