"""Every command accepts weights, and the transfer workflow works end to end (issue 11, parts 4-5).

Published weights are stood in for by a cnnzoo model's state saved as a plain file (read with
the same converters and checks as a publisher's), and by akamaster's real `.th` files from
../shared when present. Command-line tests run `python -m cnnzoo` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.analysis.summary import summary
from cnnzoo.engine.config import ConfigError, config_from_dict, validate
from cnnzoo.engine.task import DataMeta
from cnnzoo.engine.weights_init import load_initial_weights, load_start_weights, start_normalization
from cnnzoo.registry import create_model as plain_create_model
from conftest import REPO_ROOT, SHARED

AKAMASTER = SHARED / "weights" / "akamaster-resnet-cifar10"
CIFAR_TAR = SHARED / "data" / "cifar10-jpg.tar.gz"
needs_akamaster = pytest.mark.skipif(not (AKAMASTER.is_dir() and CIFAR_TAR.is_file()),
                                     reason=f"akamaster weights / cifar10-jpg.tar.gz not found in {SHARED}")
HEAD = ("head.fc.weight", "head.fc.bias")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def image_folder(root: Path, classes: tuple[str, ...], *, mode: str = "RGB", train: int = 8, test: int = 3,
                 shift: int = 0) -> Path:
    """train/<class>/ and test/<class>/ of 16x16 images whose colour depends on the class."""
    rng = np.random.default_rng(len(classes) + shift)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([40 + 60 * c + shift, 200 - 50 * c, 90 + 30 * c]) % 256
                pixels = np.clip(base + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                (img.convert("L") if mode == "L" else img).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 10-class RGB resnet20_cifar with randomised BN statistics, saved as a bare state dict."""
    torch.manual_seed(1)
    model = plain_create_model("resnet20_cifar")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet20_rgb.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, weights_file):
    """`cnnzoo train --pretrained FILE --freeze-backbone` on a 3-class RGB folder."""
    root = tmp_path_factory.mktemp("frozen")
    data = image_folder(root / "rgb", ("ant", "bee", "cat"))
    out = cli("train", "--model", "resnet20_cifar", "--data", str(data), "--pretrained", str(weights_file[0]),
              "--freeze-backbone", "--epochs", "2", "--batch-size", "8", "--progress", "off", "--out", "run",
              "--set", "runtime.tensorboard=false", cwd=root)
    assert out.returncode == 0, out.stderr
    return root / "run", out.stdout + out.stderr, data


# ------------------------------------------------------------------------- create_model(pretrained=...)


def test_create_model_pretrained_file_loads_every_tensor(weights_file, tmp_path):
    path, state = weights_file
    model = cnnzoo.create_model("resnet20_cifar", pretrained=str(path))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert "classifier" not in model.pretrained_loaded  # same 10 classes: the head is the file's
    # the safetensors form of the same weights, and the plain factory without weights
    from safetensors.torch import save_file

    save_file(state, tmp_path / "w.safetensors")
    again = cnnzoo.create_model("resnet20_cifar", pretrained=tmp_path / "w.safetensors")
    assert torch.equal(again.conv1.weight, state["conv1.weight"])
    assert not hasattr(plain_create_model("resnet20_cifar"), "pretrained_cfg")


def test_create_model_other_num_classes_leaves_the_head_fresh(weights_file):
    path, state = weights_file
    torch.manual_seed(5)
    fresh = plain_create_model("resnet20_cifar", num_classes=3).state_dict()
    torch.manual_seed(5)
    model = cnnzoo.create_model("resnet20_cifar", pretrained=str(path), num_classes=3)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if k not in HEAD)
    assert got["head.fc.weight"].shape == (3, 64) and torch.equal(got["head.fc.weight"], fresh["head.fc.weight"])
    assert "classifier left fresh (2 tensors)" in model.pretrained_loaded
    assert model.pretrained_cfg["classes"] is None  # the weights' class names no longer apply


def test_grey_model_from_rgb_weights_sums_the_first_conv(weights_file):
    path, state = weights_file
    model = cnnzoo.create_model("resnet20_cifar", pretrained=str(path), in_chans=1)
    assert model.conv1.weight.shape == (16, 1, 3, 3)
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert "conv1.weight adapted from 3 to 1 input channel(s) (RGB filters summed)" in model.pretrained_loaded


def test_start_weights_load_the_backbone_and_remake_the_head(weights_file):
    path, state = weights_file
    cfg = config_from_dict({"model": {"name": "resnet20_cifar", "pretrained": str(path)}})
    meta = DataMeta("toy", "", 3, (3, 16, 16), (0.5,) * 3, (0.25,) * 3, {}, classes=("a", "b", "c"))
    model = plain_create_model("resnet20_cifar", num_classes=3)
    head_before = model.head.fc.weight.clone()
    lines = load_start_weights(model, cfg, meta)
    assert lines == [f"weights: {path.name}: cnnzoo names; classifier re-made for 3 classes"]
    assert torch.equal(model.head.fc.weight, head_before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k not in HEAD)


def test_normalisation_follows_the_weights_unless_asked_for_the_datasets():
    cfg = config_from_dict({"model": {"name": "resnet20_cifar", "pretrained": "resnet20_cifar.akamaster"}})
    mean, std, source = start_normalization(cfg, 3)  # a tag: no file needed
    assert (mean, std, source) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "resnet20_cifar.akamaster")
    assert start_normalization(cfg, 1)[0] == pytest.approx((sum((0.485, 0.456, 0.406)) / 3,))
    cfg.data.normalize = "dataset"
    assert start_normalization(cfg, 3) is None


def test_freeze_backbone_needs_weights():
    with pytest.raises(ConfigError, match="model.freeze_backbone: needs weights to freeze"):
        validate(config_from_dict({"model": {"freeze_backbone": True}}))


# ------------------------------------------------------------------------- cnnzoo train


def test_train_frozen_backbone_keeps_backbone_and_bn_statistics(frozen_run, weights_file):
    run, stdout, _ = frozen_run
    _, state = weights_file
    assert "weights: resnet20_rgb.pt: cnnzoo names; classifier re-made for 3 classes" in stdout
    assert "650 trainable" not in stdout and "195 trainable, 269,072 frozen" in stdout
    assert "BatchNorm running statistics, buffers rather than parameters" in stdout
    trained = torch.load(run / "last.pt", weights_only=True, map_location="cpu")["model"]
    changed = {k for k, v in state.items() if k not in HEAD and not torch.equal(trained[k], v)}
    assert not changed  # parameters AND BatchNorm running statistics (buffers) untouched
    assert trained["head.fc.weight"].shape == (3, 64)


def test_train_grey_data_with_rgb_weights(tmp_path, weights_file):
    path, state = weights_file
    data = image_folder(tmp_path / "grey", ("ant", "bee"), mode="L")
    out = cli("train", "--model", "resnet20_cifar", "--data", str(data), "--pretrained", str(path),
              "--freeze-backbone", "--epochs", "1", "--batch-size", "8", "--progress", "off", "--out", "run",
              "--set", "runtime.tensorboard=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    said = [line for line in (out.stdout + out.stderr).splitlines() if "summed" in line]
    assert said == ["conv1.weight: the 3-channel (RGB) filters summed over their input channels for 1-channel data "
                    "(as timm's adapt_input_conv)"]
    trained = torch.load(tmp_path / "run" / "best.pt", weights_only=True, map_location="cpu")["model"]
    assert torch.allclose(trained["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))


def test_freeze_backbone_without_weights_is_refused_in_one_line(tmp_path):
    out = cli("train", "--freeze-backbone", "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "needs weights to freeze" in out.stderr


def test_init_from_keeps_the_head_for_the_same_classes_and_normalises_as_the_source(frozen_run, tmp_path):
    run, _, data = frozen_run
    source = torch.load(run / "best.pt", weights_only=True, map_location="cpu")
    model = plain_create_model("resnet20_cifar", num_classes=3)
    report = load_initial_weights(model, run / "best.pt", classes=("ant", "bee", "cat"))
    assert "classifier loaded (the same classes)" in report
    assert torch.equal(model.head.fc.weight, source["model"]["head.fc.weight"])
    # three other classes: the count matches but the head was trained for other things
    model = plain_create_model("resnet20_cifar", num_classes=3)
    report = load_initial_weights(model, run / "best.pt", classes=("dog", "eel", "fox"))
    assert "classifier left fresh: the checkpoint's 3 classes (ant, bee, cat) are not this data's" in report
    assert not torch.equal(model.head.fc.weight, source["model"]["head.fc.weight"])
    # through the command line, on other data: the new run normalises as its source was trained
    other = image_folder(tmp_path / "other", ("ant", "bee", "cat"), shift=90)
    out = cli("train", "--model", "resnet20_cifar", "--data", str(other), "--init-from", str(run / "best.pt"),
              "--epochs", "1", "--batch-size", "8", "--progress", "off", "--out", "run",
              "--set", "runtime.tensorboard=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "classifier loaded (the same classes)" in out.stdout + out.stderr
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True, map_location="cpu")
    assert ckpt["preprocessing"]["mean"] == source["preprocessing"]["mean"]
    assert ckpt["meta"]["mean"] == source["meta"]["mean"]


# ------------------------------------------------------------------------- summary


def test_summary_shows_frozen_and_trainable(frozen_run, weights_file, tmp_path):
    run, _, _ = frozen_run
    out = cli("summary", "resnet20_cifar", "--pretrained", str(weights_file[0]), "--num-classes", "3",
              "--freeze-backbone", "--depth", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Trainable params:      195\n" in out.stdout and "Non-trainable params:  269,072  (frozen)" in out.stdout
    assert "BatchNorm statistics:  1,376  (running means and variances: buffers, not parameters" in out.stdout
    out = cli("summary", str(run / "best.pt"), "--depth", "1", cwd=tmp_path)  # what the run froze
    assert out.returncode == 0, out.stderr
    assert "Trainable params:      195\n" in out.stdout


def test_mobilenet_v2_land_use_numbers():
    """docs/transfer.md: 21 classes, frozen backbone; Keras counts the BN statistics as frozen."""
    from cnnzoo.engine.optim import freeze_backbone

    model = plain_create_model("mobilenet_v2", num_classes=21)
    freeze_backbone(model)
    s = summary(model, (3, 96, 96), depth=1)
    assert (s.trainable_params, s.total_params - s.trainable_params) == (26_901, 2_223_872)
    assert s.total_params - s.trainable_params + s.norm_statistics == 2_257_984


# ------------------------------------------------------------------------- eval / predict --weights


def cifar_subset(tar_path: Path, root: Path, per_class: int) -> Path:
    """test/<class>/ with the first `per_class` CIFAR-10 (JPEG) test images (all: 1000), and a
    one-image train/ the folder loader requires."""
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != "test" or not parts[2].endswith(".jpg"):
                continue
            index = int(parts[2].removesuffix(".jpg"))
            if index >= per_class:
                continue
            data = tar.extractfile(member).read()
            for split in ("test",) + (("train",) if index == 0 else ()):
                (root / split / parts[1]).mkdir(parents=True, exist_ok=True)
                (root / split / parts[1] / parts[2]).write_bytes(data)
    return root


def python_path_accuracy(weights: Path, folder: Path) -> float:
    """tests/test_pretrained_resnet_cifar.py's way: PIL, float, normalise, the loaded model."""
    from cnnzoo.weights.akamaster import AKAMASTER_MEAN, AKAMASTER_STD, load_akamaster

    model = load_akamaster(weights).eval()
    classes = sorted(p.name for p in (folder / "test").iterdir())
    mean, std = torch.tensor(AKAMASTER_MEAN).view(1, 3, 1, 1), torch.tensor(AKAMASTER_STD).view(1, 3, 1, 1)
    correct = total = 0
    for label, name in enumerate(classes):
        files = sorted((folder / "test" / name).glob("*.jpg"))
        x = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
                                       for f in files])).permute(0, 3, 1, 2)
        with torch.no_grad():
            correct += int((model((x - mean) / std).argmax(1) == label).sum())
        total += len(files)
    return correct / total


def cli_eval_accuracy(weights: Path, folder: Path, cwd: Path) -> tuple[float, str]:
    out = cli("eval", "--model", "resnet20_cifar", "--weights", str(weights), "--data", str(folder),
              "--out", "ev", cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads((cwd / "ev" / "metrics.json").read_text())["top1"], out.stdout


@needs_akamaster
def test_eval_akamaster_weights_from_the_cli_matches_the_python_path(tmp_path):
    (weights,) = sorted(AKAMASTER.glob("resnet20-*.th"))
    folder = cifar_subset(CIFAR_TAR, tmp_path / "c10", per_class=30)
    top1, stdout = cli_eval_accuracy(weights, folder, tmp_path)
    assert top1 == pytest.approx(python_path_accuracy(weights, folder), abs=1 / 300 + 1e-9)  # 1 image at most
    assert "weights: " in stdout and "300 images" in stdout and "airplane" in stdout


@needs_akamaster
@pytest.mark.slow
def test_eval_akamaster_weights_full_test_split(tmp_path):
    (weights,) = sorted(AKAMASTER.glob("resnet20-*.th"))
    folder = cifar_subset(CIFAR_TAR, tmp_path / "c10", per_class=1000)
    top1, _ = cli_eval_accuracy(weights, folder, tmp_path)
    assert top1 == pytest.approx(0.8103, abs=0.0006)  # the Python path's 81.03% on CIFAR-10 (JPEG)


@needs_akamaster
def test_predict_with_weights_prints_their_class_names(tmp_path):
    (weights,) = sorted(AKAMASTER.glob("resnet20-*.th"))
    folder = cifar_subset(CIFAR_TAR, tmp_path / "c10", per_class=2)
    out = cli("predict", "--weights", str(weights), "--model", "resnet20_cifar", "--topk", "2",
              str(folder / "test" / "ship"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()[2:]  # under the table's header and rule (issue 16: --format table)
    assert len(lines) == 2 and all(line.split()[1] in
                                   {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                    "truck"} for line in lines)
    assert "ship" in out.stdout
