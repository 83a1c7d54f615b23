"""The package stays drawable: no module imports one from a layer above it, and no import cycle.

Layers, lowest first (a module may import its own package and anything in a lower layer, at
module level or inside a function alike):
    errors, _version, _files, _limits, _text, _cpu, registry  <  layers  <  models  <  data, analysis, weights, export  <  engine
    <  tasks  <  viz  <  cli
The package's own `__init__` is the façade above them all: it imports the model families and
the tasks so that they register themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src" / "cnnzoo"
LAYERS = [
    {"errors", "_version", "_files", "_limits", "_text", "_cpu", "registry"},
    {"layers"},
    {"models"},
    {"data", "analysis", "weights", "export"},
    {"engine"},
    {"tasks"},
    {"viz"},
    {"cli", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The cnnzoo modules `name` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import name` imports the submodule pkg.name when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "cnnzoo" or t.startswith("cnnzoo."))
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "cnnzoo"


def test_every_part_of_the_package_has_a_layer():
    parts = {layer_of(m) for m in MODULES} - {"cnnzoo"}
    assert parts <= set(RANK), f"put {sorted(parts - set(RANK))} into a layer in {__file__}"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "cnnzoo"])
def test_no_module_imports_from_a_layer_above(module):
    own = layer_of(module)
    upward = sorted(t for t in GRAPH[module]
                    if layer_of(t) != own and (t == "cnnzoo" or RANK[layer_of(t)] > RANK[own]))
    assert not upward, f"{module} ({own}) imports {upward} from above its layer"


def test_there_is_no_import_cycle():
    # Tarjan's strongly connected components over the module graph: any component of more than
    # one module (or a module importing itself) is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in GRAPH.get(v, ()):
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_upward_and_cyclic_imports(tmp_path):
    # The rules would pass vacuously if the parser found no imports: check it on known ones.
    assert "cnnzoo.engine.task" in GRAPH["cnnzoo.engine.trainer"]
    assert "cnnzoo.registry" in GRAPH["cnnzoo.models.resnet"]
    assert {"cnnzoo.models", "cnnzoo.tasks"} <= GRAPH["cnnzoo"]
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..tasks import classification\n")
    assert "cnnzoo.tasks.classification" in imported_modules("cnnzoo.engine.probe", probe)
