"""Export (ONNX, TorchScript, torch.export) verified against eager; BatchNorm folding; in-place
residual sums; `cnnzoo export` and `cnnzoo bench` in a subprocess; the all-models export sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from cnnzoo.export.formats import (
    ExportError,
    export_model,
    load_exported,
    model_metadata,
    read_metadata,
)
from cnnzoo.export.fuse import conv_bn_pairs, fast_inference_model, fold_batchnorm
from cnnzoo.registry import _REGISTRY, create_model, list_models

onnxruntime = pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")


def cnnzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=600, check=False)


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics, so that a wrong fold shows."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet20_cifar", pytest.param("mobilenet_v2_cifar", marks=pytest.mark.slow)])
def test_folding_removes_every_conv_bn_pair_and_keeps_the_output(name):
    model = _randomise_bn(create_model(name))
    x = torch.randn(2, 3, 32, 32)
    folded, count = fold_batchnorm(model, x[:1])
    assert count == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())  # every conv has its BN
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_preactivation_norms_are_not_folded():
    # BN-ReLU-conv: no BatchNorm reads a conv's output except the stem's, so only that is folded
    model = create_model("preresnet20_cifar").eval()
    pairs = conv_bn_pairs(model, torch.randn(1, 3, 32, 32))
    assert all(bn != "final_norm.0" for _, bn in pairs)
    folded, _ = fold_batchnorm(_randomise_bn(model), torch.randn(1, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_in_place_residual_sums_keep_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_model("resnet20_cifar", drop_path_rate=0.1).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    loss = model(x).square().mean()
    loss.backward()  # autograd accepts the in-place sums (it raises if a saved tensor was changed)
    assert all(p.grad is not None for p in model.parameters())
    block = model.layer1[0]
    y = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        block.eval()
        branch = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(y)))))
        torch.testing.assert_close(block(y), torch.relu(branch + y), atol=0, rtol=0)


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("exported", ".pt2"), ("onnx", ".onnx")])
def test_export_round_trip_with_metadata(tmp_path, fmt, suffix):
    model = create_model("lenet5").eval()
    size = (1, 32, 32)
    meta = model_metadata(model, size, [f"digit {i}" for i in range(10)], "lenet5")
    report = export_model(model, fmt, tmp_path / f"m{suffix}", input_size=size, dynamic_batch=True, metadata=meta,
                          onnx_exporter="torchscript")
    assert report.max_abs_diff <= report.tolerance and report.top1_agreement == 1.0 and report.samples == 4
    stored = read_metadata(fmt, report.path)
    assert json.loads(stored["class_names"])[3] == "digit 3"
    assert json.loads(stored["mean"]) == [0.5] and json.loads(stored["input_size"]) == [1, 32, 32]
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(fmt, report.path)(x), model(x), atol=1e-4, rtol=1e-4)
    if fmt == "torchscript":
        assert report.method == "scripted"  # LeNet-5 scripts since the base class lost its annotations


def test_a_wrong_export_is_refused(tmp_path):
    model, other = create_model("lenet5").eval(), create_model("lenet5").eval()
    with pytest.raises(ExportError, match="does not reproduce"):
        export_model(model, "torchscript", tmp_path / "m.pt", input_size=(1, 32, 32), reference=other)


def test_exported_archives_need_the_pt2_suffix(tmp_path):
    with pytest.raises(ExportError, match=r"\.pt2"):
        export_model(create_model("lenet5"), "exported", tmp_path / "m.ep", input_size=(1, 32, 32))


@pytest.mark.parametrize("fmt,name", [("torchscript", "m.pt"), pytest.param("exported", "m.pt2", marks=pytest.mark.slow),
                                      pytest.param("onnx", "m.onnx", marks=pytest.mark.slow)])
def test_cli_export_each_format_is_verified(tmp_path, fmt, name):
    out = cnnzoo("export", "resnet20_cifar", "--format", fmt, "-o", str(tmp_path / name), "--dynamic-batch")
    assert out.returncode == 0, out.stderr
    assert "max |diff|" in out.stdout and "top-1 agreement 100.0%" in out.stdout, out.stdout
    if fmt == "torchscript":
        assert "ResNet is not scriptable" in out.stderr and "traced instead" in out.stderr
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert json.loads(meta["input_size"]) == [3, 32, 32] and len(json.loads(meta["std"])) == 3
        assert session.run(None, {"input": torch.randn(5, 3, 32, 32).numpy()})[0].shape == (5, 10)


def test_cli_export_refuses_bad_input(tmp_path):
    out = cnnzoo("export", "no_such_model", "--format", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert out.returncode == 2 and "unknown model" in out.stderr


def test_cli_bench_compares_settings_as_json():
    out = cnnzoo("bench", "lenet5", "--fuse", "--compare", "--rounds", "2", "--min-time", "0.01", "--threads", "1",
                 "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["setting"] for r in rows] == ["eager", "fused"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0 and rows[1]["max_abs_diff"] < 1e-4
    assert all(r["p90_ms"] >= r["median_ms"] > 0 for r in rows)


# ------------------------------------------------------------------------------------------------
# The sweep: every registered model exported to ONNX and torch.export at a small input, verified.

def _small_size(name: str) -> tuple[int, int, int]:
    cfg = _REGISTRY[name].cfg
    smallest = cfg.min_input_size or (cfg.input_size[0], 32, 32)
    if cfg.input_style == "cifar" or cfg.task != "classify":
        return (cfg.input_size[0], max(32, smallest[1]), max(32, smallest[2]))
    return (cfg.input_size[0], max(64, smallest[1]), max(64, smallest[2]))


QUICK_SWEEP = ["lenet5", "resnet20_cifar"]


def export_both(name: str, tmp_path) -> None:
    model = create_model(name).eval()
    size = _small_size(name)
    fast = fast_inference_model(model, torch.randn(1, *size), channels_last=False)
    for fmt, suffix in [("onnx", ".onnx"), ("exported", ".pt2")]:
        try:  # the TorchScript-based ONNX exporter, ~10x quicker than the default one (dynamo)
            report = export_model(fast, fmt, tmp_path / f"{name}{suffix}", input_size=size, reference=model,
                                  samples=2, onnx_exporter="torchscript")
        except ExportError as err:  # e.g. adaptive pooling to a size that does not divide the input
            if "Unsupported: ONNX export" not in str(err):
                raise
            report = export_model(fast, fmt, tmp_path / f"{name}{suffix}", input_size=size, reference=model,
                                  samples=2)  # what `cnnzoo export` uses
        assert report.max_abs_diff <= report.tolerance, report.summary()


@pytest.mark.parametrize("name", QUICK_SWEEP)
def test_export_sweep_quick(name, tmp_path):
    export_both(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(list_models()) - set(QUICK_SWEEP)))
def test_export_sweep_every_model(name, tmp_path):
    start = time.process_time()
    export_both(name, tmp_path)
    assert time.process_time() - start < 600, name
