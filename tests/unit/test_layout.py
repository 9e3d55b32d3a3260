"""The shape of the package, read from its source (ast, nothing imported).

These are the properties the layout exists for: layers that import one way, one Docker
boundary, small classes, a reaper that loads nothing of the image-building side, and one
place that reads the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "envkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def imported(name: str) -> set[str]:
    """Every module ``name`` imports (anywhere in it: lazy imports count), absolute."""
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def envkit_imports(name: str) -> set[str]:
    return {m for m in imported(name) if m in MODULES and m not in (name, "envkit")}


def test_no_import_cycle_between_envkit_modules() -> None:
    graph = {name: envkit_imports(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == 1:
            return [*path[path.index(name) :], name]
        if state.get(name) == 2:
            return []
        state[name] = 1
        for dep in sorted(graph[name]):
            cycle = visit(dep, [*path, name])
            if cycle:
                return cycle
        state[name] = 2
        return []

    for name in sorted(graph):
        assert visit(name, []) == []


def test_docker_py_is_imported_only_at_the_docker_boundary() -> None:
    users = {
        name for name in MODULES if any(m == "docker" or m.startswith("docker.") for m in imported(name))
    }
    assert users, "the check reads no import of docker-py at all"
    assert len(users) <= 3, users
    assert {name.rpartition(".")[0] for name in users} == {"envkit.docker"}, users


def test_no_class_is_over_300_lines() -> None:
    sizes = {
        f"{name}.{node.name}": (node.end_lineno or node.lineno) - node.lineno + 1
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    assert max(sizes.values()) <= 300, max(sizes.items(), key=lambda item: item[1])


def test_the_reaper_loads_nothing_that_builds_images() -> None:
    closure: set[str] = set()
    todo = ["envkit.stack.reaper"]
    while todo:
        for dep in envkit_imports(todo.pop()):
            if dep not in closure:
                closure.add(dep)
                todo.append(dep)
    assert "envkit.stack.lease" in closure and "envkit.docker.engine" in closure  # the check sees imports
    builders = {m for m in closure if m.startswith("envkit.images") or "tarfile" in imported(m)}
    assert builders == set(), builders


def test_envkit_variables_are_named_in_at_most_two_modules() -> None:
    """settings.py reads them; errors.py names them in its fixes. Nobody else spells one out."""
    naming = set()
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("ENVKIT_")
            ):
                naming.add(name)
    assert naming <= {"envkit.settings", "envkit.errors"}, naming
    assert "envkit.settings" in naming


@pytest.mark.parametrize("layer", ["config", "docker", "images", "stack"])
def test_each_layer_is_a_folder_with_a_docstring(layer: str) -> None:
    init = PACKAGE / layer / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} does not say what the layer holds"


STREAM_KEYS = {"errorDetail", "aux"}  # what only the engine's stream messages hold


def stream_key_reads(tree: ast.AST) -> set[str]:
    """The keys of :data:`STREAM_KEYS` that a module reads from a mapping: ``m["aux"]``,
    ``m.get("aux")`` (``pop``, ``setdefault``) or ``"aux" in m``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Subscript):
            keys = [node.slice]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
        ):
            keys = node.args[:1]
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            keys = [node.left]
        found.update(k.value for k in keys if isinstance(k, ast.Constant) and k.value in STREAM_KEYS)
    return found


def test_only_the_docker_boundary_reads_the_engines_stream_messages() -> None:
    """Builds, pulls, pushes and loads are read in envkit/docker/: everyone else gets their
    results and typed errors, never a stream message's error or image ID."""
    readers = {name: stream_key_reads(tree) for name, tree in TREES.items()}
    assert readers["envkit.docker.engine"] == STREAM_KEYS  # the check sees the reads
    outside = {name: keys for name, keys in readers.items() if keys and not name.startswith("envkit.docker")}
    assert outside == {}, outside
