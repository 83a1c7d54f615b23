"""The weights registry, the real published files in ../shared, the CLI and docs/weights.md."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from cnnzoo import create_model, list_models
from cnnzoo.cli.main import main
from cnnzoo.weights import (ENTRIES, WeightsError, cached_path, class_names, default_weights, get_weights,
                            list_weights, load_pretrained)
from conftest import REPO_ROOT


def test_entries_are_well_formed():
    assert len(ENTRIES) >= 40 and len({e.tag for e in ENTRIES}) == len(ENTRIES)
    for e in ENTRIES:
        assert e.architecture in list_models(), e.tag
        assert e.tag.startswith(e.architecture + ".")
        assert e.url.startswith("https://")
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{8,64}", e.sha256)
    arches = {e.architecture for e in ENTRIES}
    assert all(sum(e.default for e in ENTRIES if e.architecture == a) == 1 for a in arches)


def test_torchvision_hashes_are_the_ones_in_the_file_names():
    for e in list_weights("*"):
        if e.source == "torchvision":
            assert e.file_name.endswith(f"-{e.sha256}.pth")


def test_lookup_and_suggestions():
    assert default_weights("mobilenet_v2").architecture == "mobilenet_v2"
    with pytest.raises(WeightsError, match="did you mean"):
        get_weights("mobilenet_v2.tv")
    with pytest.raises(WeightsError, match="no published weights"):
        default_weights("lenet5")


def test_class_lists():
    names = class_names("imagenet1k")
    assert len(names) == 1000 and all(names)
    assert len(class_names("cifar10")) == 10


@pytest.fixture
def akamaster_file(shared_dir):
    files = sorted((shared_dir / "weights" / "akamaster-resnet-cifar10").glob("resnet20-*.th"))
    if not files:
        pytest.skip("akamaster ResNet-20 file absent from ../shared")
    return files[0]


def test_akamaster_file_by_path_stamps_imagenet_statistics(akamaster_file):
    model = create_model("resnet20_cifar")
    assert model.default_cfg["mean"] != (0.485, 0.456, 0.406)
    loaded = load_pretrained(model, akamaster_file, arch="resnet20_cifar")
    assert loaded.entry.tag == "resnet20_cifar.akamaster"
    assert model.default_cfg["mean"] == (0.485, 0.456, 0.406) and model.default_cfg["std"] == (0.229, 0.224, 0.225)
    assert model.pretrained_cfg["classes"][0] == "airplane"


def test_akamaster_by_tag_once_in_the_cache(akamaster_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path))
    entry = get_weights("resnet20_cifar.akamaster")
    cached_path(entry).parent.mkdir(parents=True)
    shutil.copy(akamaster_file, cached_path(entry))
    by_tag, by_path = create_model("resnet20_cifar"), create_model("resnet20_cifar")
    load_pretrained(by_tag, True, arch="resnet20_cifar")
    load_pretrained(by_path, akamaster_file, arch="resnet20_cifar")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(by_tag.eval()(x), by_path.eval()(x))
    assert main(["weights", "download", entry.tag, "--no-progress"]) == 0  # a verified cached copy is kept


def test_official_dncnn_file(shared_dir):
    path = shared_dir / "weights" / "dncnn" / "dncnn_sigma25_model.pth"
    if not path.is_file():
        pytest.skip("official DnCNN weights absent from ../shared")
    with pytest.raises(WeightsError, match="bn_eps"):
        load_pretrained(create_model("dncnn"), path, arch="dncnn")
    model = create_model("dncnn", bn_eps=1e-4)
    assert load_pretrained(model, path, arch="dncnn").entry.tag == "dncnn.official_sigma25"


def test_cli_list_info_and_errors(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{len(ENTRIES)} weights entries" in out and len(ENTRIES) >= 40
    assert main(["weights", "info", "mobilenet_v2.tv2_in1k"]) == 0
    assert "download.pytorch.org" in capsys.readouterr().out
    assert main(["weights", "info", "nope.nope"]) == 2
    assert main(["weights", "list", "zzz*"]) == 2


def test_cli_convert_roundtrip(tmp_path, capsys):
    """An akamaster-named state dict -> cnnzoo safetensors -> the same model."""
    from safetensors import safe_open

    model = create_model("resnet20_cifar")
    theirs = {("module." + k).replace("module.head.fc.", "module.linear."): v for k, v in model.state_dict().items()}
    torch.save({"state_dict": theirs}, tmp_path / "r20.th")
    out = tmp_path / "r20.safetensors"
    assert main(["weights", "convert", str(tmp_path / "r20.th"), "--model", "resnet20_cifar", "-o", str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["architecture"] == "resnet20_cifar"
    again = create_model("resnet20_cifar")
    load_pretrained(again, out, arch="resnet20_cifar")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert main(["weights", "convert", str(tmp_path / "r20.th"), "--model", "resnet32_cifar", "-o", str(out)]) == 2
    assert "missing" in capsys.readouterr().err


def test_docs_table_matches_the_registry(capsys):
    text = (REPO_ROOT / "docs" / "weights.md").read_text()
    assert main(["weights", "list", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() in text, "regenerate the table with `cnnzoo weights list --markdown`"
