"""The published akamaster CIFAR-10 ResNet weights load into resnet*_cifar and classify well.

Reads ../shared in place (weights and the CIFAR-10 (JPEG) test set); skips without it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.errors import CnnzooError
from cnnzoo.weights.akamaster import AKAMASTER_MEAN, AKAMASTER_STD, convert_state_dict, load_akamaster

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "akamaster-resnet-cifar10"
CIFAR_TAR = SHARED / "data" / "cifar10-jpg.tar.gz"
PER_CLASS = 200  # 2,000 test images, balanced over the 10 classes

needs_shared = pytest.mark.skipif(
    not (WEIGHTS.is_dir() and CIFAR_TAR.is_file()),
    reason=f"shared weights/data not found at {SHARED} (akamaster weights and cifar10-jpg.tar.gz)",
)


def read_cifar_test(tar_path: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` test images of each class, as normalised tensors and labels."""
    images, labels, classes = [], [], {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != "test" or not parts[2].endswith(".jpg"):
                continue
            if int(parts[2].removesuffix(".jpg")) >= per_class:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(parts[1])
            classes.setdefault(parts[1], None)
    index = {name: i for i, name in enumerate(sorted(classes))}  # alphabetical = CIFAR-10 order
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    mean, std = torch.tensor(AKAMASTER_MEAN).view(1, 3, 1, 1), torch.tensor(AKAMASTER_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor([index[name] for name in labels])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


@needs_shared
def test_resnet20_weights_classify_cifar10():
    (path,) = sorted(WEIGHTS.glob("resnet20-*.th"))
    model = load_akamaster(path)
    assert model.default_cfg["architecture"] == "resnet20_cifar"
    assert (model.default_cfg["mean"], model.default_cfg["std"]) == (AKAMASTER_MEAN, AKAMASTER_STD)
    x, y = read_cifar_test(CIFAR_TAR, PER_CLASS)
    assert x.shape == (10 * PER_CLASS, 3, 32, 32)
    # 91.8% on the official CIFAR-10 test set; the JPEG re-encoding costs about 10 points
    # (81.0% on all 10k JPEG test images, 81.4% on these 2,000). Broken option-A padding
    # (all zeros on one side) gives 18%, BGR input 70%.
    assert accuracy(model, x, y) > 0.78


@needs_shared
def test_mismatched_checkpoint_names_the_file(tmp_path):
    (path,) = sorted(WEIGHTS.glob("resnet20-*.th"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    del checkpoint["state_dict"]["module.layer2.0.conv1.weight"]
    broken = tmp_path / "broken.th"
    torch.save(checkpoint, broken)
    with pytest.raises(CnnzooError, match=r"broken\.th.*layer2\.0\.conv1\.weight"):
        load_akamaster(broken)


def test_convert_renames_dataparallel_and_classifier_keys():
    state = {"module.conv1.weight": torch.zeros(1), "module.linear.bias": torch.zeros(1)}
    assert set(convert_state_dict(state)) == {"conv1.weight", "head.fc.bias"}
