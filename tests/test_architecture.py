"""The package's shape: no import cycles, small files, exceptions in one place.

Imports are read with the standard library's ``ast``, including those inside functions: an
import hidden in a function to dodge a cycle is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import brainsynth

PACKAGE_ROOT = Path(brainsynth.__file__).parent
MAX_LINES = 500
# Files allowed over MAX_LINES, each one coherent thing (DEVELOPERS.md says why).
LONG_FILES = {
    "config.py": "every section of the configuration, with one comment per key",
    "data/fetch.py": "the ADHD-200 downloader: listing, resumable transfer, checksums, retries",
    "evaluate/report/schema.py": "every key of report.json and privacy.json, with one description per key",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """brainsynth modules that ``path`` (module ``name``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions_and_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from brainsynth.evaluate import fidelity\n    from . import pipeline\n")
    known = {"brainsynth.evaluate", "brainsynth.evaluate.fidelity", "brainsynth.pipeline", "brainsynth.x"}
    assert imported_modules(path, "brainsynth.x", known) == {"brainsynth.evaluate.fidelity", "brainsynth.pipeline"}


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30  # every module was read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_library_does_not_depend_on_its_command_line():
    graph = import_graph()
    users = sorted(m for m, deps in graph.items() if "brainsynth.cli" in deps and m != "brainsynth.__main__")
    assert users == []


def test_source_files_stay_small_unless_listed():
    long = {str(p.relative_to(PACKAGE_ROOT)): len(p.read_text().splitlines()) for p in PACKAGE_ROOT.rglob("*.py")}
    long = {k: n for k, n in long.items() if n > MAX_LINES}
    assert set(long) <= set(LONG_FILES), {k: n for k, n in long.items() if k not in LONG_FILES}


def test_every_exception_type_users_see_lives_in_errors_py():
    defined = {}
    for name, path in all_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")).endswith("Error") for base in node.bases):
                defined[node.name] = name
    outside = {cls: mod for cls, mod in defined.items() if mod != "brainsynth.errors"}
    assert outside == {}
