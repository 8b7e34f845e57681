"""The package's layering, read from the source with `ast` (every import counts, function-level ones too):
no import cycle inside firespotter/, and the engine (runtime/) imports no plugin, model, kit, network or
ground-station code."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "firespotter"

# Packages the engine must not import: it is the room the others furnish, never the other way round.
NOT_FROM_RUNTIME = ("firespotter.plugins", "firespotter.models", "firespotter.pdk", "firespotter.net",
                    "firespotter.ground")

# Cycles that are known and owned elsewhere; each entry says why it is still here. The test fails when one
# of them has gone (remove it from the list) as well as when a new one appears.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The firespotter modules `name` imports anywhere in its body. `from a import b` counts as importing
    `a.b` when that is a module, else `a`; a name that is no module counts as its nearest enclosing module."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def nearest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            if t.split(".")[0] == "firespotter":
                m = nearest(t)
                if m is not None and m != name:
                    found.add(m)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported_modules(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def test_the_import_graph_is_read():
    graph = import_graph()
    assert "firespotter.runtime.pipeline" in graph
    assert "firespotter.runtime.types" in graph["firespotter.runtime.pipeline"]


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles inside firespotter/ (function-level imports count too): " + "; ".join(
        " <-> ".join(c) for c in new)
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these known cycles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_runtime_imports_no_outer_package():
    bad = {name: sorted(d for d in deps if d.startswith(NOT_FROM_RUNTIME))
           for name, deps in import_graph().items() if name.startswith("firespotter.runtime")}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"firespotter/runtime/ must not import {', '.join(NOT_FROM_RUNTIME)}: {bad}"
