"""The layout as a contract: import-linter's contracts (pyproject.toml) hold, and no module imports
itself back through others (no cycles), whether the import is at the top or inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO


def test_import_contracts_hold():
    lint = shutil.which("lint-imports")
    assert lint, "lint-imports is not installed (pip install -e \".[test]\")"
    done = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def import_graph():
    import grimp

    sys.path.insert(0, str(REPO))
    try:
        return grimp.build_graph("runner", "objectives", "hydra_plugins.runner_plugins", cache_dir=None)
    finally:
        sys.path.remove(str(REPO))


def strongly_connected(graph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph: every set of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in graph.modules:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == module:
                    break
            found.append(component)

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = import_graph()
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: two modules that import each other are one component."""

    class Graph:
        modules = {"a", "b", "c"}
        edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert sorted(sorted(c) for c in strongly_connected(Graph()) if len(c) > 1) == [["a", "b"]]
