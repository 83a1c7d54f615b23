"""`cnnzoo eval` (top-1/top-5, per-class, confusion matrix, TTA) and `cnnzoo predict` on image files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_dataset, normalize
from cnnzoo.engine.config import ConfigError, config_from_dict
from cnnzoo.engine.evaluate import evaluate_checkpoint
from cnnzoo.engine.inference import model_from_checkpoint
from cnnzoo.engine.predict import predict_files
from cnnzoo.engine.progress import Progress
from cnnzoo.engine.trainer import train
from cnnzoo.engine.tta import tta_logits, tta_views
from cnnzoo.errors import CnnzooError, DataError

REPO = Path(__file__).resolve().parents[1]
QUIET = Progress("off", log=lambda line: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    result = train(config_from_dict({"schedule": {"epochs": 4}, "runtime": {"out": str(out)}}), progress=QUIET)
    return result


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_eval_matches_the_training_test_and_writes_reports(trained, tmp_path):
    report = evaluate_checkpoint(trained.run_dir / "best.pt", out_dir=tmp_path / "ev", progress=QUIET).report
    assert report.top1 == pytest.approx(trained.test["acc"], abs=1e-6)
    assert report.top5 == pytest.approx(trained.test["top5"], abs=1e-6)
    assert report.top1 <= report.top5 <= 1.0
    assert report.images == 359 and int(report.confusion.sum()) == 359
    assert sum(n for _, n, _ in report.per_class) == 359
    correct = sum(round(n * acc) for _, n, acc in report.per_class)
    assert correct == int(report.confusion.diagonal().sum()) == round(report.top1 * 359)
    rows = list(csv.reader(open(tmp_path / "ev" / "confusion.csv")))
    assert rows[0] == ["true \\ predicted", *[str(i) for i in range(10)]]
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 359
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["top1"] == report.top1 and set(saved["per_class"]) == {str(i) for i in range(10)}


@pytest.mark.parametrize("tta", ["hflip", "tencrop", "multiscale"])
def test_eval_with_tta(trained, tta):
    report = evaluate_checkpoint(trained.run_dir / "best.pt", tta=tta, crop_size=28, progress=QUIET).report
    assert report.tta == tta and report.images == 359
    assert 0.1 < report.top1 <= report.top5 <= 1.0


def test_tencrop_larger_than_images_is_refused(trained):
    with pytest.raises(ConfigError, match=r"--crop-size: a 40px 10-crop does not fit in 32x32 images"):
        evaluate_checkpoint(trained.run_dir / "best.pt", tta="tencrop", crop_size=40, progress=QUIET)


def test_tta_views():
    x = torch.arange(2 * 1 * 6 * 8, dtype=torch.float32).reshape(2, 1, 6, 8)
    flips = list(tta_views(x, "hflip"))
    assert torch.equal(flips[0], x) and torch.equal(flips[1], x.flip(-1))
    crops = list(tta_views(x, "tencrop", crop_size=4))
    assert len(crops) == 10 and all(c.shape == (2, 1, 4, 4) for c in crops)
    assert torch.equal(crops[0], x[..., :4, :4]) and torch.equal(crops[1], x[..., :4, :4].flip(-1))
    assert torch.equal(crops[4], x[..., 2:, :4]) and torch.equal(crops[6], x[..., 2:, 4:])  # bottom corners
    assert torch.equal(crops[8], x[..., 1:5, 2:6])  # centre
    scales = list(tta_views(x, "multiscale", scales=(0.5, 1.0, 2.0)))
    assert [tuple(v.shape[-2:]) for v in scales] == [(3, 4), (6, 8), (12, 16)]


def test_tta_averages_probabilities():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(4, 1, 3, 4)
    expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(tta_logits(model, x, "hflip").exp(), expected, atol=1e-6)


def _write_images(folder: Path, digits, n: int = 6) -> list[tuple[Path, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        img = digits.test.images[i, 0].numpy()
        path = folder / f"digit{i}.png"
        Image.fromarray(img, mode="L").save(path)
        files.append((path, i))
    rgb = folder / "digit0_rgb.png"  # the same digit as colour: converted back to grey
    Image.fromarray(np.repeat(digits.test.images[0, 0].numpy()[..., None], 3, axis=2)).save(rgb)
    files.append((rgb, 0))
    return files


def test_predict_on_image_files(trained, digits, tmp_path):
    files = _write_images(tmp_path / "imgs", digits)
    ckpt = torch.load(trained.run_dir / "best.pt", weights_only=True, map_location="cpu")
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        x = normalize(digits.test.images[:6], ckpt["preprocessing"]["mean"], ckpt["preprocessing"]["std"])
        probs = model(x).softmax(1)
    preds = {Path(p.path).name: p for p in predict_files(trained.run_dir / "best.pt", [tmp_path / "imgs"], topk=3)}
    assert len(preds) == 7
    for path, i in files:
        pred = preds[path.name]
        assert len(pred.top) == 3
        assert [p for _, p in pred.top] == sorted((p for _, p in pred.top), reverse=True)
        assert pred.top[0][0] == str(int(probs[i].argmax()))
        assert pred.top[0][1] == pytest.approx(float(probs[i].max()), abs=1e-5)
    rgb, grey = preds["digit0_rgb.png"].top, preds["digit0.png"].top
    assert [c for c, _ in rgb] == [c for c, _ in grey]
    assert [p for _, p in rgb] == pytest.approx([p for _, p in grey])


def test_predict_with_onnx_runtime_agrees_with_torch(trained, digits, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs cnnzoo[export]")
    _write_images(tmp_path / "imgs", digits)
    by_torch = predict_files(trained.run_dir / "best.pt", [tmp_path / "imgs"], topk=3)
    by_ort = predict_files(trained.run_dir / "best.pt", [tmp_path / "imgs"], topk=3, backend="onnxruntime")
    assert [p.path for p in by_ort] == [p.path for p in by_torch]
    for ort, eager in zip(by_ort, by_torch):
        assert ort.top[0][0] == eager.top[0][0]
        assert [p for _, p in ort.top] == pytest.approx([p for _, p in eager.top], abs=1e-4)
    with pytest.raises(DataError, match="backend must be"):
        predict_files(trained.run_dir / "best.pt", [tmp_path / "imgs"], backend="tensorrt")


def test_eval_with_onnx_runtime_agrees_with_torch(trained):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs cnnzoo[export]")
    best = trained.run_dir / "best.pt"
    for tta in ("none", "hflip"):
        by_torch = evaluate_checkpoint(best, tta=tta, amp="off", progress=QUIET).metrics  # ONNX Runtime: fp32
        by_ort = evaluate_checkpoint(best, tta=tta, backend="onnxruntime", progress=QUIET).metrics
        assert by_ort["acc"] == pytest.approx(by_torch["acc"], abs=1 / 359)  # a tie may flip at most one image
        assert by_ort["loss"] == pytest.approx(by_torch["loss"], rel=1e-4)
    with pytest.raises(CnnzooError, match="reads the network's feature maps"):
        evaluate_checkpoint(best, tta="dense", backend="onnxruntime", progress=QUIET)
    with pytest.raises(CnnzooError, match="backend must be torch or onnxruntime"):
        evaluate_checkpoint(best, backend="tensorrt", progress=QUIET)


def test_onnx_runtime_form_takes_other_sizes_where_the_model_does():
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs cnnzoo[export]")
    from cnnzoo import create_model
    from cnnzoo.export.formats import onnx_runtime_model

    model = create_model("resnet20_cifar").eval()
    ort = onnx_runtime_model(model, (3, 32, 32), any_size=True)
    x = torch.randn(3, 3, 24, 40)  # another batch, height and width (a ten-crop view, a rescaled image)
    with torch.no_grad():
        torch.testing.assert_close(ort(x), model(x), atol=1e-4, rtol=1e-4)


def test_predict_reports_unreadable_files_and_missing_paths(trained, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    [pred] = predict_files(trained.run_dir / "best.pt", [tmp_path / "broken.png"])
    assert pred.top is None and "unreadable image" in pred.error
    with pytest.raises(DataError, match="does not exist"):
        predict_files(trained.run_dir / "best.pt", [tmp_path / "nope.png"])


def cnnzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_eval_and_predict_cli(trained, digits, tmp_path):
    out = cnnzoo("eval", str(trained.run_dir / "best.pt"), "--tta", "hflip", "--out", str(tmp_path / "ev"))
    assert out.returncode == 0, out.stderr
    assert "TTA: hflip" in out.stdout and "top-1 accuracy" in out.stdout and "top-5 accuracy" in out.stdout
    assert (tmp_path / "ev" / "confusion.csv").is_file() and (tmp_path / "ev" / "per_class.csv").is_file()
    _write_images(tmp_path / "imgs", digits, n=2)
    out = cnnzoo("predict", str(trained.run_dir / "best.pt"), str(tmp_path / "imgs"), "--topk", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()  # a header, a rule and one row per image (issue 16: --format table)
    assert lines[0].split() == ["image", "top-1", "top-2"] and len(lines) == 2 + 3  # 2 grey images + 1 RGB
    assert all(line.count("%") == 2 for line in lines[2:])
    out = cnnzoo("eval", str(trained.run_dir / "best.pt"), "--model", "resnet20_cifar")
    assert out.returncode == 2 and "is a checkpoint of 'lenet5', not 'resnet20_cifar'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_eval_refuses_data_with_other_classes(trained, tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (32, 32), color=i * 50).save(tmp_path / "folder" / cls / f"{i}.png")
    with pytest.raises(CnnzooError, match="class mismatch: .* trained on 10 classes, .* has 2"):
        evaluate_checkpoint(trained.run_dir / "best.pt", data=str(tmp_path / "folder"), progress=QUIET)
