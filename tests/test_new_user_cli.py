"""What a new user meets on the command line (issue 16, items 1, 2, 3, 7 and 8).

1. runs are portable: evaluated and resumed from another directory; a moved dataset is found
   again with `--data NEWPATH` when its fingerprint matches, and refused, naming both, when not;
2. `cnnzoo eval --data FOLDER` takes other data as it is (its test/ folder, or all of it) with
   classes matched by name;
3. `--init-from` never leaves backbone tensors random in silence; RGB first convolutions are
   adapted to grey data; a publisher's names (timm's `se.*`) are mapped;
7. `cnnzoo summary` of a checkpoint or a weights file shows what is frozen; contradicting or
   invalid `--model-arg` values are one-line errors;
8. `cnnzoo denoise` never writes over its input by any path, warns when colour becomes grey;
   `cnnzoo eval` of a denoiser refuses the options it would ignore.

Each command is run as a user types it, asserting the exit code, the one-line message and the
stream it went to: in this process (`cnnzoo.cli.main.main`, cheap) for the quick checks, and
in a subprocess from another working directory in the slow test at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT, SHARED
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.registry import create_model

CLASSES = ("ant", "bee", "cat")
QUIET = ["--progress", "off", "--no-report", "--set", "runtime.tensorboard=false"]
DNCNN = SHARED / "weights" / "dncnn" / "dncnn_sigma25_model.pth"


def image_folder(root: Path, splits: tuple[str, ...], classes: tuple[str, ...] = CLASSES, *, n: int = 6,
                 mode: str = "RGB") -> Path:
    """`<split>/<class>/*.png` (a split of "" puts the class folders at the top) of 16x16 images
    whose colour depends on the class."""
    rng = np.random.default_rng(len(splits))
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([40 + 60 * c, 200 - 50 * c, 90 + 30 * c]) % 256
                img = Image.fromarray(np.clip(base + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8))
                (img.convert("L") if mode == "L" else img).save(folder / f"{i}.png")
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str, command: str, *phrases: str) -> None:
    """stderr ends with one `cnnzoo COMMAND: error: ...` line holding every phrase (notes may come
    before it, nothing else)."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"cnnzoo {command}: error: "), err
    assert all(line.startswith(("note: ", "warning: ")) for line in lines[:-1]), err
    assert all(p in lines[-1] for p in phrases), err


def train_lenet(capsys, data: str, out: str, *extra: str) -> str:
    code, stdout, err = run_cli(capsys, "train", "--data", data, "--epochs", "1", "--out", out, *QUIET, *extra)
    assert code == 0, err
    return stdout + err


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """LeNet-5 trained on `ft/` given as a relative path, from `root`."""
    root = tmp_path_factory.mktemp("portable")
    image_folder(root / "ft", ("train", "test"))
    here = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--data", "ft", "--epochs", "1", "--out", "run", *QUIET]) == 0
    finally:
        os.chdir(here)
    return root


# ------------------------------------------------------------------------- 1. portable runs


def test_a_run_stores_absolute_paths_and_evaluates_from_anywhere(folder_run, tmp_path, monkeypatch, capsys):
    stored = yaml.safe_load((folder_run / "run" / "config.yaml").read_text())["data"]["dataset"]
    assert stored == str((folder_run / "ft").resolve())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "eval", str(folder_run / "run" / "best.pt"), "--out", "ev")
    assert code == 0, err
    assert f"data: folder:{folder_run.resolve() / 'ft'}, test split, 18 images" in out


def test_a_moved_dataset_is_found_again_by_its_fingerprint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "old" / "data", ("train", "test"))
    train_lenet(capsys, "old/data", "run")
    shutil.move(tmp_path / "old", tmp_path / "new")
    ckpt = str(tmp_path / "run" / "best.pt")

    code, _, err = run_cli(capsys, "train", "--resume", "run", "--epochs", "2", *QUIET)
    assert code == 2
    one_error(err, "train", f"its dataset {tmp_path}/old/data is not there any more", "--data NEWPATH")
    code, _, err = run_cli(capsys, "eval", ckpt, "--out", "ev")
    assert code == 2
    one_error(err, "eval", f"the checkpoint's dataset {tmp_path}/old/data is not found", "--data PATH")

    code, out, err = run_cli(capsys, "eval", ckpt, "--data", "new/data", "--out", "ev")
    assert code == 0, err
    assert "test split, 18 images" in out  # the run's own test split, not all of the folder
    assert "new/data has the fingerprint of the run's data" in err
    code, out, err = run_cli(capsys, "train", "--resume", "run", "--epochs", "2", "--data", "new/data", *QUIET)
    assert code == 0, err
    assert "epoch 2/2" in out + err

    shutil.copytree(tmp_path / "new" / "data", tmp_path / "copy")
    os.utime(next((tmp_path / "copy" / "train" / "ant").iterdir()), (1, 1))  # same files, another mtime
    code, _, err = run_cli(capsys, "train", "--resume", "run", "--epochs", "3", "--data", "copy", *QUIET)
    assert code == 2
    one_error(err, "train", f"trained on {tmp_path}/new/data (fingerprint", f"this run loads {tmp_path}/copy",
              "modification times")


# ------------------------------------------------------------------------- 2. evaluate any folder


def test_eval_takes_other_folders_as_they_are(folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ckpt = str(folder_run / "run" / "best.pt")
    image_folder(tmp_path / "flat", ("",), n=4)
    image_folder(tmp_path / "only_test", ("test",), n=3)
    image_folder(tmp_path / "some", ("",), ("cat", "ant"), n=2)
    image_folder(tmp_path / "other", ("",), ("ant", "eel"), n=2)

    code, out, err = run_cli(capsys, "eval", ckpt, "--data", "flat", "--out", "e1")
    assert code == 0, err
    assert "data: folder:flat, all 12 images" in out and (tmp_path / "e1" / "metrics.json").is_file()
    code, _, err = run_cli(capsys, "eval", ckpt, "--data", "flat", "--split", "test")
    assert code == 2
    one_error(err, "eval", "folder:flat has no test split of its own (no test/ folder); use --split all")
    code, out, err = run_cli(capsys, "eval", ckpt, "--data", "only_test", "--out", "e2")
    assert code == 0, err
    assert "data: folder:only_test, test split, 9 images" in out
    code, out, err = run_cli(capsys, "eval", ckpt, "--data", "some", "--out", "e3")
    assert code == 0, err
    assert "all 4 images" in out and "(1 of the model's 3 classes has no images in the data)" in out
    assert "note: folder:some: its 2 classes matched by name to the model's 3; accuracy is over these classes' " \
           "images, and a prediction of any of the 1 others counts as an error" in err
    code, _, err = run_cli(capsys, "eval", ckpt, "--data", "other")
    assert code == 2
    one_error(err, "eval", "class mismatch", "unknown to the checkpoint: eel", "missing from the data: bee, cat")
    code, _, err = run_cli(capsys, "train", "--data", "only_test", "--out", "r", *QUIET)
    assert code == 2
    one_error(err, "train", "has test folders but no train/ folder")


# ------------------------------------------------------------------------- 3. --init-from


def test_init_from_adapts_grey_and_refuses_partial_weights(folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ckpt = folder_run / "run" / "best.pt"  # an RGB LeNet-5
    image_folder(tmp_path / "grey", ("train", "test"), mode="L", n=4)
    said = train_lenet(capsys, "grey", "g", "--init-from", str(ckpt), "--freeze-backbone")
    assert [line for line in said.splitlines() if "summed" in line] == [
        ("features.0.weight: the 3-channel (RGB) filters summed over their input channels for 1-channel data "
         "(as timm's adapt_input_conv)")]
    rgb = torch.load(ckpt, weights_only=True)["model"]["features.0.weight"]
    grey = torch.load(tmp_path / "g" / "best.pt", weights_only=True)["model"]["features.0.weight"]
    assert torch.allclose(grey, rgb.sum(dim=1, keepdim=True))

    state = {k: v for k, v in create_model("lenet5", num_classes=3, in_chans=3).state_dict().items()
             if not k.startswith("f6.")}
    torch.save(state, tmp_path / "partial.pt")
    code, _, err = run_cli(capsys, "train", "--data", str(folder_run / "ft"), "--init-from", "partial.pt",
                           "--freeze-backbone", "--out", "p", *QUIET)
    assert code == 2
    one_error(err, "train", "leaves 2 tensors besides the classifier random and frozen by --freeze-backbone, in f6.1",
              "--allow-partial")
    assert "num_batches_tracked" not in err and not (tmp_path / "p" / "last.pt").exists()
    said = train_lenet(capsys, str(folder_run / "ft"), "p2", "--init-from", "partial.pt", "--allow-partial")
    assert "left random (--allow-partial): f6.1" in said


def test_init_from_maps_timm_se_names(folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    source = create_model("resnet20_cifar", attn_layer="se", num_classes=3).state_dict()
    timm_names = {k.replace(".attn.", ".se.").replace("head.fc.", "fc."): v for k, v in source.items()}
    assert any(".se." in k for k in timm_names)
    torch.save(timm_names, tmp_path / "timm_se.pt")
    said = train_lenet(capsys, str(folder_run / "ft"), "se", "--model", "resnet20_cifar", "--set",
                       "model.kwargs={attn_layer: se}", "--init-from", "timm_se.pt", "--freeze-backbone",
                       "--batch-size", "32")
    assert "(timm names)" in said and "left random" not in said
    trained = torch.load(tmp_path / "se" / "last.pt", weights_only=True)["model"]
    se = [k for k in source if ".attn." in k]
    assert se and all(torch.equal(trained[k], source[k]) for k in se)


# ------------------------------------------------------------------------- 7. summary


def test_summary_of_a_checkpoint_or_weights_file_shows_what_is_frozen(folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_lenet(capsys, str(folder_run / "ft"), "frozen", "--init-from", str(folder_run / "run" / "best.pt"),
                "--freeze-backbone")
    code, out, err = run_cli(capsys, "summary", "frozen/best.pt", "--depth", "1")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha()}
    assert rows["Layer"][:5] == ["Layer", "Type", "Output", "shape", "Params"] and rows["Layer"][5] == "Trainable"
    assert rows["features"][-2] == "frozen" and rows["fc"][-2] == "all"
    assert "Trainable params:      255\n" in out

    torch.save(create_model("lenet5", num_classes=3).state_dict(), tmp_path / "w.pt")
    code, _, err = run_cli(capsys, "summary", "w.pt")
    assert code == 2
    one_error(err, "summary", "w.pt does not say which architecture", "--model NAME")
    code, out, err = run_cli(capsys, "summary", "w.pt", "--model", "lenet5", "--num-classes", "3", "--freeze-backbone",
                             "--depth", "1")
    assert code == 0, err
    assert "weights: w.pt: cnnzoo names" in out and "Non-trainable params:  60,856  (frozen)" in out
    code, _, err = run_cli(capsys, "summary", "frozen/best.pt", "--num-classes", "4")
    assert code == 2
    one_error(err, "summary", "--num-classes: frozen/best.pt is a checkpoint of 'lenet5'")


@pytest.mark.parametrize("argv, phrase", [
    (["--model-arg", "num_classes=3", "--num-classes", "5"], "--model-arg num_classes=3 contradicts --num-classes 5"),
    (["--model-arg", "in_chans=3", "--in-chans", "1"], "--model-arg in_chans=3 contradicts --in-chans 1"),
    (["--in-chans", "3", "--input-size", "1,32,32"], "--in-chans 3 contradicts --input-size 1,32,32"),
    (["--model-arg", "variant=zzz"], "--model-arg: lenet5 cannot be built with these options (ValueError: variant"),
    (["--model-arg", "foo=1"], "--model-arg: model 'lenet5': does not take option(s) 'foo'"),
])
def test_summary_model_args_that_cannot_hold_are_one_line(argv, phrase, capsys):
    code, out, err = run_cli(capsys, "summary", "lenet5", *argv)
    assert code == 2 and not out
    one_error(err, "summary", phrase)


# ------------------------------------------------------------------------- 8. denoise


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    """A three-layer DnCNN trained for one epoch on four images, and a folder to evaluate it on."""
    root = tmp_path_factory.mktemp("dn")
    ramp = (np.add.outer(np.arange(48), np.arange(48)) * 2 % 255).astype(np.uint8)
    for folder, n in (("train", 4), ("set1", 1)):
        (root / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(ramp).save(root / "data" / folder / f"{i}.png")
    assert main(["train", "--task", "denoise", "--data", str(root / "data"), "--set", "model.kwargs.depth=3",
                 "--set", "task_options.patch_stride=20", "--epochs", "1", "--out", str(root / "run"), *QUIET]) == 0
    return root / "run" / "last.pt"


def test_eval_of_a_denoiser_refuses_classification_options(denoiser, capsys):
    code, _, err = run_cli(capsys, "eval", str(denoiser), "--tta", "hflip")
    assert code == 2
    one_error(err, "eval", "--tta: not used by the evaluation of a 'denoise' checkpoint (dncnn)", "leave it out")
    code, _, err = run_cli(capsys, "eval", str(denoiser), "--split", "val", "--batch-size", "4")
    assert code == 2
    one_error(err, "eval", "--split and --batch-size: not used", "leave them out")
    code, out, err = run_cli(capsys, "eval", str(denoiser))
    assert code == 0, err
    assert "set1: 1 image, sigma 25" in out


def test_denoise_refuses_every_path_to_its_input_before_any_work(denoiser, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((24, 24), 100, dtype=np.uint8)).save("in.png")
    (tmp_path / "sub").mkdir()
    os.symlink("in.png", "link.png")
    before = (tmp_path / "in.png").read_bytes()
    cases = {("link.png",): "OUT link.png is the input image (another path to the same file)",
             ("sub/../in.png",): "OUT sub/../in.png is the input image (another path to the same file)",
             ("out.png", "--sigma", "25", "--noisy-out", "in.png"): "--noisy-out in.png is the input image",
             ("out.png", "--sigma", "25", "--noisy-out", "out.png"): "--noisy-out out.png is OUT too",
             ("sub",): "cannot write sub: it is a folder"}
    for argv, phrase in cases.items():
        code, _, err = run_cli(capsys, "denoise", str(denoiser), "in.png", *argv)
        assert code == 2, argv
        one_error(err, "denoise", phrase)
    code, _, err = run_cli(capsys, "denoise", str(denoiser), "sub", "out.png")
    assert code == 2
    one_error(err, "denoise", "IN sub is a folder")
    assert (tmp_path / "in.png").read_bytes() == before and not (tmp_path / "out.png").exists()


def test_denoise_warns_when_colour_becomes_grey(denoiser, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    Image.fromarray(np.full((24, 24, 3), 90, dtype=np.uint8)).save(tmp_path / "grey_rgb.png")
    code, _, err = run_cli(capsys, "denoise", str(denoiser), str(tmp_path / "colour.png"), str(tmp_path / "o.png"))
    assert code == 0, err
    assert err.count("warning:") == 1 and "colour.png is a colour image; last.pt denoises one channel, so it is " \
                                          "converted to grey" in err
    assert Image.open(tmp_path / "o.png").mode == "L"
    code, _, err = run_cli(capsys, "denoise", str(denoiser), str(tmp_path / "grey_rgb.png"), str(tmp_path / "o2.png"))
    assert code == 0 and "warning" not in err  # an RGB file whose channels are equal is grey


# ------------------------------------------------------------------------- as a user types it


@pytest.mark.slow
def test_the_whole_story_in_subprocesses_from_other_directories(tmp_path):
    """Train with a relative path in one directory; from another, evaluate, move the data,
    resume with --data NEWPATH, evaluate a folder of only test/, summarise the frozen run and
    refuse a partial --init-from and a denoise over the input: exit codes, lines and streams."""
    env = {"PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "CNNZOO_CACHE_DIR": str(tmp_path / "cache")}

    def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnnzoo", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    a, b = tmp_path / "a", tmp_path / "b"
    image_folder(a / "ft", ("train", "test"), n=4)
    image_folder(b / "held", ("test",), n=2)
    b.mkdir(exist_ok=True)
    out = cli("train", "--data", "ft", "--epochs", "1", "--out", "run", *QUIET, cwd=a)
    assert out.returncode == 0, out.stderr
    ckpt = str(a / "run" / "best.pt")
    out = cli("eval", ckpt, cwd=b)
    assert out.returncode == 0 and "test split, 12 images" in out.stdout, out.stderr
    shutil.move(a / "ft", b / "ft")
    out = cli("train", "--resume", str(a / "run"), "--epochs", "2", *QUIET, cwd=b)
    assert out.returncode == 2 and not out.stdout
    one_error(out.stderr, "train", "is not there any more", "--data NEWPATH")
    out = cli("train", "--resume", str(a / "run"), "--epochs", "2", "--data", "ft", *QUIET, cwd=b)
    assert out.returncode == 0 and "epoch 2/2" in out.stdout + out.stderr, out.stderr
    out = cli("eval", ckpt, "--data", "held", cwd=b)
    assert out.returncode == 0 and "data: folder:held, test split, 6 images" in out.stdout, out.stderr
    state = {k: v for k, v in create_model("lenet5", num_classes=3, in_chans=3).state_dict().items()
             if not k.startswith("features.3")}
    torch.save(state, b / "partial.pt")
    out = cli("train", "--data", "ft", "--init-from", "partial.pt", "--freeze-backbone", "--out", "p", *QUIET, cwd=b)
    assert out.returncode == 2 and not (b / "p").exists()  # the banner was printed; the refused run left nothing
    one_error(out.stderr, "train", "leaves 2 tensors besides the classifier random and frozen by --freeze-backbone, "
                                   "in features.3")
    out = cli("summary", ckpt, "--model-arg", "num_classes=4", cwd=b)
    assert out.returncode == 2 and not out.stdout
    one_error(out.stderr, "summary", "--model-arg: ")
    out = cli("summary", "lenet5", "--model-arg", "num_classes=4", "--num-classes", "3", cwd=b)
    assert out.returncode == 2 and not out.stdout
    one_error(out.stderr, "summary", "contradicts --num-classes 3")
    Image.fromarray(np.full((24, 24), 100, dtype=np.uint8)).save(b / "in.png")
    os.symlink("in.png", b / "same.png")
    out = cli("denoise", str(DNCNN), "in.png", "same.png", cwd=b)
    assert out.returncode == 2 and not out.stdout
    one_error(out.stderr, "denoise", "is the input image")
