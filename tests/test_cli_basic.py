"""`cnnzoo list | info | summary` run as a user would, in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest


def cnnzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    out = cnnzoo("--help")
    assert out.returncode == 0
    for command in ("list", "info", "summary"):
        assert command in out.stdout


def test_list_with_pattern():
    out = cnnzoo("list", "lenet*")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "family", "input", "params", "paper"]
    assert any(line.startswith("lenet5 ") and "61,706" in line and "LeCun et al. 1998" in line for line in lines)
    assert "2 models" in out.stdout  # issue 16: "1 model", "2 models"


def test_info_shows_paper():
    out = cnnzoo("info", "lenet5")
    assert out.returncode == 0, out.stderr
    assert "Gradient-Based Learning Applied to Document Recognition" in out.stdout
    assert "parameters:   61,706" in out.stdout


def test_summary_prints_table_and_totals():
    out = cnnzoo("summary", "lenet5", "--input-size", "1,32,32", "--depth", "1")
    assert out.returncode == 0, out.stderr
    assert "Total params:          61,706" in out.stdout
    assert "MACs:                  416,520" in out.stdout
    assert "FLOPs (= 2 x MACs):    833,040" in out.stdout


@pytest.mark.parametrize("args, message", [
    (("info", "lenet"), "did you mean lenet5"),
    (("summary", "lenet5", "--input-size", "1,4,4"), "cannot run on input 1x4x4"),
    (("list", "nothing_like_this*"), "no model matches"),
])
def test_user_errors_are_one_line_exit_2(args, message):
    out = cnnzoo(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_input_size_is_an_argparse_error():
    out = cnnzoo("summary", "lenet5", "--input-size", "abc")
    assert out.returncode == 2 and "expected C,H,W" in out.stderr


def test_info_lists_family_specific_metadata():
    out = cnnzoo("info", "mobilenet_v1_050", "--no-build")
    assert out.returncode == 0, out.stderr
    assert "width_mult:   0.5" in out.stdout and "resolution_mult: 1.0" in out.stdout


def test_summary_model_args_change_the_network():
    plain = cnnzoo("summary", "resnet20_cifar", "--depth", "1")
    cbam = cnnzoo("summary", "resnet20_cifar", "--depth", "1", "--model-arg", "attn_layer=cbam")
    assert plain.returncode == cbam.returncode == 0, cbam.stderr
    assert "Total params:          269,722" in plain.stdout
    assert "Total params:          269,722" not in cbam.stdout
    rho = cnnzoo("summary", "mobilenet_v1", "--depth", "1", "--model-arg", "resolution_mult=0.571")
    assert "input 3x128x128" in rho.stdout and "MACs:                  186,400,768" in rho.stdout
    bad = cnnzoo("summary", "resnet20_cifar", "--model-arg", "colour=1")
    assert bad.returncode == 2 and "does not take option(s) 'colour'" in bad.stderr
