"""The recipes ship inside the package: a wheel installed with pip (not an editable checkout)
lists them and trains from one, from any working directory."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile

import pytest

from cnnzoo.cli.main import main
from cnnzoo.engine.config import find_recipe, recipe_summary, shipped_recipes
from conftest import REPO_ROOT


def test_recipes_are_listed_with_a_line_each(capsys):
    recipes = shipped_recipes()
    assert {"lenet5_digits", "resnet20_cifar10", "cifar10_fast", "dncnn_s_sigma25"} <= set(recipes)
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name, path in recipes.items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert recipe_summary(path) and recipe_summary(path)[:40] in line and len(line) <= 125
    assert find_recipe("resnet20_cifar10") == recipes["resnet20_cifar10"]


@pytest.mark.slow  # builds and installs a wheel
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="setuptools is needed to build the wheel")
def test_a_wheel_installed_without_the_checkout_trains_from_a_shipped_recipe(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist, site = tmp_path / "dist", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO_ROOT)], check=True, capture_output=True, env=env, timeout=300)
    (wheel,) = dist.glob("cnnzoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"cnnzoo/recipes/{name}.yaml" for name in shipped_recipes()} <= names
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, env=env, timeout=300)
    env["PYTHONPATH"] = str(site)  # ahead of the editable checkout on sys.path
    where = subprocess.run([sys.executable, "-c", "import cnnzoo; print(cnnzoo.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--config", "lenet5_digits", "--epochs", "1",
                          "--out", str(tmp_path / "run"), "--progress", "off"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "test (" in out.stdout and (tmp_path / "run" / "best.pt").is_file()
