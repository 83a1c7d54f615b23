"""One evaluation path for every task: validation, the final test of a run, and `cnnzoo eval`.

`run_evaluator` feeds a loader through a task's `Evaluator` in eval mode, under no_grad and
the run's precision policy (cnnzoo.engine.runtime). `evaluate_checkpoint` rebuilds a run's
model, data and evaluator from its checkpoint and calls the same function, so it reports what
the run's final test reported for the same checkpoint and split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..data.datasets import missing_path
from ..errors import CnnzooError
from ..export.formats import check_backend, onnx_runtime_model
from ..export.fuse import fast_inference_model
from .config import Config
from .inference import checkpoint_config, model_from_checkpoint, read_checkpoint
from .progress import Progress
from .runtime import Runtime
from .task import DataMeta, Evaluator, get_task
from .tta import WHOLE_IMAGE_MODES


def run_evaluator(model: nn.Module, loader: Iterable, evaluator: Evaluator, runtime: Runtime, progress: Progress,
                  desc: str, *, stop: Callable[[], bool] | None = None) -> Evaluator:
    """Update `evaluator` with every batch of `loader` (until `stop()` says so); the model's
    train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), runtime.autocast():
            for batch in progress.wrap(loader, len(loader), desc):
                if stop is not None and stop():
                    break
                evaluator.update(model, batch)
    finally:
        model.train(was_training)
    return evaluator


def evaluate(model: nn.Module, loader: Iterable, evaluator: Evaluator, runtime: Runtime, progress: Progress,
             desc: str, *, stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """The metrics of `evaluator` over `loader`, as floats."""
    evaluator = run_evaluator(model, loader, evaluator, runtime, progress, desc, stop=stop)
    return {k: float(v) for k, v in evaluator.compute().items()}


def onnx_runtime_form(model: nn.Module, cfg: Config, meta: DataMeta, runtime: Runtime) -> nn.Module:
    """`model` (already in its final form) exported to ONNX in memory and run by ONNX Runtime, for
    `cnnzoo eval --backend onnxruntime`; not for the whole-image tests, which read the network's
    feature maps rather than its output."""
    if cfg.eval.tta in WHOLE_IMAGE_MODES:
        raise CnnzooError(f"--backend onnxruntime: --tta {cfg.eval.tta} reads the network's feature maps, which an "
                          "exported model does not give; use the torch backend for it")
    return onnx_runtime_model(model, meta.input_size, runtime.threads, any_size=True)


def final_form(model: nn.Module, meta: DataMeta, runtime: Runtime, *, fold_bn: bool = True) -> nn.Module:
    """The model as the final test of a run and `cnnzoo eval` run it: an eval-mode copy with BatchNorm
    folded into the convolutions before it (cnnzoo.export.fuse; one pass over each feature map
    less, and TTA multiplies the saving), in the runtime's memory format. Both paths call this,
    so they still agree bit for bit; validation during training uses the model as it trains."""
    if not fold_bn:
        return model
    sample = torch.randn(2, *meta.input_size, generator=torch.Generator().manual_seed(0))
    return fast_inference_model(model, sample, channels_last=runtime.channels_last)


@dataclass
class Evaluation:
    """The result of evaluating a checkpoint: its metrics and the task's detailed report
    (per-class accuracy and confusion for classifiers, per test set for denoisers)."""

    checkpoint: str
    model: str
    task: str
    dataset: str
    split: str
    metrics: dict[str, float]
    report: Any = field(repr=False)
    files: list[Path] = field(default_factory=list)


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str | None = None, tta: str | None = None,
                        crop_size: int | None = None, scales: Sequence[float] | None = None,
                        sizes: Sequence[int] | None = None, amp: str | None = None,
                        batch_size: int | None = None, device: str | None = None, trust: bool = False,
                        image_size: int | None = None, out_dir: str | Path | None = None, fold_bn: bool = True,
                        backend: str = "torch",
                        progress: Progress | None = None, ckpt: dict | None = None) -> Evaluation:
    """Evaluate a training checkpoint with its task's evaluator. Settings left as None are the
    checkpoint's own (its test-time augmentation, evaluation batch size, precision and memory
    format), which is what makes the result equal the run's final test. `ckpt`: the checkpoint
    already read from `path`, so it is not read twice. `split` None: the task's default (for a
    classifier, the test split where the data has one, otherwise all of it). `fold_bn` False: the
    model with its BatchNorm layers as trained (numbers then differ from the final test's in the
    last digits). `backend` "onnxruntime": that model run by ONNX Runtime (cnnzoo[export])."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(path, trust=trust)
    task = get_task(ckpt.get("task", "classify"))
    meta = DataMeta.from_dict(ckpt["meta"])
    cfg = _with_overrides(checkpoint_config(ckpt), tta=tta, crop_size=crop_size, scales=scales, sizes=sizes,
                          eval_batch_size=batch_size, image_size=image_size, amp=amp)
    runtime = Runtime.from_config(cfg.runtime, device)
    check_backend(backend, runtime.device)
    cfg = runtime.stamp(cfg)
    if data is None:
        check_data_found(cfg.data.dataset)
    chosen_split = {} if split is None else {"split": split}  # None: the task's own default
    loader, dataset, *chosen = task.build_eval_data(cfg, meta, runtime.device, dataset=data, **chosen_split)
    split = chosen[0] if chosen else split or "test"  # a task may say which split it chose by default
    model = final_form(runtime.place(model_from_checkpoint(ckpt)), meta, runtime, fold_bn=fold_bn)
    if backend == "onnxruntime":
        model = onnx_runtime_form(model, cfg, meta, runtime)
    evaluator = task.evaluator(cfg, meta, final=True)
    metrics = evaluate(model, loader, evaluator, runtime, progress or Progress("auto"), f"eval {split}")
    result = Evaluation(str(path), ckpt["model_name"], task.name, dataset, split, metrics, evaluator.report())
    if out_dir is not None:
        result.files = result.report.write(Path(out_dir), result)
    return result


def check_data_found(spec: str) -> None:
    """The checkpoint's own dataset, when it is a path that is not there (moved, or stored relative
    to where an older run was started): say how to give it."""
    gone = missing_path(spec)
    if gone is not None:
        raise CnnzooError(f"the checkpoint's dataset {spec} is not found (from {Path.cwd()}); if it moved, give "
                          "it with --data PATH")


def _with_overrides(cfg: Config, *, tta, crop_size, scales, eval_batch_size, image_size, sizes=None,
                    amp=None) -> Config:
    def given(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    return dataclasses.replace(
        cfg,
        eval=dataclasses.replace(cfg.eval, **given(tta=tta, crop_size=crop_size,
                                                   scales=list(scales) if scales is not None else None,
                                                   sizes=list(sizes) if sizes is not None else None)),
        data=dataclasses.replace(cfg.data, **given(eval_batch_size=eval_batch_size, image_size=image_size)),
        runtime=dataclasses.replace(cfg.runtime, **given(amp=amp)),
    )
