"""No input gives a traceback: malformed checkpoints, configs, caches, datasets and command lines
end in one line naming the culprit (exit 2 for bad input), never in an uncaught exception.

The checkpoints are mutations of a real one (a tiny digits run made once per session) that
`torch.load(weights_only=True)` still accepts; Hypothesis picks where to cut, what to put there
and which command reads the file. The CLI runs in-process (`cnnzoo.cli.main.main`) to keep it
fast, and a few subprocess runs show that nothing reaches stderr as a traceback. The long
searches are marked slow; the quick suite runs a small, derandomised sample.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.data import load_dataset
from cnnzoo.data.cache import cache_path
from cnnzoo.errors import DataError

QUICK = settings(max_examples=12, derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of `cnnzoo ARGV` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code if isinstance(stop.code, int) else 2
    return code, err.getvalue()


def assert_handled(code: int, stderr: str, culprit: str | None = None) -> None:
    """Success, or exit 2 with one error line (naming `culprit` when given); never a traceback or a bug report."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert code in (0, 2), (code, stderr)
    if code == 2 and "usage:" not in stderr:
        errors = [line for line in stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1, stderr
        if culprit is not None:
            assert culprit in errors[0], stderr


@pytest.fixture(scope="module")
def real_ckpt(digits_run) -> dict:
    return torch.load(digits_run / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------- mutating a checkpoint


def paths(obj: Any, prefix: tuple = (), depth: int = 4) -> list[tuple]:
    """Every place inside a checkpoint a mutation can reach (dict keys and list items, not tensor data)."""
    found = [prefix] if prefix else []
    if depth == 0:
        return found
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += paths(value, (*prefix, key), depth - 1)
    elif isinstance(obj, (list, tuple)) and len(obj) <= 16:
        for i, value in enumerate(obj):
            found += paths(value, (*prefix, i), depth - 1)
    return found


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, math.nan, math.inf]),
    st.text(max_size=12), st.sampled_from(["", "classify", "lenet5", "denoise", "vgg19_bn", "cuda:abc"]),
    st.lists(st.integers(-3, 40), max_size=5), st.lists(st.floats(allow_nan=True), max_size=4),
    st.just({}), st.just([]), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.sampled_from(["tensor", "tensor-int", "tensor-empty", "tensor-wide"]),
)
TENSORS = {"tensor": lambda: torch.zeros(3), "tensor-int": lambda: torch.arange(6).reshape(2, 3),
           "tensor-empty": lambda: torch.zeros(0), "tensor-wide": lambda: torch.ones(6, 1, 5, 7)}


def mutate(ckpt: dict, path: tuple, op: str, value: Any) -> dict:
    ckpt = copy.deepcopy(ckpt)
    parent = ckpt
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):  # e.g. the Python RNG state: rebuild the tuple with the change
        return mutate_tuple(ckpt, path, op, value)
    value = TENSORS[value]() if isinstance(value, str) and value in TENSORS else value
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "extra" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value
    return ckpt


def mutate_tuple(ckpt: dict, path: tuple, op: str, value: Any) -> dict:
    holder = ckpt
    for key in path[:-2]:
        holder = holder[key]
    items = list(holder[path[-2]])
    if op == "delete":
        del items[path[-1]]
    else:
        items[path[-1]] = value
    holder[path[-2]] = tuple(items)
    return ckpt


def write(ckpt: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "last.pt"
    torch.save(ckpt, path)
    return path


def reader_argv(command: str, path: Path, image: Path) -> list:
    if command == "predict":
        return ["predict", path, image]
    if command == "eval":
        return ["eval", path, "--out", path.parent / "eval"]
    if command == "summary":
        return ["summary", path]
    if command == "init-from":
        return ["train", "--init-from", path, "--max-steps", "1", "--epochs", "1", "--out", path.parent / "init",
                "--progress", "off", "--no-report"]
    return ["train", "--resume", path, "--progress", "off", "--no-report"]


def check_mutation(real_ckpt: dict, tmp: Path, image: Path, path: tuple, op: str, value: Any, command: str) -> None:
    try:
        mutated = mutate(real_ckpt, path, op, value)
    except (KeyError, IndexError, TypeError):
        return  # the place vanished under an earlier cut
    file = write(mutated, tmp)
    code, stderr = run_cli(reader_argv(command, file, image))
    assert_handled(code, stderr)


def mutations(real: dict, commands: list[str]):
    return st.tuples(st.sampled_from(paths(real)), st.sampled_from(["delete", "replace", "extra"]), VALUES,
                     st.sampled_from(commands))


MALFORMED = {  # what the issue lists, each with the words the one-line refusal must contain
    "missing model": (lambda c: c.pop("model"), "without model|model is missing"),
    "missing meta": (lambda c: c.pop("meta"), "no meta"),  # summary reads such a file as bare weights
    "extra weight": (lambda c: c["model"].__setitem__("fc9.weight", torch.zeros(2)), "unexpected fc9.weight"),
    "wrong type": (lambda c: c["meta"].__setitem__("in_chans", "1"), "meta.in_chans should be a whole number"),
    "empty std": (lambda c: c["meta"].__setitem__("std", []), "meta.std should be a list of 1 values"),
    "zero std": (lambda c: c["meta"].__setitem__("std", [0.0]), r"meta\.std\[0\] should be a finite number above 0"),
    "short class list": (lambda c: [c["meta"].update(classes=list("abcde"), num_classes=5),
                                    c.update(classes=list("abcde"), num_classes=5)],
                         "but lenet5 with 5 classes"),
    "tensor for a number": (lambda c: c["preprocessing"]["mean"].__setitem__(0, torch.zeros(3)),  # found by fuzzing
                            r"preprocessing\.mean\[0\] should be a finite number, is tensor"),
    "config key": (lambda c: c["config"]["optim"].__setitem__("lr", "fast"), "optim.lr: expected a number"),
    "unknown model": (lambda c: c.__setitem__("model_name", "lenet99"), "is not a registered model"),
    "non-finite weight": (lambda c: next(iter(c["model"].values())).fill_(math.nan), "NaN or infinite"),
}
RESUME_ONLY = {
    "optimizer groups": (lambda c: c["optimizer"]["param_groups"][0].__setitem__("params", [0, 1]),
                         "optimizer state"),
    "momentum shape": (lambda c: c["optimizer"]["state"][0].__setitem__("momentum_buffer", torch.zeros(3)),
                       "momentum_buffer has shape"),
    "torch rng": (lambda c: c["rng"].__setitem__("torch", torch.zeros(10, dtype=torch.uint8)), "rng.torch"),
    "python rng": (lambda c: c["rng"].__setitem__("python", (3, (1, 2), None)), "rng.python"),
    "numpy rng": (lambda c: c["rng"]["numpy"].__setitem__("pos", 10**6), "rng.numpy"),
    "train state": (lambda c: c["state"].__setitem__("surprise", 1), "state has unknown keys surprise"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_each_malformed_checkpoint_is_one_line_naming_file_and_key(tmp_path, real_ckpt, image, case):
    edit, words = MALFORMED[case]
    ckpt = copy.deepcopy(real_ckpt)
    edit(ckpt)
    path = write(ckpt, tmp_path)
    for command in ("predict",) if case == "missing meta" else ("predict", "summary"):
        code, stderr = run_cli(reader_argv(command, path, image))
        assert code == 2 and re.search(words, stderr) and str(path) in stderr, stderr
        assert_handled(code, stderr)


def test_a_checkpoint_naming_no_task_is_a_classifier(tmp_path, real_ckpt, image):
    """Found by the long fuzz run: older checkpoints have no "task" key, and every reader defaults it."""
    ckpt = copy.deepcopy(real_ckpt)
    del ckpt["task"]
    code, stderr = run_cli(reader_argv("predict", write(ckpt, tmp_path), image))
    assert code == 0, stderr


@pytest.mark.parametrize("case", list(RESUME_ONLY))
def test_each_unrestorable_checkpoint_is_refused_by_resume(tmp_path, real_ckpt, image, case):
    edit, words = RESUME_ONLY[case]
    ckpt = copy.deepcopy(real_ckpt)
    edit(ckpt)
    code, stderr = run_cli(reader_argv("resume", write(ckpt, tmp_path / "run"), image))
    assert code == 2 and words in stderr and str(tmp_path / "run") in stderr, stderr
    assert_handled(code, stderr)


def test_a_malformed_last_checkpoint_falls_back_to_the_previous_one(tmp_path, digits_run, real_ckpt):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    broken = copy.deepcopy(real_ckpt)
    broken["meta"]["std"] = [0.0]
    torch.save(broken, run / "last.pt")
    code, stderr = run_cli(["train", "--resume", run, "--progress", "off", "--no-report"])
    assert code == 0, stderr
    warning = next(line for line in stderr.splitlines() if line.startswith("warning:"))
    assert "meta.std[0] should be a finite number above 0" in warning and "resuming from" in warning


@QUICK
@given(data=st.data())
def test_mutated_checkpoints_never_end_in_a_traceback(tmp_path_factory, real_ckpt, image, data):
    path, op, value, command = data.draw(mutations(real_ckpt, ["predict", "summary"]))
    check_mutation(real_ckpt, tmp_path_factory.mktemp("m"), image, path, op, value, command)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_mutated_checkpoints_never_end_in_a_traceback_long(tmp_path_factory, real_ckpt, image, data):
    path, op, value, command = data.draw(mutations(real_ckpt, ["predict", "summary", "eval", "resume", "init-from"]))
    check_mutation(real_ckpt, tmp_path_factory.mktemp("m"), image, path, op, value, command)


# ---------------------------------------------------------------------------- mutating a config


def config_paths() -> list[tuple]:
    from cnnzoo.engine.config import Config, config_to_dict

    return paths(config_to_dict(Config()), depth=3)


def check_config(tmp: Path, path: tuple, op: str, value: Any, really: bool) -> None:
    from cnnzoo.engine.config import Config, config_to_dict

    raw = config_to_dict(Config())
    raw["schedule"].update(epochs=1, max_steps=1)
    raw["runtime"].update(out=str(tmp / "run"), progress="off", report=False, tensorboard=False)
    try:
        raw = mutate(raw, path, op, value)
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(value, str) and value in TENSORS:
        return  # a YAML recipe cannot hold a tensor
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    steps = ["--max-steps", "1", "--epochs", "1"] if really else ["--print-config"]
    code, stderr = run_cli(["train", "--config", recipe, *steps])
    assert_handled(code, stderr)


@QUICK
@given(path=st.sampled_from(config_paths()), op=st.sampled_from(["delete", "replace", "extra"]), value=VALUES)
def test_mutated_configs_never_end_in_a_traceback(tmp_path_factory, path, op, value):
    check_config(tmp_path_factory.mktemp("c"), path, op, value, really=False)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(config_paths()), op=st.sampled_from(["delete", "replace", "extra"]), value=VALUES)
def test_mutated_configs_train_or_refuse(tmp_path_factory, path, op, value):
    check_config(tmp_path_factory.mktemp("c"), path, op, value, really=True)


# ---------------------------------------------------------------------------- command lines


def test_hostile_command_line_values_are_one_line_naming_them(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    too_long = tmp_path / ("n" * 300) / "run"
    fast = ["--max-steps", "1", "--epochs", "1", "--progress", "off", "--no-report"]
    cases = [
        (["train", "--seed", str(10**30), *fast], "seed: must be in [0, 2**32)"),
        (["train", "--device", "cuda:abc", *fast], "cuda:abc"),
        (["train", "--out", a_file, *fast], f"{a_file} is a file, not a folder"),
        (["train", "--out", too_long, *fast], "n" * 300),
        (["train", "--set", "model.kwargs={widths: [1, 2]}", *fast], "model.kwargs"),
        (["summary", "lenet5", "--model-arg", "not-an-assignment"], "not-an-assignment"),
        (["summary", "lenet5", "--model-arg", "width_mult=[1, 2"], None),
        (["summary", "lenet5", "--model-arg", "bogus=3"], "bogus"),
        (["eval", tmp_path / ("x" * 300)], "x" * 300),
        (["predict", a_file, a_file], str(a_file)),
    ]
    for argv, culprit in cases:
        code, stderr = run_cli(argv)
        assert code == 2, (argv, stderr)
        assert_handled(code, stderr, culprit)


SUBCOMMAND_ARGS = {
    "train": ["--model", "--data", "--image-size", "--batch-size", "--seed", "--device", "--out", "--lr",
              "--opt", "--sched", "--amp", "--tta", "--workers", "--on-bad-image", "--init-from", "--set",
              "--cutout", "--val-fraction", "--resume", "--config"],
    "summary": ["--input-size", "--depth", "--num-classes", "--model-arg"],
    "eval": ["--data", "--split", "--tta", "--batch-size", "--device", "--image-size", "--scales", "--out"],
    "predict": ["--topk", "--device", "--model", "--weights"],
    "info": [], "list": [],
}
ARG_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "3", str(2**64), "1e9", "nan", "", "x", "cuda:abc", "cuda:0", "cpu", "auto",
                     "lenet5", "resnet20_cifar", "vgg19_bn", "digits", "/dev/null", "/nonexistent/x", "n" * 300,
                     "a=b", "model.kwargs=[1", "1,2,3", "3,8,8", "0,0,0", "width_mult=0.5", "skip", "none",
                     "data.batch_size=0", "optim.lr=-1"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=8),
)


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(SUBCOMMAND_ARGS)))
    argv = [command]
    if command in ("summary", "info"):
        argv.append(draw(st.sampled_from(["lenet5", "resnet20_cifar", "nosuchnet", "", "/dev/null"])))
    if command in ("eval", "predict"):
        argv += draw(st.lists(ARG_VALUES, min_size=0, max_size=2))
    for flag in draw(st.lists(st.sampled_from(SUBCOMMAND_ARGS[command] or ["--help"]), max_size=3)):
        argv += [flag] if flag == "--help" else [flag, draw(ARG_VALUES)]
    return argv


def check_command_line(tmp: Path, argv: list[str]) -> None:
    if argv[0] == "train":  # never a long run, never into the working directory
        argv = [*argv, "--max-steps", "1", "--epochs", "1", "--progress", "off", "--no-report"]
        if "--out" not in argv:
            argv += ["--out", str(tmp / "run")]
    with contextlib.chdir(tmp) if hasattr(contextlib, "chdir") else _chdir(tmp):
        code, stderr = run_cli(argv)
    assert_handled(code, stderr)


@contextlib.contextmanager
def _chdir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@QUICK
@given(argv=command_lines())
def test_fuzzed_command_lines_never_end_in_a_traceback(tmp_path_factory, argv):
    check_command_line(tmp_path_factory.mktemp("cli"), argv)


@pytest.mark.slow
@LONG
@given(argv=command_lines())
def test_fuzzed_command_lines_never_end_in_a_traceback_long(tmp_path_factory, argv):
    check_command_line(tmp_path_factory.mktemp("cli"), argv)


def run_process(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CNNZOO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnzoo", *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd, check=False)


def test_no_traceback_reaches_stderr_of_a_real_process(tmp_path, real_ckpt, image):
    """The in-process runs above, confirmed through the real entry point."""
    broken = copy.deepcopy(real_ckpt)
    broken["meta"]["mean"] = "grey"
    done = run_process(["predict", write(broken, tmp_path / "run"), image], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    expected = (f"cnnzoo predict: error: {tmp_path / 'run' / 'last.pt'}: meta.mean should be a list of 1 values, "
                "is 'grey' (str)")
    assert done.stderr.strip().splitlines() == [expected]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["train", "--seed", "-5"], ["train", "--device", "cuda:abc"],
                                  ["train", "--resume", "n" * 300], ["summary", "lenet5", "--model-arg", "x=[1"],
                                  ["eval", "/dev/null"], ["train", "--data", "/dev/zero"]])
def test_no_traceback_reaches_stderr_of_real_processes(tmp_path, argv):
    done = run_process(argv, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len([line for line in done.stderr.splitlines() if ": error: " in line]) == 1, done.stderr


# ---------------------------------------------------------------------------- data: links and caches


def image_folder(root: Path) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_dangling_and_looping_links_are_named_or_skipped(tmp_path):
    root = image_folder(tmp_path / "data")
    (root / "a" / "gone.png").symlink_to(root / "a" / "nowhere.png")
    (root / "b" / "loop.png").symlink_to(root / "b" / "loop.png")
    (root / "b" / "notes").symlink_to("missing-notes")  # not an image: not read at all
    with pytest.raises(DataError, match=r"gone\.png: a symbolic link to .*nowhere\.png that leads nowhere"):
        load_dataset(str(root), cache_dir=tmp_path / "cache", num_workers=1)
    bundle = load_dataset(str(root), cache_dir=tmp_path / "cache", num_workers=1, on_bad_image="skip",
                          max_bad_images=2)
    assert sorted(name.rsplit("/", 1)[-1] for name, _ in bundle.bad_images) == ["gone.png", "loop.png"]


def test_a_loadable_but_malformed_cache_is_rebuilt(tmp_path, caplog):
    from cnnzoo.data.cache import source_fingerprint

    root = image_folder(tmp_path / "data")
    first = load_dataset(str(root), cache_dir=tmp_path / "cache", num_workers=1)
    file = cache_path(tmp_path / "cache", f"folder-{root.name}", source_fingerprint(root),
                      {"kind": "folder", "size": None})
    payload = torch.load(file, weights_only=True)
    payload["splits"]["all"]["labels"] += 7  # labels beyond the class list
    torch.save(payload, file)
    again = load_dataset(str(root), cache_dir=tmp_path / "cache", num_workers=1)
    assert not again.from_cache and "ignoring malformed dataset cache" in caplog.text
    assert torch.equal(again.train.labels, first.train.labels)
