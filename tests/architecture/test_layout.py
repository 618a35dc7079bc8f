"""The architecture as DESIGN states it, checked on the source: no import cycle among the project's modules
(function-level imports included, a package's ``__init__`` counted as a module), the core free of Lightning and
of ctypes, no private name imported across modules, and no core file over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("depthadapt", "lightning_modules", "datamodules")
MAX_CORE_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    files["cli"] = ROOT / "cli.py"
    return files


def _imports(path: Path, name: str, modules: set[str]) -> list[tuple[str, str | None]]:
    """(imported project module, imported name or None) for every import statement of a file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (base, alias.name))
    return [(module, imported) for module, imported in found if module in modules]


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: {module for module, _ in _imports(path, name, set(sources))} - {name}
            for name, path in sources.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules in order), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_dependencies_point_one_way() -> None:
    """cli -> lightning_modules, datamodules -> depthadapt; the core imports neither Lightning nor the layers above."""
    sources = _sources()
    wrong = []
    for name, path in sources.items():
        if not name.startswith("depthadapt"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{name} imports {root}" for root in roots
                      if root.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_modules", "datamodules",
                                                "cli", "ctypes")]
    assert not wrong, wrong


def test_no_private_name_imported_across_modules() -> None:
    sources = _sources()
    found = [f"{name} imports {module}.{imported}" for name, path in sources.items()
             for module, imported in _imports(path, name, set(sources))
             if imported and imported.startswith("_") and not imported.startswith("__")]
    assert not found, found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_core_file_over_the_limit(package: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_CORE_LINES}
    assert not long, f"files over {MAX_CORE_LINES} lines: {long}"
