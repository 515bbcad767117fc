"""The house's floors: inside every package of bbl, its rooms (modules and subpackages) import one way, so no room
imports one that imports it back, function-local imports included (an "up-arrow"). `../shared/tools/imports.py`
checks module-level circles; this checks them room by room, e.g. `bbl/cache`'s kinds (declarations) below the
reader and writer, `compute/` below the dump driver."""

from __future__ import annotations

import ast
from pathlib import Path

import bbl

ROOT = Path(bbl.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every absolute `bbl...` module a file imports (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("bbl")}


def _room_graph(package: Path) -> dict[str, set[str]]:
    """{room: rooms of the same package it imports}; a room is a direct child module or subpackage of `package`."""
    dotted = ".".join(package.relative_to(ROOT.parent).parts)
    rooms = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    rooms |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    graph: dict[str, set[str]] = {r: set() for r in rooms}
    for room in rooms:
        files = [package / f"{room}.py"] if (package / f"{room}.py").exists() else list((package / room).rglob("*.py"))
        for f in files:
            for m in _imports(f):
                if m.startswith(dotted + "."):
                    target = m[len(dotted) + 1:].split(".")[0]
                    if target in rooms and target != room:
                        graph[room].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_rooms_import_one_way_in_every_package():
    packages = [ROOT, *(p.parent for p in ROOT.rglob("__init__.py") if p.parent != ROOT)]
    cycles = {str(p.relative_to(ROOT.parent)): c for p in packages if (c := _cycle(_room_graph(p)))}
    assert not cycles, f"rooms importing each other (an up-arrow): {cycles}"


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
