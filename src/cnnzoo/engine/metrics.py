"""Metrics: running means, top-k accuracy, confusion matrices, and the per-epoch run log.

The run log is `metrics.csv` (one row per epoch, rewritten whole from the history kept in
the checkpoint, so a resumed run never holds rows from a future it has not reached) and,
when the tensorboard package is installed, TensorBoard event files next to it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import torch

from .._files import temporary_for


class RunningMean:
    """Batch-size-weighted means of named metrics; its state is plain floats (checkpointable)."""

    def __init__(self, state: dict | None = None):
        self.sums: dict[str, float] = dict((state or {}).get("sums", {}))
        self.count = int((state or {}).get("count", 0))

    def update(self, metrics: dict[str, Any], n: int) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the k highest scores, for each k (k capped at C)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(labels[:, None])
    return [hits[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def write_confusion_csv(matrix: torch.Tensor, classes: list[str], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist()):
            writer.writerow([name, *row])


class RunLog:
    """Writes metrics.csv and (optionally) TensorBoard scalars for a run directory."""

    def __init__(self, run_dir: Path, history: list[dict], *, tensorboard: bool, purge_step: int | None = None,
                 write: bool = True):
        self.path = run_dir / "metrics.csv"
        self.history = history
        self.write = write  # False: keep the history only (the processes of a run other than rank 0)
        self.writer = _tensorboard_writer(run_dir, purge_step) if tensorboard and write else None
        if history:
            self._rewrite()

    def add_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self._rewrite()
        if self.writer is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def add_step(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"step/{key}", value, step)

    def _rewrite(self) -> None:
        if not self.write:
            return
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        tmp = temporary_for(self.path)
        try:
            tmp.write_text(buffer.getvalue())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard_writer(run_dir: Path, purge_step: int | None):
    # TensorBoard is optional: without the package (or with a broken one) the run goes on.
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    try:
        return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)
    except Exception:
        return None
