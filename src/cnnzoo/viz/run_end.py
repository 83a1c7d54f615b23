"""The end-of-run hook: curves, evaluation pictures and report.html, written into the run
directory after the final test, and the same for `cnnzoo report RUN_DIR` afterwards.

Why a hook that never raises: the pictures are a bonus on top of a finished run; a missing
matplotlib (an optional extra) or a drawing error must not turn a successful training run into
a failed one. Without matplotlib it says once how to get the pictures and returns nothing.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from ._mpl import INSTALL_HINT, has_matplotlib
from .eval_plots import DenoiseCrop
from .evaluation import ClassifierOutputs, Samples, augmented_samples, classifier_outputs, load_test_data
from .report import ReportInputs, write_report_files

log = logging.getLogger(__name__)

# Datasets cheap enough to read again at the end of a run, for the augmented samples.
CHEAP_DATASETS = ("digits",)


def end_of_run(run_dir: str | Path, *, model: torch.nn.Module | None = None,
               test_outputs: ClassifierOutputs | list[DenoiseCrop] | None = None,
               samples: Samples | None = None, checkpoint: dict | None = None) -> list[Path]:
    """Write plots/*.png and report.html into `run_dir`; returns the files written, report.html last.

    model: the trained model holding the weights that were tested (best.pt's), uncompiled;
    default: rebuilt from best.pt. test_outputs: the test split's images, labels and logits
    (or denoising crops) if the caller has them; default: computed here from the dataset.
    samples: training images after augmentation; default: drawn when the dataset is cheap to read.
    checkpoint: best.pt as already read. Never raises: on failure it logs why and returns [].
    """
    if not has_matplotlib():
        _say_matplotlib_missing()
        return []
    try:
        inputs = report_inputs(run_dir, model=model, outputs=test_outputs, samples=samples, checkpoint=checkpoint,
                               read_data=None)
        return write_report_files(inputs)
    except Exception as err:  # a picture must never fail a finished run
        log.warning("no pictures for %s (%s: %s); `cnnzoo report %s` tries again", run_dir, type(err).__name__,
                    err, run_dir)
        log.debug("drawing failed", exc_info=True)
        return []


@functools.lru_cache(maxsize=1)
def _say_matplotlib_missing() -> None:
    log.warning("no plots or report.html for this run: matplotlib is not installed. To get them: %s, "
                "then `cnnzoo report RUN_DIR`", INSTALL_HINT)


def read_run_checkpoint(run_dir: str | Path) -> dict:
    """best.pt of the run (the tested weights), else last.pt."""
    from ..engine.inference import read_checkpoint
    from ..errors import CnnzooError

    run_dir = Path(run_dir)
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            return read_checkpoint(run_dir / name)
    raise CnnzooError(f"{run_dir} holds neither best.pt nor last.pt; give a run directory written by `cnnzoo train`")


def report_inputs(run_dir: str | Path, *, model: torch.nn.Module | None = None,
                  outputs: ClassifierOutputs | list[DenoiseCrop] | None = None, samples: Samples | None = None,
                  checkpoint: dict | None = None, read_data: bool | None = True) -> ReportInputs:
    """What the report needs, computing what was not given. read_data: True reads the dataset again
    for the test outputs and samples; None only when it is needed for the outputs or cheap."""
    from ..engine.inference import model_from_checkpoint

    run_dir = Path(run_dir)
    ckpt = checkpoint if checkpoint is not None else read_run_checkpoint(run_dir)
    if ckpt.get("task", "classify") != "classify":
        return ReportInputs(run_dir, ckpt, model, outputs, None, "training samples are shown for classification runs")
    model = model if model is not None else model_from_checkpoint(ckpt)
    cheap = ckpt.get("dataset") in CHEAP_DATASETS
    wanted = read_data or (read_data is None and (outputs is None or (samples is None and cheap)))
    bundle = load_test_data(ckpt) if wanted else None
    if outputs is None and bundle is not None and bundle.test is not None and len(bundle.test):
        outputs = classifier_outputs(ckpt, model)
    if samples is None and bundle is not None:
        samples = augmented_samples(ckpt, bundle)
    note = "" if samples is not None else (
        f"no training samples: {ckpt.get('dataset')} is not re-read at the end of a run (it is not among the "
        "cheap datasets); `cnnzoo report RUN_DIR` draws them")
    return ReportInputs(run_dir, ckpt, model, outputs, samples, note)
