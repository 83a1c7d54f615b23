"""report.html: one self-contained page per run — what was run, on what, how training went,
how the test went, and where the network looks.

Why self-contained: a run directory gets copied, mailed and opened years later; the page has
its images as base64 data URIs, its style inline, and no scripts or network requests, so it
shows the same everywhere. The pictures are also kept as PNG files under `plots/`.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ._mpl import Plot
from .eval_plots import (DenoiseCrop, most_confidently_wrong, plot_class_samples, plot_confusion,
                         plot_denoise_crops, plot_per_class_accuracy, plot_wrong_gallery)
from .evaluation import ClassifierOutputs, Samples
from .gradcam import gradcam, plot_gradcam_grid
from .run_plots import read_history, plot_run


PLOTS_DIR = "plots"
GALLERY_SIZE = 16
GRADCAM_IMAGES = 4
SUMMARY_DEPTH = 2
SUMMARY_MAX_ROWS = 40


@dataclass
class ReportInputs:
    """Everything the report shows that is not already in the run directory."""

    run_dir: Path
    checkpoint: dict | None = None  # best.pt (or last.pt) as read by read_checkpoint
    model: torch.nn.Module | None = None
    outputs: ClassifierOutputs | list[DenoiseCrop] | None = None
    samples: Samples | None = None
    samples_note: str = ""  # why there are no samples, when there are none
    pictures: dict[str, Plot] = field(default_factory=dict)


def draw_pictures(inputs: ReportInputs) -> dict[str, Plot]:
    """Every PNG of the run into run_dir/plots/: curves, and with outputs the evaluation pictures."""
    out = inputs.run_dir / PLOTS_DIR
    pictures = {"curves": plot_run(inputs.run_dir, out / "curves.png")}
    if inputs.samples is not None:
        pictures["samples"] = plot_class_samples(inputs.samples.by_class, out / "samples.png")
    outputs = inputs.outputs
    if isinstance(outputs, ClassifierOutputs):
        pictures.update(_classifier_pictures(inputs, outputs, out))
    elif outputs:
        pictures["denoise"] = plot_denoise_crops(outputs, out / "denoise.png")
    return pictures


def _classifier_pictures(inputs: ReportInputs, outputs: ClassifierOutputs, out: Path) -> dict[str, Plot]:
    pictures = {
        "confusion": plot_confusion(outputs.confusion, outputs.classes, out / "confusion.png"),
        "per_class": plot_per_class_accuracy(outputs.classes, outputs.per_class_accuracy, out / "per_class.png",
                                             support=outputs.support),
        "wrong": plot_wrong_gallery(most_confidently_wrong(outputs.images, outputs.logits, outputs.labels,
                                                           outputs.classes, GALLERY_SIZE), out / "wrong.png"),
    }
    if inputs.model is not None and inputs.checkpoint is not None:
        pictures["gradcam"] = _gradcam_picture(inputs, outputs, out / "gradcam.png")
    return pictures


def gradcam_examples(outputs: ClassifierOutputs, n: int = GRADCAM_IMAGES) -> list[int]:
    """Indices of the test images to explain: half the most confident mistakes, half correct ones."""
    wrong = torch.nonzero(outputs.predictions != outputs.labels).flatten()
    confidence = outputs.logits.softmax(dim=1).amax(dim=1)
    wrong = wrong[confidence[wrong].argsort(descending=True)][: n // 2].tolist()
    right = torch.nonzero(outputs.predictions == outputs.labels).flatten()
    step = max(1, len(right) // max(n - len(wrong), 1))
    return wrong + right[::step][: n - len(wrong)].tolist()


def _gradcam_picture(inputs: ReportInputs, outputs: ClassifierOutputs, path: Path) -> Plot:
    from ..data.transforms import normalize

    chosen = gradcam_examples(outputs)
    prep = inputs.checkpoint["preprocessing"]
    device = next(inputs.model.parameters()).device
    x = normalize(outputs.images[chosen].to(device), prep["mean"], prep["std"])
    cam = gradcam(inputs.model, x, classes=outputs.classes)
    titles = [f"true {outputs.classes[int(outputs.labels[i])]}" for i in chosen]
    return plot_gradcam_grid(outputs.images[chosen], cam, path, titles)


# ------------------------------------------------------------------------------ HTML


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; } td.n { text-align: right; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; display: block; margin: 0.5em 0; } .note { color: #666; font-size: 0.9em; }
.big { font-size: 1.3em; font-weight: bold; }
"""


def write_report(run_dir: str | Path, *, model: torch.nn.Module | None = None,
                 outputs: ClassifierOutputs | list[DenoiseCrop] | None = None, samples: Samples | None = None,
                 checkpoint: dict | None = None, samples_note: str = "") -> Path:
    """Draw the run's pictures (PNG files under run_dir/plots) and write run_dir/report.html; returns its path."""
    inputs = ReportInputs(Path(run_dir), checkpoint, model, outputs, samples, samples_note)
    return write_report_files(inputs)[-1]


def write_report_files(inputs: ReportInputs) -> list[Path]:
    """The pictures, then report.html: every file written, report.html last."""
    started = time.perf_counter()
    inputs.pictures = draw_pictures(inputs)
    page = render(inputs, seconds=time.perf_counter() - started)
    path = inputs.run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return [plot.path for plot in inputs.pictures.values()] + [path]


def render(inputs: ReportInputs, seconds: float = 0.0) -> str:
    sections = [_header(inputs), _command(inputs), _model(inputs), _data(inputs), _training(inputs),
                _test(inputs), _explain(inputs)]
    footer = f'<p class="note">pictures drawn in {seconds:.1f} s by cnnzoo; no scripts, no network, images embedded.</p>'
    body = "\n".join(s for s in sections if s) + "\n" + footer
    title = html.escape(inputs.run_dir.resolve().name)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _img(plot: Plot | None, alt: str) -> str:
    if plot is None:
        return ""
    data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
    width = min(plot.size[0], 1050)
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" width="{width}">'


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{html.escape(str(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _config(inputs: ReportInputs) -> dict:
    path = inputs.run_dir / "config.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text()) or {}
    return dict(inputs.checkpoint.get("config", {})) if inputs.checkpoint else {}


def _header(inputs: ReportInputs) -> str:
    cfg = _config(inputs)
    model = cfg.get("model", {}).get("name", "?")
    dataset = cfg.get("data", {}).get("dataset", "?")
    test = _test_metrics(inputs)
    headline = ""
    if test:
        from ..engine.progress import format_metric

        headline = '<p class="big">test: ' + html.escape(", ".join(format_metric(k, v) for k, v in test.get("test", {}).items())) + "</p>"
    return (f"<h1>{html.escape(inputs.run_dir.resolve().name)}</h1><p>{html.escape(cfg.get('task', 'classify'))}: "
            f"<b>{html.escape(str(model))}</b> on <b>{html.escape(str(dataset))}</b></p>{headline}")


def _command(inputs: ReportInputs) -> str:
    recorded = inputs.run_dir / "command.txt"
    if recorded.is_file():
        command = recorded.read_text().strip()
        how = "the commands that ran this run (a resume adds its own line)"
    else:
        command = f"cnnzoo train --config {inputs.run_dir / 'config.yaml'} --out runs/again"
        how = "the run did not record its command line; this one repeats its resolved settings"
    cfg_text = (inputs.run_dir / "config.yaml").read_text() if (inputs.run_dir / "config.yaml").is_file() else \
        yaml.safe_dump(_config(inputs), sort_keys=False)
    return (f"<h2>Command and configuration</h2><p class=note>{html.escape(how)}</p><pre>{html.escape(command)}</pre>"
            f"<details><summary>resolved config (config.yaml)</summary><pre>{html.escape(cfg_text)}</pre></details>")


def _model(inputs: ReportInputs) -> str:
    if inputs.model is None or inputs.checkpoint is None:
        return "<h2>Model</h2><p class=note>no model given: the summary is left out.</p>"
    from ..analysis.summary import summary

    size = tuple(inputs.checkpoint["meta"].get("input_size") or inputs.checkpoint["preprocessing"]["input_size"])
    try:
        s = summary(inputs.model, size, depth=SUMMARY_DEPTH)
    except RuntimeError as err:
        return f"<h2>Model</h2><p class=note>summary failed: {html.escape(str(err).splitlines()[0])}</p>"
    rows = [["\u00a0\u00a0" * (r.depth - 1) + r.name, r.type, "x".join(map(str, r.output_shape))
             if isinstance(r.output_shape, tuple) else r.output_shape, f"{r.params:,}", f"{r.macs:,}"] for r in s.rows]
    shown = rows[:SUMMARY_MAX_ROWS]
    more = f"<p class=note>{len(rows) - len(shown)} more rows: `cnnzoo summary` lists them all.</p>" if len(rows) > len(shown) else ""
    totals = _table(["", ""], [["parameters", f"{s.total_params:,}"], ["trainable", f"{s.trainable_params:,}"],
                               ["frozen", f"{s.total_params - s.trainable_params:,}"],
                               ["MACs per image", f"{s.macs:,} ({s.macs / 1e6:,.2f} M)"],
                               ["FLOPs (2 x MACs)", f"{s.flops:,}"]], numeric={1})
    layers = _table(["Layer", "Type", "Output shape", "Params", "MACs"], shown, numeric={3, 4})
    return (f"<h2>Model: {html.escape(inputs.checkpoint['model_name'])}</h2>{totals}"
            f"<p class=note>layers to depth {SUMMARY_DEPTH}, input {'x'.join(map(str, size))}</p>{layers}{more}")


def _data(inputs: ReportInputs) -> str:
    if inputs.checkpoint is None:
        return ""
    meta = inputs.checkpoint["meta"]
    sizes = meta.get("sizes", {})
    rows = [["dataset", meta.get("dataset", "?")], ["input", "x".join(map(str, meta.get("input_size", [])))],
            ["classes", f"{len(meta.get('classes', []))}: {', '.join(map(str, meta.get('classes', [])[:20]))}"
                        f"{' ...' if len(meta.get('classes', [])) > 20 else ''}"],
            ["images", ", ".join(f"{k} {v:,}" for k, v in sizes.items())],
            ["normalisation", f"mean {meta.get('mean')}, std {meta.get('std')}"]]
    text = f"<h2>Data</h2>{_table(['', ''], rows)}"
    if inputs.samples is not None:
        return text + (f"<p>training samples after augmentation ({html.escape(inputs.samples.description)}):</p>"
                       + _img(inputs.pictures.get("samples"), "training samples"))
    return text + f"<p class=note>{html.escape(inputs.samples_note or 'no samples were given')}</p>"


def _training(inputs: ReportInputs) -> str:
    history = read_history(inputs.run_dir)
    times = [t for t in history.columns.get("time", []) if t == t]
    speeds = [s for s in history.columns.get("images_per_s", []) if s == s]
    best = f"best.pt: epoch {history.best_epoch}, chosen on {history.best_metric}" if history.best_epoch else ""
    rows = [["epochs", len(history.epochs)], ["training time (sum of epochs)", f"{sum(times):.1f} s"],
            ["mean throughput", f"{sum(speeds) / max(len(speeds), 1):,.0f} images/s"], ["best epoch", best or "-"]]
    return (f"<h2>Training</h2>{_table(['', ''], rows)}"
            f"{_img(inputs.pictures.get('curves'), 'training curves')}")


def _test_metrics(inputs: ReportInputs) -> dict:
    path = inputs.run_dir / "test_metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _test(inputs: ReportInputs) -> str:
    from ..engine.progress import format_metric

    test = _test_metrics(inputs)
    if not test:
        return "<h2>Test</h2><p class=note>no test_metrics.json: the run had no test split or did not finish.</p>"
    basis = f"{test.get('checkpoint')}, epoch {test.get('epoch')}"
    if test.get("selected_by"):
        basis += f", chosen on {format_metric(test['selected_by'], test['selected_value'])}"
    rows = [[k, format_metric(k, v).split(" ", 1)[1]] for k, v in test.get("test", {}).items()]
    parts = [f"<h2>Test ({html.escape(basis)})</h2>{_table(['metric', 'value'], rows, numeric={1})}"]
    for key, alt, caption in (("confusion", "confusion matrix", "Confusion matrix (rows: true class)"),
                              ("per_class", "per-class accuracy", "Per-class accuracy"),
                              ("wrong", "wrong images", "The most confidently wrong test images"),
                              ("denoise", "denoising crops", "Noisy, denoised and clean")):
        if key in inputs.pictures:
            parts.append(f"<h3>{caption}</h3>{_img(inputs.pictures[key], alt)}")
    if isinstance(inputs.outputs, ClassifierOutputs):
        parts.append(f"<p class=note>pictures from a re-evaluation of the checkpoint: "
                     f"{len(inputs.outputs.labels):,} test images, accuracy {100 * inputs.outputs.accuracy:.2f}%.</p>")
    return "".join(parts)


def _explain(inputs: ReportInputs) -> str:
    if "gradcam" not in inputs.pictures:
        return ""
    return ("<h2>Where the network looks (Grad-CAM)</h2><p class=note>red: the regions that raise the predicted "
            "class's score most; two confident mistakes first, then correctly classified images.</p>"
            + _img(inputs.pictures["gradcam"], "Grad-CAM overlays"))
