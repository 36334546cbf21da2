"""The shape of ``core/``: one package per stage, imports only forward, no cycles.

Parses every module under ``core/`` (no import is executed) and collects
every ``import``/``from ... import`` of a ``core`` module, at the top of a
file or inside a function alike: an import hidden in a function to dodge a
cycle is still an arrow.

Layers, lowest first; a module may import its own layer and lower ones:

0. ``core.framework`` (runner, stage context, manifest, paths, errors)
1. ``core.domain`` (tables, hierarchy, column vocabulary)
2. ``core.generate_data`` .. 6. ``core.profile_export``: the stages in run order
7. the application: the modules at the top of ``core`` (config, pipeline, scoring), which assemble the
   stages, and the application packages (``core.service``, the segment service over a finished run)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.framework import paths

CORE = paths.REPO_ROOT / "core"
LAYERS = ("framework", "domain", "generate_data", "prepare_features", "train_autoencoder", "cluster",
          "profile_export")
APPLICATION = len(LAYERS)
# Packages of the application layer: they may import every stage, and no stage may import them.
APPLICATION_PACKAGES = ("service",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(paths.REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_imports(path: Path) -> set[str]:
    """Every ``core`` module ``path`` imports, wherever in the file the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "core")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
            found.add(node.module)
            # ``from core.framework import paths`` imports the module core.framework.paths
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return APPLICATION


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in core_imports(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} imports {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_every_module_of_core_sits_in_a_known_package():
    known = LAYERS + APPLICATION_PACKAGES
    stray = [m for m in import_graph() if m.count(".") >= 2 and m.split(".")[1] not in known]
    assert stray == [], f"modules in a package that is neither a stage nor framework/domain: {stray}"


def test_core_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_no_stage_imports_a_later_stage():
    assert backward_imports(import_graph()) == []


def test_numbered_scripts_are_thin():
    """Each script parses its arguments and calls one stage function: no logic of its own."""
    for name in paths.STAGE_NAMES:
        tree = ast.parse((paths.REPO_ROOT / f"{name}.py").read_text(encoding="utf-8"))
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert functions == ["main"], f"{name}.py defines {functions}"
        assert len((paths.REPO_ROOT / f"{name}.py").read_text(encoding="utf-8").splitlines()) < 40


# The checks themselves must catch what they claim to: fed a graph with the defect, they report it.
@pytest.mark.parametrize("graph, expected", [
    ({"core.a": {"core.b"}, "core.b": {"core.a"}}, ["core.a", "core.b", "core.a"]),
    ({"core.a": {"core.b"}, "core.b": set()}, None),
])
def test_find_cycle_reports_a_cycle_and_only_a_cycle(graph, expected):
    assert find_cycle(graph) == expected


def test_backward_imports_flags_an_earlier_stage_importing_a_later_one():
    graph = {"core.prepare_features.features": {"core.profile_export.profiling"},
             "core.profile_export.profiling": {"core.prepare_features.features"}, "core.pipeline": set()}
    assert backward_imports(graph) == ["core.prepare_features.features imports core.profile_export.profiling"]


def test_core_imports_sees_an_import_hidden_in_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from core.cluster import clustering\n    import core.pipeline\n")
    assert {"core.cluster.clustering", "core.pipeline"} <= core_imports(module)
