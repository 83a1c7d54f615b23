"""Write a model as ONNX, TorchScript or a torch.export program, then prove the file works.

Every export is loaded back (ONNX Runtime, `torch.jit.load`, `torch.export.load`) and run on
sample inputs; the largest absolute difference from the eager model and the top-1 agreement
are measured, and an export outside the tolerance is an `ExportError`. The preprocessing
(mean/std, input size, class names) travels inside the file: ONNX metadata properties, or a
`cnnzoo.json` extra file in the TorchScript and torch.export archives.

TorchScript: `torch.jit.script` first; a model that cannot be scripted (Python-side control
flow, e.g. the ResNet class's loop over its stages by name) is traced instead, and the result
says which and why.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CnnzooError, DataError
from .fuse import NOISE_FACTOR, rounding_noise

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "exported")
BACKENDS = ("torch", "onnxruntime")  # what runs a model in `predict` and `eval`
DEFAULT_OPSET = 18
# |eager - exported| may be at most RTOL x the largest eager |logit| (and at least ATOL): fp32
# kernels reorder sums differently (ONNX Runtime, folded BatchNorm), nothing more; or, where the
# model itself rounds worse, NOISE_FACTOR x its own float32 error (fuse.rounding_noise).
RTOL, ATOL = 1e-4, 1e-4


class ExportError(CnnzooError):
    """An export that failed, or whose artefact does not reproduce the eager model."""


@dataclass
class ExportReport:
    format: str
    path: Path
    method: str  # how the graph was captured: "dynamo", "scripted", "traced", "torch.export"
    note: str = ""  # why scripting fell back to tracing, when it did
    max_abs_diff: float = 0.0
    tolerance: float = 0.0
    top1_agreement: float = 1.0
    samples: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.format} ({self.method}) -> {self.path}: max |diff| {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:.3g}), top-1 agreement {100 * self.top1_agreement:.1f}% "
                f"on {self.samples} sample(s)")


def model_metadata(model: nn.Module, input_size: Sequence[int], classes: Sequence[str] | None = None,
                   name: str | None = None) -> dict[str, str]:
    """The preprocessing a deployed model needs, as strings (ONNX metadata is string to string)."""
    cfg = getattr(model, "default_cfg", {}) or {}
    meta = {
        "cnnzoo_model": name or str(cfg.get("architecture", type(model).__name__)),
        "input_size": json.dumps([int(v) for v in input_size]),
        "mean": json.dumps([float(v) for v in cfg.get("mean", ())]),
        "std": json.dumps([float(v) for v in cfg.get("std", ())]),
        "interpolation": str(cfg.get("interpolation", "bilinear")),
        "crop_pct": str(cfg.get("crop_pct", 0.875)),
        "layout": "NCHW float32, normalised: (pixel / 255 - mean) / std",
    }
    if classes is not None:
        meta["class_names"] = json.dumps(list(classes))
    return meta


def sample_inputs(input_size: Sequence[int], batch: int, seed: int = 0) -> torch.Tensor:
    """Normalised-image-like inputs: standard normal, reproducible."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_size), generator=gen)


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and deprecation warnings; the report says what matters."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_model(model: nn.Module, fmt: str, path: str | Path, *, input_size: Sequence[int],
                 dynamic_batch: bool = False, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
                 reference: nn.Module | None = None, samples: int = 4, onnx_exporter: str = "dynamo"
                 ) -> ExportReport:
    """Export `model` (eval mode) to `path` and verify it against `reference` (default: `model`).

    `reference` lets the fast form (folded BatchNorm) be exported while it is checked against
    the plain eager model.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "exported" and path.suffix != ".pt2":
        raise ExportError(f"{path}: torch.export archives must end in .pt2 (torch.export.load refuses others)")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    # a batch of 2: tracing at 1 would make the batch size a constant (0/1 specialisation)
    example = sample_inputs(input_size, 2 if dynamic_batch else 1, seed=1)
    metadata = dict(metadata or {})
    writer = {"onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported}[fmt]
    try:
        with _quiet():
            method, note = writer(model, example, path, dynamic_batch=dynamic_batch, opset=opset, metadata=metadata,
                                  exporter=onnx_exporter)
    except ExportError:
        raise
    except Exception as err:  # the exporters raise many types; say which model and format failed
        raise ExportError(f"{fmt} export failed: {type(err).__name__}: {_first_line(err)}") from err
    report = ExportReport(fmt, path, method, note, metadata=metadata)
    runner = load_exported(fmt, path)
    verify(reference if reference is not None else model, runner, input_size, report,
           batch=samples if dynamic_batch else 1, rounds=1 if dynamic_batch else samples)
    return report


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool, opset: int,
                metadata: dict[str, str], exporter: str = "dynamo") -> tuple[str, str]:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx and onnxruntime packages: pip install 'cnnzoo[export]'") \
            from None
    if exporter == "dynamo":  # PyTorch's supported exporter (torch.export, then onnxscript)
        shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=shapes, verbose=False)
        proto = program.model_proto
    else:  # the TorchScript-based exporter: deprecated, but ~10x quicker to run (the model sweep)
        buffer = io.BytesIO()
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=min(opset, 17),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None)
        proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return exporter, ""


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool, opset: int,
                       metadata: dict[str, str], **_: Any) -> tuple[str, str]:
    try:
        module, method, note = torch.jit.script(model), "scripted", ""
    except Exception as err:  # noqa: BLE001 -- TorchScript's frontend raises many types; trace instead
        note = f"{type(model).__name__} is not scriptable ({_first_line(err).rstrip(':')}); traced instead"
        log.info("%s", note)
        module, method = torch.jit.trace(model, example, check_trace=False), "traced"
    torch.jit.save(module, str(path), _extra_files={"cnnzoo.json": json.dumps(metadata)})
    return method, note


def _write_exported(model: nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool, opset: int,
                    metadata: dict[str, str], **_: Any) -> tuple[str, str]:
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path), extra_files={"cnnzoo.json": json.dumps(metadata)})
    return "torch.export", ""


def load_exported(fmt: str, path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the exported artefact on a float tensor, as its runtime loads it."""
    if fmt == "onnx":
        return OnnxRuntimeModel(path)
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
    else:
        module = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def read_metadata(fmt: str, path: str | Path) -> dict[str, str]:
    """The preprocessing stored in an exported file."""
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    extra = {"cnnzoo.json": ""}
    if fmt == "torchscript":
        torch.jit.load(str(path), _extra_files=extra)
    else:
        torch.export.load(str(path), extra_files=extra)
    return json.loads(extra["cnnzoo.json"] or "{}")


class OnnxRuntimeModel(nn.Module):
    """An ONNX model run by ONNX Runtime's CPU provider, called like a module on torch tensors (a
    module without parameters, so code that switches eval/train mode or moves models takes it).

    `threads` sets ONNX Runtime's intra-op pool (default: its own choice, all cores).
    """

    def __init__(self, path_or_bytes: str | Path | bytes, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("ONNX Runtime is not installed: pip install 'cnnzoo[export]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # no spin-waiting between calls: spinning threads take the cores from whatever runs next
        # (PyTorch, timed side by side in `cnnzoo bench`; other users of a shared machine)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to(torch.float32).contiguous().cpu().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(x.device)


def check_backend(backend: str, device: torch.device) -> None:
    """Refuse a backend that does not exist, or ONNX Runtime (CPU only here) on another device."""
    if backend not in BACKENDS:
        raise DataError(f"backend must be {' or '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise DataError(f"the onnxruntime backend runs on the CPU; use --device cpu (not {device})")


def onnx_runtime_model(model: nn.Module, input_size: Sequence[int], threads: int | None = None, *,
                       any_size: bool = False) -> OnnxRuntimeModel:
    """`model` exported to ONNX in memory (dynamic batch) and opened in ONNX Runtime. `any_size`:
    height and width dynamic too (test-time augmentation at other sizes), where the model allows
    it; a model whose graph fixes its input size (LeNet-5's classifier) is exported at that size."""
    example = sample_inputs(input_size, 2)
    batch = {0: torch.export.Dim("batch", min=1, max=4096)}
    spatial = {2: torch.export.Dim("height", min=8, max=4096), 3: torch.export.Dim("width", min=8, max=4096)}
    for shapes in ([{**batch, **spatial}] if any_size else []) + [batch]:
        try:
            with _quiet():
                program = torch.onnx.export(model.eval(), (example,), dynamo=True, opset_version=DEFAULT_OPSET,
                                            input_names=["input"], output_names=["logits"], dynamic_shapes=(shapes,))
            break
        except Exception as err:  # the exporter raises many types; the fixed-size export is the fallback
            if shapes is batch:
                raise ExportError(f"ONNX export for ONNX Runtime failed: {type(err).__name__}: "
                                  f"{_first_line(err)}") from err
    return OnnxRuntimeModel(program.model_proto.SerializeToString(), threads)


def verify(reference: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], input_size: Sequence[int],
           report: ExportReport, *, batch: int, rounds: int) -> None:
    """Fill `report` with max |diff| and top-1 agreement; raise ExportError beyond tolerance.

    The tolerance is RTOL x the largest eager |logit| (at least ATOL), widened to NOISE_FACTOR x
    the eager model's own float32 rounding error (against float64) where that is larger: deep
    networks with unnormalised activations (random weights) amplify rounding far past 1e-4, and
    an export cannot be closer to the model than PyTorch's own float32 is. A top-1 disagreement
    counts only where the eager top-2 margin exceeds twice the tolerance (a tie within rounding
    is no disagreement).
    """
    reference = reference.eval()
    worst, scale, margins = 0.0, 0.0, []
    for r in range(rounds):
        x = sample_inputs(input_size, batch, seed=100 + r)
        with torch.inference_mode():
            want = reference(x).float()
        got = runner(x).float()
        if got.shape != want.shape:
            raise ExportError(f"the exported model gives shape {tuple(got.shape)}, eager {tuple(want.shape)}")
        if r == 0:
            first = x, want
        worst = max(worst, float((want - got).abs().max()))
        scale = max(scale, float(want.abs().max()))
        classes = want.ndim == 2 and want.shape[1] > 1
        same = want.argmax(1) == got.argmax(1) if classes else torch.ones(want.shape[0], dtype=torch.bool)
        top2 = want.topk(2, dim=1).values if classes else None
        margins += [(bool(s), float(top2[i, 0] - top2[i, 1]) if classes else 0.0) for i, s in enumerate(same)]
    tolerance = max(ATOL, RTOL * scale)
    if worst > tolerance:
        tolerance = max(tolerance, NOISE_FACTOR * rounding_noise(reference, *first))
    report.max_abs_diff, report.samples, report.tolerance = worst, len(margins), tolerance
    report.top1_agreement = sum(same for same, _ in margins) / len(margins)
    real_flips = sum(not same and margin > 2 * tolerance for same, margin in margins)
    if worst > report.tolerance or real_flips:
        raise ExportError(f"{report.format} export of {report.path} does not reproduce the eager model: "
                          f"max |diff| {worst:.3g} > tolerance {report.tolerance:.3g} or top-1 agreement "
                          f"{100 * report.top1_agreement:.1f}%")
