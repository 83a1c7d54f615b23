"""The fast inference form of a model: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, so a convolution followed by it equals
one convolution with scaled weights and a shifted bias (the folding every inference engine
does; Jacob et al. 2018, "Quantization and Training with Integer-Arithmetic-Only Inference",
arXiv 1712.05877, section 3.2). It removes one pass over each feature map.

The pairs are found by running the model once: a BatchNorm whose input is exactly the output
of a convolution (the same tensor), each called once, is folded. The folded copy is checked
against the original on that input before it is returned.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# A folded or exported form may differ from the model by this many times the model's own float32
# rounding error (`rounding_noise`) before it counts as different.
NOISE_FACTOR = 4


def conv_bn_pairs(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for each BatchNorm2d that reads a Conv2d's output directly."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, int]] = {}
    calls: dict[str, int] = {}
    keep: list[torch.Tensor] = []  # hold the tensors so their ids stay unique during the pass
    pairs: list[tuple[str, str]] = []

    def after_conv(module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        keep.append(output)
        produced[id(output)] = names[module], output._version
        calls[names[module]] = calls.get(names[module], 0) + 1

    def before_bn(module: nn.Module, args: tuple) -> None:
        calls[names[module]] = calls.get(names[module], 0) + 1
        source = produced.get(id(args[0]))
        # the same tensor, unchanged since the conv wrote it (not through an in-place ReLU)
        if source is not None and source[1] == args[0]._version:
            pairs.append((source[0], names[module]))

    handles = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) is nn.Conv2d]
    handles += [m.register_forward_pre_hook(before_bn) for m in model.modules() if type(m) is nn.BatchNorm2d]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    readers: dict[str, int] = {}
    for conv, _ in pairs:
        readers[conv] = readers.get(conv, 0) + 1
    return [(c, b) for c, b in pairs if calls[c] == 1 and calls[b] == 1 and readers[c] == 1]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale `conv`'s weights and set its bias so that conv alone computes bn(conv(x)) (eval mode)."""
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps) if bn.affine else \
        torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.data.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift + (bias - bn.running_mean) * scale)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module, sample: torch.Tensor, *, atol: float = 1e-4) -> tuple[nn.Module, int]:
    """An eval-mode copy of `model` with every foldable conv-BN pair folded; (copy, pairs folded).

    The copy's output on `sample` must match the original's within `atol` relative to the
    logits' scale, else the original is returned unfolded (with a warning saying why).
    """
    model = model.eval()
    pairs = conv_bn_pairs(model, sample)
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        fold_conv_bn(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        _set_module(folded, bn_name, nn.Identity())
    with torch.no_grad():
        want, got = model(sample), folded(sample)
    worst = float((want - got).abs().max())
    allowed = atol * max(1.0, float(want.abs().max()))
    if worst > allowed and worst > NOISE_FACTOR * rounding_noise(model, sample, want):  # beyond float32 rounding
        log.warning("folding BatchNorm changed the output by %.3g; using the unfolded model", worst)
        return model, 0
    return folded, len(pairs)


def rounding_noise(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> float:
    """How far `out`, `model`'s float32 output on `x`, is from the same function computed in
    float64: the rounding error any other float32 form of the model (folded, exported) may show
    as well. Deep networks with unnormalised activations (random weights) amplify it far past
    float32's 1e-7; a trained network stays near it."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        return float((exact(x.double()).float() - out.float()).abs().max())


def fast_inference_model(model: nn.Module, sample: torch.Tensor, *, fold_bn: bool = True,
                         channels_last: bool = True) -> nn.Module:
    """The model as `predict`, `eval` and the exporters run it: eval mode, BatchNorm folded,
    channels_last weights (the layout oneDNN's CPU convolutions prefer)."""
    model = model.eval()
    if fold_bn:
        model, count = fold_batchnorm(model, sample.to(next(model.parameters()).device))
        log.debug("folded %d BatchNorm layers into their convolutions", count)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
