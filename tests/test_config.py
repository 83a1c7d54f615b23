"""The typed config: strict loading, overrides, a table of bad configs, and the shipped recipes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnzoo.cli.train import build_config, register
from cnnzoo.engine.config import (Config, ConfigError, config_from_dict, config_to_dict, parse_assignment,
                                  set_key, shipped_recipes, validate)

REPO = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_defaults_are_the_digits_run():
    cfg = validate(Config())
    assert (cfg.model.name, cfg.data.dataset, cfg.task) == ("lenet5", "digits", "classify")


def test_round_trip_through_yaml():
    cfg = config_from_dict({"optim": {"betas": [0.8, 0.9]}, "schedule": {"milestones": [3, 5]}})
    text = yaml.safe_dump(config_to_dict(cfg))
    again = config_from_dict(yaml.safe_load(text))
    assert again == cfg and again.optim.betas == (0.8, 0.9)


def test_yaml_scientific_notation_without_dot_is_a_number():
    # PyYAML reads "1e-4" as a string (YAML 1.1); a float field must still take it.
    cfg = config_from_dict(yaml.safe_load("optim:\n  weight_decay: 1e-4\n"))
    assert cfg.optim.weight_decay == 1e-4


def test_flags_override_recipe_and_set_reaches_any_key():
    args = parse("--config", "resnet20_cifar10", "--epochs", "3", "--lr", "0.05",
                 "--set", "schedule.milestones=[1, 2]", "--set", "model.kwargs.shortcut=B")
    cfg, resume = build_config(args)
    assert resume is None
    assert cfg.model.name == "resnet20_cifar"  # from the recipe
    assert cfg.schedule.epochs == 3 and cfg.optim.lr == 0.05 and cfg.schedule.milestones == [1.0, 2.0]
    assert cfg.model.kwargs == {"shortcut": "B"}
    assert cfg.optim.weight_decay == 1e-4  # recipe value kept


@pytest.mark.parametrize("recipe", sorted(shipped_recipes()))
def test_every_shipped_recipe_is_valid(recipe):
    cfg, _ = build_config(parse("--config", recipe))
    assert cfg.model.name


def test_resnet20_recipe_is_the_papers():
    cfg, _ = build_config(parse("--config", "resnet20_cifar10"))
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert cfg.data.batch_size == 128 and cfg.data.val_fraction == 0.1
    assert (cfg.schedule.unit, cfg.schedule.milestones, cfg.schedule.max_steps) == ("step", [32000, 48000], 64000)
    assert 64000 / 352 <= cfg.schedule.epochs < 64000 / 352 + 1  # 45k/128 = 352 steps per epoch


BAD_CONFIGS = [
    # (raw config or assignment, key the message must name, extra text expected)
    ({"optim": {"lr_rate": 0.1}}, "optim.lr_rate", "did you mean 'optim.lr'"),
    ({"lr": 0.1}, "'lr'", "did you mean 'optim.lr'"),
    ({"schedule": {"name": "cosin"}}, "schedule.name", "did you mean 'cosine'"),
    ({"optim": {"name": "adam"}}, "optim.name", "adamw"),
    ({"optim": {"lr": "fast"}}, "optim.lr", "expected a number"),
    ({"data": {"batch_size": 12.5}}, "data.batch_size", "whole number"),
    ({"runtime": {"compile": "yes"}}, "runtime.compile", "true or false"),
    ({"optim": {"betas": [0.9]}}, "optim.betas", "expected 2 values"),
    ({"model": "lenet5"}, "model", "expected a mapping"),
    ({"data": {"batch_size": 0}}, "data.batch_size", "at least 1"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction", "[0, 1)"),
    ({"optim": {"nesterov": True, "momentum": 0.0}}, "optim.nesterov", "momentum > 0"),
    ({"schedule": {"milestones": [60, 30], "name": "multistep"}}, "schedule.milestones", "increasing"),
    ({"schedule": {"name": "multistep"}}, "schedule.milestones", "at least one"),
    ({"schedule": {"name": "onecycle", "warmup": 2}}, "schedule.warmup", "pct_start"),
    ({"regularization": {"label_smoothing": 1.0}}, "regularization.label_smoothing", "[0, 1)"),
    ({"regularization": {"crop_padding": 4, "random_resized_crop": True}}, "regularization.crop_padding", "either"),
    ({"task": "denoise", "regularization": {"mixup_alpha": 0.2}}, "regularization.mixup_alpha", "classification"),
    ({"task": "segment"}, "task", "not one of"),
    ({"runtime": {"device": "cpu", "amp": "fp16"}}, "runtime.amp", "CUDA"),
    ({"runtime": {"device": "tpu"}}, "runtime.device", "cpu"),
    ({"eval": {"tta": "tencrop", "crop_size": 40}, "data": {"image_size": 32}}, "eval.crop_size", "does not fit"),
    ({"eval": {"tta": "fivecrop"}}, "eval.tta", "tencrop"),
    ({"task_options": {"sigma": 25}}, "task_options.sigma", "takes no keys"),
]


@pytest.mark.parametrize("raw, key, text", BAD_CONFIGS, ids=[b[1] + "-" + b[2][:12] for b in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_key(raw, key, text):
    with pytest.raises(ConfigError) as info:
        validate(config_from_dict(raw))
    message = str(info.value)
    assert key in message and text in message, message
    assert "\n" not in message


@pytest.mark.parametrize("assignment, text", [
    ("optim.lr_rate=0.1", "did you mean 'optim.lr'"),
    ("optim=0.1", "expected a mapping"),
    ("optim.lr.value=1", "single value"),
    ("lr", "KEY=VALUE"),
])
def test_bad_assignments(assignment, text):
    with pytest.raises(ConfigError) as info:
        key, value = parse_assignment(assignment)
        raw: dict = {}
        set_key(raw, key, value)
        config_from_dict(raw)
    assert text in str(info.value)


def test_recipe_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  momentun: 0.9\n")
    expected = r"bad\.yaml: unknown key 'optim\.momentun' \(did you mean 'optim\.momentum'\?\)"
    with pytest.raises(ConfigError, match=expected):
        build_config(parse("--config", str(bad)))
    with pytest.raises(ConfigError, match="did you mean resnet20_cifar10"):
        build_config(parse("--config", "resnet20_cifar"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config(parse("--config", str(tmp_path / "list.yaml")))


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(parse("--config", str(evil)))


def test_cli_bad_config_exits_2_with_one_line():
    out = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--set", "optim.moment=0.9"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip() == ("cnnzoo train: error: unknown key 'optim.moment' "
                                  "(did you mean 'optim.momentum'?)")
