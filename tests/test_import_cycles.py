"""No import cycles inside the `ivr` package: data flows one way (frames -> ... -> actions).

Every `import`/`from ... import` of an `ivr` module counts, wherever it is written: at module level,
under `if TYPE_CHECKING:`, or inside a function (a local import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ivr

PACKAGE = Path(ivr.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the ivr modules it imports (a package's __init__ counts as the package)."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.rsplit(".", node.level - (path.name == "__init__.py"))[0]
                module = f"{base}.{node.module}" if node.module else base
                imported |= {f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ivr":
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                             for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.split(".")[0] == "ivr"}
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle() -> None:
    graph = {"ivr.a": {"ivr.b"}, "ivr.b": {"ivr.c"}, "ivr.c": {"ivr.a"}, "ivr.d": {"ivr.a"}}
    assert _cycles(graph) == [["ivr.a", "ivr.b", "ivr.c"]]


def test_the_graph_has_the_imports_we_know() -> None:
    graph = _graph()
    assert "ivr.services" in graph["ivr.call"]
    assert "ivr.nlu.lexicon" in graph["ivr.redact"]
    assert "ivr.testing.sandbox" in graph["ivr.commands.sandbox"]  # `from ivr.testing import sandbox`, local


def test_no_import_cycles_in_ivr() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles (break them: move the shared part into a module both import): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


def test_the_live_path_does_not_import_the_test_tooling() -> None:
    # ivr/testing/ (sandbox, simulated line, replay, fixtures, ...) serves tests and the tester commands only
    importers = {module for module, imported in _graph().items()
                 if any(m == "ivr.testing" or m.startswith("ivr.testing.") for m in imported)}
    assert {m for m in importers if not m.startswith(("ivr.testing", "ivr.commands."))} == set()
