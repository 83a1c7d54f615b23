"""Run plots, evaluation plots, report.html and the end-of-run hook on a tiny real run
(LeNet-5, 2 epochs on the digits, trained once for this module through the CLI)."""

from __future__ import annotations

import base64
import csv
import html.parser
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'cnnzoo[viz]'); no pictures to test")
from PIL import Image  # noqa: E402

from cnnzoo import viz  # noqa: E402
from cnnzoo.engine.inference import model_from_checkpoint  # noqa: E402
from cnnzoo.viz import run_end  # noqa: E402


def cnnzoo(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, what `cnnzoo train` printed)."""
    out = tmp_path_factory.mktemp("viz") / "lenet5-digits-tiny"
    done = cnnzoo("train", "--epochs", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, done.stdout + done.stderr


@pytest.fixture(scope="module")
def outputs(tiny_run) -> viz.ClassifierOutputs:
    ckpt = run_end.read_run_checkpoint(tiny_run[0])
    return viz.classifier_outputs(ckpt)


def decoded(plot: viz.Plot) -> Image.Image:
    image = Image.open(plot.path)
    image.load()
    assert image.format == "PNG"
    assert image.size == plot.size
    assert len(np.unique(np.asarray(image.convert("L")))) > 8, "the picture is blank"
    return image


def test_run_curves_have_a_panel_per_metric_group(tiny_run, tmp_path):
    plot = viz.plot_run(tiny_run[0], tmp_path / "curves.png")
    decoded(plot)
    assert plot.panels == 4  # loss, accuracy, learning rate, images/s
    assert plot.size[0] > plot.size[1] > 300


def test_best_epoch_comes_from_the_run(tiny_run):
    history = viz.read_history(tiny_run[0])
    chosen = json.loads((tiny_run[0] / "test_metrics.json").read_text())
    assert history.best_epoch == chosen["epoch"] and history.best_metric == "val_acc"
    assert history.epochs == [1.0, 2.0]


def test_several_runs_are_overlaid_and_named(tiny_run, tmp_path):
    other = tmp_path / "another-recipe"
    other.mkdir()
    for name in ("metrics.csv", "test_metrics.json"):
        shutil.copy(tiny_run[0] / name, other / name)
    histories = [viz.read_history(tiny_run[0]), viz.read_history(other)]
    fig, panels = viz.run_plots.curves_figure(histories)
    labels = {text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()}
    assert panels == 4
    assert any(label.startswith(tiny_run[0].name + ":") for label in labels)
    assert any(label.startswith("another-recipe:") for label in labels)
    decoded(viz.plot_run([tiny_run[0], other], tmp_path / "both.png"))


def test_denoising_runs_get_psnr_and_ssim_panels(tmp_path):
    columns = ["epoch", "step", "train_loss", "train_psnr", "val_loss", "val_psnr", "val_ssim", "lr", "time",
               "images_per_s"]
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for epoch in range(1, 5):
            writer.writerow([epoch, 10 * epoch, 1 / epoch, 20 + epoch, 1 / epoch, 21 + epoch % 3, 0.5 + epoch / 20,
                             0.1 / epoch, 1.0, 500])
    history = viz.read_history(tmp_path)
    assert history.best_epoch == 2 and history.best_metric == "val_psnr"  # no test_metrics.json: best val PSNR
    plot = viz.plot_run(tmp_path, tmp_path / "curves.png")
    decoded(plot)
    assert plot.panels == 5  # loss, PSNR, SSIM, learning rate, images/s


def test_denoising_report_without_a_checkpoint(tmp_path):
    test_denoising_runs_get_psnr_and_ssim_panels(tmp_path)
    (tmp_path / "test_metrics.json").write_text(json.dumps({"checkpoint": "best.pt", "epoch": 3, "selected_by": "val_psnr",
                                                            "selected_value": 24.0, "test": {"psnr": 29.5}}))
    clean = torch.rand(1, 40, 40)
    crops = [viz.DenoiseCrop("a", clean, clean, clean, 20.0, 29.5)]
    path = viz.write_report(tmp_path, outputs=crops)
    text = path.read_text()
    assert "psnr 29.5" in text and text.count("data:image/png;base64,") == 2  # curves and crops


def test_confusion_and_per_class_plots(outputs, tmp_path):
    assert int(outputs.confusion.sum()) == len(outputs.labels)
    assert outputs.accuracy == pytest.approx(float(outputs.confusion.diag().sum()) / len(outputs.labels))
    confusion = viz.plot_confusion(outputs.confusion, outputs.classes, tmp_path / "confusion.png")
    per_class = viz.plot_per_class_accuracy(outputs.classes, outputs.per_class_accuracy, tmp_path / "per_class.png",
                                            support=outputs.support)
    decoded(confusion)
    decoded(per_class)
    assert (confusion.panels, per_class.panels) == (2, 1)


def test_gallery_shows_the_most_confident_mistakes(outputs, tmp_path):
    wrong = viz.most_confidently_wrong(outputs.images, outputs.logits, outputs.labels, outputs.classes, k=6)
    n_wrong = int((outputs.predictions != outputs.labels).sum())
    assert len(wrong) == min(6, n_wrong)
    assert all(item.true != item.predicted for item in wrong)
    assert [item.confidence for item in wrong] == sorted((item.confidence for item in wrong), reverse=True)
    plot = viz.plot_wrong_gallery(wrong, tmp_path / "wrong.png")
    decoded(plot)
    assert plot.panels == len(wrong)


def test_gallery_accepts_plain_tuples_and_no_mistakes(tmp_path):
    image = torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8)
    assert viz.plot_wrong_gallery([(image, "cat", "dog", 0.9)] * 3, tmp_path / "a.png").panels == 3
    empty = viz.plot_wrong_gallery([], tmp_path / "b.png")
    assert empty.panels == 0 and empty.path.is_file()


def test_denoise_crops_side_by_side(tmp_path):
    clean = torch.rand(1, 64, 80)
    crops = [viz.DenoiseCrop(f"img{i}", (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1), clean * 0.98, clean,
                             20.0, 30.0) for i in range(2)]
    plot = viz.plot_denoise_crops(crops, tmp_path / "denoise.png", crop=48)
    decoded(plot)
    assert plot.panels == 6


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v and not v.startswith("data:")]

    def handle_data(self, data):
        self.text.append(data)


def test_end_of_run_writes_a_self_contained_report(tiny_run):
    run_dir, printed = tiny_run
    ckpt = run_end.read_run_checkpoint(run_dir)
    files = viz.end_of_run(run_dir, model=model_from_checkpoint(ckpt), checkpoint=ckpt)
    assert files and files[-1] == run_dir / "report.html"
    assert all(path.is_file() for path in files)
    page = _Page()
    page.feed(files[-1].read_text(encoding="utf-8"))
    page.close()
    assert "script" not in page.tags and not page.links, "the report must need no scripts and no other files"
    assert len(page.images) == len(files) - 1  # every PNG embedded once
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).load()
    accuracy = re.search(r"^test \(.*\): .*\b(acc [0-9.]+%)", printed, flags=re.M).group(1)
    text = " ".join(page.text)
    assert accuracy in text, f"the report does not show the printed test accuracy {accuracy!r}"
    for section in ("Command and configuration", "Model", "Data", "Training", "Test", "Grad-CAM"):
        assert section in text


def test_end_of_run_without_matplotlib_says_once_how_to_get_pictures(tiny_run, monkeypatch, caplog):
    monkeypatch.setattr(run_end, "has_matplotlib", lambda: False)
    run_end._say_matplotlib_missing.cache_clear()
    with caplog.at_level(logging.INFO, logger="cnnzoo.viz"):
        assert viz.end_of_run(tiny_run[0]) == []
        assert viz.end_of_run(tiny_run[0]) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "cnnzoo[viz]" in messages[0]
    run_end._say_matplotlib_missing.cache_clear()


def test_end_of_run_never_raises(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cnnzoo.viz"):
        assert viz.end_of_run(tmp_path / "not-a-run") == []
    assert "cnnzoo report" in caplog.text


def test_cli_report_and_plot(tiny_run, tmp_path, capsys):
    from cnnzoo.cli.main import main

    run_dir = tiny_run[0]
    assert main(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out and (run_dir / "report.html").is_file()
    out = tmp_path / "two.png"
    assert main(["plot", str(run_dir), str(run_dir), "-o", str(out)]) == 0
    Image.open(out).load()
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "metrics.csv" in capsys.readouterr().err


def test_samples_after_augmentation_from_the_run_and_from_a_loader(tiny_run, tmp_path):
    from cnnzoo.data import DeviceLoader

    ckpt = run_end.read_run_checkpoint(tiny_run[0])
    bundle = viz.evaluation.load_test_data(ckpt)
    from_run = viz.augmented_samples(ckpt, bundle, per_class=3)
    loader = DeviceLoader(bundle.train, 32, shuffle=True, device="cpu", augment=_augment_of(ckpt, bundle),
                          mean=bundle.mean, std=bundle.std)
    from_loader = viz.samples_from_loader(loader, list(bundle.classes), per_class=3)
    for samples in (from_run, from_loader):
        assert list(samples.by_class) == list(bundle.classes)
        for images in samples.by_class.values():
            assert images.shape == (3, *bundle.input_size) and images.min() >= 0 and images.max() <= 1
    plot = viz.plot_class_samples(from_run.by_class, tmp_path / "samples.png")
    decoded(plot)
    assert plot.panels == len(bundle.classes)


def _augment_of(ckpt, bundle):
    from cnnzoo.engine.inference import checkpoint_config

    return viz.evaluation._run_augment(checkpoint_config(ckpt), bundle)


def test_cnnzoo_train_draws_the_report_unless_told_not_to(tmp_path, capsys):
    from cnnzoo.cli.main import main

    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "with"), "--progress", "off"]) == 0
    assert "report: " in capsys.readouterr().out
    assert (tmp_path / "with" / "report.html").is_file() and (tmp_path / "with" / "plots" / "curves.png").is_file()
    recorded = (tmp_path / "with" / "command.txt").read_text()
    assert recorded == f"cnnzoo train --epochs 1 --out {tmp_path / 'with'} --progress off\n"
    assert recorded.strip() in (tmp_path / "with" / "report.html").read_text()
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "without"), "--progress", "off",
                 "--no-report"]) == 0
    assert not (tmp_path / "without" / "report.html").exists()
