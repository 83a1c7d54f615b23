"""What a new user sees (issue 16, items 4, 5, 6 and 9): something from the first second and
every check that needs no data done before any data is read; results on stdout, progress,
notes and warnings on stderr; `--format table|csv|json` for eval and predict; a model's
minimum input named; errors in the flags the user typed; plain words ("1 epoch", no top-5
for three classes, `--family mobilenet`).

Each behaviour is run once as a user runs it (`python -m cnnzoo` in a subprocess, from
another working directory), asserting the exit code, the line and the stream it went to;
variants run in-process through `cnnzoo.cli.main.main`, which is the same code without the
interpreter start-up.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnzoo import create_model
from cnnzoo.cli.main import build_parser, main
from cnnzoo.cli.train import FLAG_KEYS, build_config
from cnnzoo.engine.progress import BAR_FORMAT, Progress

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue")


def cnnzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=300,
                          check=False, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb"})


def one_error_line(out: subprocess.CompletedProcess | str, command: str) -> str:
    err = out if isinstance(out, str) else out.stderr
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnzoo {command}: error: "), err
    return lines[0]


def colour_folder(root: Path, per_class: int = 12) -> Path:
    """Three classes of 32x32 PNGs, one colour each with noise: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            pixels[..., c] += 180
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    """A two-step LeNet-5 run on a three-class folder, trained in a subprocess from another folder."""
    home = tmp_path_factory.mktemp("user")
    colour_folder(home / "colours")
    out = cnnzoo("train", "--data", "colours", "--max-steps", "2", "--epochs", "3", "--batch-size", "8",
                 "--workers", "0", "--no-report", "--out", "run", "--set", "data.cache_dir=cache", cwd=home)
    return home, out


# ----------------------------------------------------------------------------- item 5: streams


def test_train_prints_results_on_stdout_and_progress_on_stderr(three_class_run):
    _, out = three_class_run
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run directory: run" and lines[1] == "model: lenet5 (LeCun et al. 1998)"
    params = sum(p.numel() for p in create_model("lenet5", num_classes=3, in_chans=3).parameters())
    assert re.match(r"data: folder:\S*colours: ", lines[2]) and lines[3] == f"parameters: {params:,}"
    # item 9: the banner agrees with --max-steps, in the singular where it is one
    assert re.match(r"training: 1 epoch x \d+ steps, stopping at step 2 \(max steps\), sgd", lines[4]), lines[4]
    assert re.match(r"epoch 1/1 \| train loss [\d.]+ acc [\d.]+% \| val loss [\d.]+ acc [\d.]+% \| lr", lines[5])
    assert re.match(r"test \(best\.pt, epoch 1, chosen on val_acc [\d.]+%\): loss [\d.]+, acc [\d.]+%$", lines[6])
    assert "top5" not in out.stdout + out.stderr  # three classes: top-5 would be 100% by definition
    # progress off a terminal: one line at the end of the (cut-short) epoch, with the run's ETA
    assert re.search(r"^epoch 1/1 2/\d+ loss [\d.]+ acc [\d.]+% [\d,]+ img/s eta \d+:\d\d, run 0:00$",
                     out.stderr, re.MULTILINE), out.stderr
    assert "run directory" not in out.stderr and "epoch 1/1 |" not in out.stderr and "test (" not in out.stderr


def test_eval_json_is_one_document_on_stdout(three_class_run):
    home, _ = three_class_run
    out = cnnzoo("eval", "run/best.pt", "--format", "json", "--out", "ev", cwd=home)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # nothing else on stdout
    assert doc["model"] == "lenet5" and doc["split"] == "test" and 0 <= doc["top1"] <= 1
    assert set(doc["per_class"]) == set(CLASSES) and "top5" not in doc
    assert doc["files"] and all((home / f).is_file() for f in doc["files"])
    assert out.stderr.strip().splitlines()[-1].startswith("wrote ev/metrics.json")


def test_eval_csv_and_table_formats(three_class_run, capsys, monkeypatch):
    home, _ = three_class_run
    monkeypatch.chdir(home)
    assert main(["eval", "run/best.pt", "--format", "csv", "--out", "ev-csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 1 and rows[0]["checkpoint"] == "run/best.pt" and rows[0]["split"] == "test"
    assert float(rows[0]["top1"]) == json.loads((home / "ev-csv" / "metrics.json").read_text())["top1"]
    assert "top5" not in rows[0] and "wrote " in captured.err
    assert main(["eval", "run/best.pt", "--out", "ev-table"]) == 0
    table = capsys.readouterr().out
    assert "top-1 accuracy" in table and "top-5" not in table and "wrote " in table


def test_predict_formats(three_class_run, capsys, monkeypatch):
    home, _ = three_class_run
    monkeypatch.chdir(home)
    images = ["colours/red/0.png", "colours/blue/1.png"]
    (home / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(["predict", "run/best.pt", *images, "--topk", "2", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["image"], r["rank"]) for r in rows] == [(images[0], "1"), (images[0], "2"), (images[1], "1"),
                                                       (images[1], "2")]
    assert all(r["class"] in CLASSES and 0 <= float(r["probability"]) <= 1 for r in rows)
    assert main(["predict", "run/best.pt", images[0], "broken.png", "--format", "json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [p["image"] for p in doc["predictions"]] == [images[0], "broken.png"]
    assert len(doc["predictions"][0]["top"]) == 3 and "unreadable image" in doc["predictions"][1]["error"]
    assert "broken.png: error: unreadable image" in captured.err  # errors on stderr in every format
    assert captured.err.strip().endswith("cnnzoo predict: 1 file could not be read")
    assert main(["predict", "run/best.pt", *images, "--topk", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "top-1", "top-2"] and len(table) == 4


# ----------------------------------------------------------------------------- item 4: the first second


def test_start_weights_are_checked_before_any_data(tmp_path):
    """A missing --init-from is refused before the data (here a folder of broken images, which
    would fail differently) is read, before any run directory is made, in the flag's words."""
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not an image")
    out = cnnzoo("train", "--data", "bad", "--init-from", "missing.pt", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert one_error_line(out, "train") == ("cnnzoo train: error: --init-from: missing.pt does not exist; give a "
                                            "checkpoint or weights file")
    assert not (tmp_path / "runs").exists()


def test_a_missing_dataset_path_is_refused_before_the_banner(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "nowhere/images", "--out", "run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "dataset path nowhere/images does not exist" in err
    assert not (tmp_path / "run").exists()


def test_run_directory_and_model_come_before_the_data(tmp_path, capsys, monkeypatch):
    """The first lines are said before the data is read; a run that fails there leaves no folder."""
    monkeypatch.chdir(tmp_path)
    colour_folder(tmp_path / "data", per_class=2)
    (tmp_path / "data" / "empty").mkdir()  # a class folder without images: the data step fails
    assert main(["train", "--data", "data", "--workers", "0", "--out", "run"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["run directory: run", "model: lenet5 (LeCun et al. 1998)"]
    *progress, error = captured.err.strip().splitlines()  # the decoding progress, then the one error line
    assert all(line.startswith("decoding ") for line in progress), captured.err
    assert "has no images" in one_error_line(error, "train")
    assert not (tmp_path / "run").exists()


def test_output_directory_is_checked_before_the_data(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--out", str(tmp_path / "file")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert one_error_line(captured.err, "train").endswith(f"--out: {tmp_path / 'file'} is a file, not a folder; "
                                                          "choose another --out")


# ----------------------------------------------------------------------------- item 6: what the user set


@pytest.mark.slow  # the same check in-process: test_explicit_image_size_below_the_minimum_is_refused
def test_summary_names_the_minimum_input(tmp_path):
    out = cnnzoo("summary", "alexnet", "--input-size", "3,32,32", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert one_error_line(out, "summary") == ("cnnzoo summary: error: --input-size: alexnet needs inputs of at least "
                                              "63x63 pixels, got 32x32; use for example --input-size 3,63,63")


def test_explicit_image_size_below_the_minimum_is_refused(capsys):
    assert main(["summary", "alexnet", "--input-size", "3,32,32"]) == 2
    assert "--input-size: alexnet needs inputs of at least 63x63 pixels" in one_error_line(capsys.readouterr().err,
                                                                                            "summary")
    assert main(["train", "--model", "alexnet", "--image-size", "32"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert one_error_line(captured.err, "train") == (
        "cnnzoo train: error: --image-size: 32 px is below alexnet's minimum input of 63 px; choose at least 63, "
        "or leave it unset to have smaller images resized to the minimum")
    assert main(["train", "--model", "alexnet", "--set", "data.image_size=32"]) == 2  # typed as a key: said as one
    assert "error: data.image_size: 32 px is below" in capsys.readouterr().err


def test_a_recipes_image_size_is_raised_with_a_note(tmp_path, capsys):
    recipe = tmp_path / "small.yaml"
    recipe.write_text("model:\n  name: lenet5\ndata:\n  image_size: 40\n")
    assert main(["train", "--config", str(recipe), "--model", "inception_v3", "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "image_size: 75" in captured.out
    assert captured.err.strip() == ("note: the recipe's data.image_size 40 is below inception_v3's minimum input; "
                                    "using 75 px (choose with --image-size)")


# ----------------------------------------------------------------------------- item 9: words


@pytest.mark.slow  # in-process variants below
def test_list_family_prefix_matches_every_mobilenet(tmp_path):
    out = cnnzoo("list", "--family", "mobilenet", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    families = {line.split()[1] for line in out.stdout.splitlines()[2:-1]}
    assert families == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3"}
    assert re.fullmatch(r"\d+ models", out.stdout.splitlines()[-1])


def test_list_family_misspelt_suggests_and_one_model_is_singular(capsys):
    assert main(["list", "--family", "mobilenet"]) == 0
    families = {line.split()[1] for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert families == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3"}
    assert main(["list", "--family", "mobilnet"]) == 2
    assert one_error_line(capsys.readouterr().err, "list") == (
        "cnnzoo list: error: no model family 'mobilnet'; did you mean mobilenet_v3, mobilenet_v2, mobilenet_v1?")
    assert main(["list", "lenet5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 model"


@pytest.mark.parametrize(("argv", "said"), [
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--set", "optim.lr=-1"], "optim.lr: must be > 0"),  # the user typed the key
    (["--freeze-backbone"], "--freeze-backbone: needs weights to freeze"),
    (["--task", "denoise", "--mixup", "0.2"], "--mixup: needs a classification task"),
])
def test_errors_speak_in_the_flags_typed(argv, said, capsys):
    assert main(["train", *argv]) == 2
    assert said in one_error_line(capsys.readouterr().err, "train")


def test_every_flag_of_the_config_map_is_a_real_option():
    """The flag words used in error messages (`--` + the dest) are options `cnnzoo train` takes."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    options = {s for action in sub._actions for s in action.option_strings}
    assert {"--" + dest.replace("_", "-") for dest in FLAG_KEYS} <= options


def test_max_steps_shortens_the_epoch_count_of_the_banner(capsys):
    args = build_parser().parse_args(["train", "--max-steps", "30"])
    cfg, _ = build_config(args)
    from cnnzoo.engine.report import planned_epochs, planned_training

    assert planned_epochs(cfg.schedule, 21) == 2
    assert planned_training(cfg.schedule, 21) == "2 epochs x 21 steps, stopping at step 30 (max steps)"
    assert planned_training(cfg.schedule, 40) == "1 epoch x 40 steps, stopping at step 30 (max steps)"
    cfg.schedule.max_steps = None
    assert planned_training(cfg.schedule, 1) == "20 epochs x 1 step"


# ----------------------------------------------------------------------------- item 5: progress


def test_progress_off_a_terminal_logs_every_n_seconds_and_each_epoch():
    lines: list[str] = []
    progress = Progress("log", log_every=1000, log_seconds=0.05, log=lines.append)
    progress.start_run(total_steps=20, done_steps=0)
    for epoch in (1, 2):
        with progress.loop(10, f"epoch {epoch}/2") as tracker:
            for step in range(10):
                if epoch == 1 and step == 3:
                    time.sleep(0.06)  # a slow step: a line is due by time, not by step count
                tracker.update(8, {"loss": 1.0, "acc": 0.5})
    assert lines[0].startswith("epoch 1/2 4/10 ")  # the line after the slow step
    assert [line.split()[:3] for line in lines if line.split()[2] == "10/10"] == [
        ["epoch", "1/2", "10/10"], ["epoch", "2/2", "10/10"]]
    assert all(re.search(r"img/s eta \d+:\d\d, run \d+:\d\d$", line) for line in lines)


def test_the_bar_keeps_loss_acc_and_rate_readable_at_80_columns():
    progress = Progress("bar", stream=io.StringIO())
    progress.start_run(total_steps=200 * 391, done_steps=120 * 391)
    with progress.loop(391, "epoch 121/200") as tracker:
        for _ in range(5):
            tracker.update(128, {"loss": 1.2345678, "acc": 0.4741})
        line = tracker.bar.format_meter(**{**tracker.bar.format_dict, "ncols": 80})
    assert tracker.bar.bar_format == BAR_FORMAT and len(line) <= 80
    assert re.search(r"\| loss 1\.235 acc 47\.41% [\d,]+ img/s eta", line), line
