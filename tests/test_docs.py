"""The documentation lists exactly the models that exist (no README listing phantom models)."""

from __future__ import annotations

import re

from cnnzoo import list_models
from cnnzoo.engine.config import shipped_recipes
from conftest import REPO_ROOT


def test_models_page_matches_the_registry():
    text = (REPO_ROOT / "docs" / "models.md").read_text()
    listed = re.findall(r"^\| (\w+) \|", text, flags=re.M)
    listed = [name for name in listed if name != "name"]
    assert sorted(listed) == list_models(), "regenerate docs/models.md with `cnnzoo list --papers --markdown`"


def test_readme_commands_name_real_models_and_recipes():
    text = (REPO_ROOT / "README.md").read_text()
    shown_as_unknown = set(re.findall(r"unknown model '(\w+)'", text))
    names = re.findall(r"--model ([a-z]\w*)", text) + re.findall(r"cnnzoo (?:info|summary|explain receptive-field) ([a-z][a-z0-9_]*)", text)
    names += re.findall(r'create_model\("(\w+)"', text)
    assert names
    for name in set(names) - shown_as_unknown:
        assert name in list_models(), name
    for recipe in re.findall(r"--config (\w+)", text):
        assert recipe in shipped_recipes(), recipe
