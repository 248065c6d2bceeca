"""pyproxy's modules import each other without cycles, counting imports under ``if TYPE_CHECKING:``.

At run time a cycle through TYPE_CHECKING imports does no harm, but it still couples the modules on it: each
needs the others to be understood, type-checked and changed. What a module needs of one that (indirectly)
imports it is a Protocol (see ``pyproxy/upstream/interfaces.py``, ``pyproxy/proxy/interfaces.py``,
``pyproxy/proxy/record.py``, ``RouterDownstream`` in ``pyproxy/proxy/router.py``).

The graph is read from the source (every ``import`` and ``from ... import``, wherever it is: module level,
functions, TYPE_CHECKING blocks), so the test needs nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pyproxy

ROOT = Path(pyproxy.__file__).parent


def module_files() -> dict[str, Path]:
    files = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """Module -> the pyproxy modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            for imported in targets:
                target = imported
                while target and target not in files:  # import a.b.c where only a.b is a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module."""
    reach: dict[str, set[str]] = {}
    for start, imports in graph.items():
        seen: set[str] = set()
        todo = list(imports)
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        reach[start] = seen
    components: list[set[str]] = []
    for m in sorted(graph):
        if m in reach[m] and not any(m in c for c in components):
            components.append({n for n in reach[m] if m in reach[n]})
    return components


def describe(graph: dict[str, set[str]], components: list[set[str]]) -> str:
    lines = []
    for component in components:
        lines.append(f"{len(component)} modules import each other:")
        lines += [f"  {m} -> {t}" for m in sorted(component) for t in sorted(graph[m] & component)]
    return "\n".join(lines)


def test_the_graph_sees_type_checking_imports() -> None:
    graph = import_graph()
    assert "pyproxy.upstream.interfaces" in graph["pyproxy.upstream.cluster"]  # under TYPE_CHECKING only
    assert "pyproxy.upstream.connection" in graph["pyproxy.upstream.pool"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle() -> None:
    graph = import_graph()
    components = cycles(graph)
    assert not components, describe(graph, components)
