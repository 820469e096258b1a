"""No import cycle among the modules of ``python/admission`` (issue 13).

The graph is read from the source (``ast``), not by importing, so it sees every import
whatever runs: module-level imports (run when the module is first imported), imports inside
functions (run when called) and ``if TYPE_CHECKING:`` imports (never run; for mypy only) are
three lists. Module-level cycles must be zero: they make the import order matter and a
partially initialised module visible. The other two kinds are listed by `test_the_graph_is_read`
and must not close a cycle either, so that a function-level import is never a way to hide one.

An import of ``admission.x.y`` runs ``admission/x/__init__.py`` first; that implicit edge from
a module to its own package is not counted (a package that imports its submodules would
otherwise be a cycle by construction). What counts is what a module names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import admission

PACKAGE = Path(admission.__file__).parent
KINDS = ("module", "function", "type_checking")

Graph = dict[str, set[str]]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    # The extension: a module of the graph (a leaf: it imports admission.errors by name at
    # run time, lazily, which no cycle can come from).
    found["admission._native"] = PACKAGE / "_native.pyi"
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ``admission`` that ``name`` (a module or a name in one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            names.append(full if full in MODULES else base)
    return {owner for n in names if (owner := _owner(n)) is not None and owner != module}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> dict[str, set[str]]:
    """The modules of ``admission`` that ``module`` imports, by kind."""
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found[kind] |= _targets(node, module, is_package)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type_checking")
            for child in node.orelse:
                visit(child, kind)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            kind = "function" if kind == "module" else kind
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "module")
    return found


GRAPHS: dict[str, Graph] = {kind: {} for kind in KINDS}
for _name, _path in MODULES.items():
    for _kind, _found in _imports(_name, _path).items():
        GRAPHS[_kind][_name] = _found


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        # Tarjan's algorithm, iterative: (node, its successors still to visit).
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _union(*kinds: str) -> Graph:
    return {m: set().union(*(GRAPHS[k].get(m, set()) for k in kinds)) for m in MODULES}


def test_the_graph_is_read() -> None:
    # The reader sees each kind of import (else "no cycle" would prove nothing).
    assert "admission.errors" in GRAPHS["module"]["admission.durations"]
    assert "admission.metrics.otel" in GRAPHS["module"]["admission.metrics"]
    assert "admission.pools.manager" in GRAPHS["module"]["admission.pools"]
    assert GRAPHS["function"]["admission.cli"] >= {"admission.demo.llm"}
    assert "admission.rate" in GRAPHS["type_checking"]["admission._aws"]
    assert "admission._native" in GRAPHS["module"]["admission.concurrency"]
    # `from admission import x` names the submodule x, not the package.
    assert "admission" not in GRAPHS["module"]["admission.concurrency"]


def test_no_module_level_cycle() -> None:
    assert cycles(_union("module")) == []


def test_no_cycle_counting_function_level_and_type_only_imports() -> None:
    # A cycle closed only by an import inside a function is still two modules that need
    # each other; a TYPE_CHECKING one, two modules that cannot be understood apart.
    assert cycles(_union(*KINDS)) == []


def test_the_manager_and_the_configuration_do_not_import_the_pools() -> None:
    # Pools are a section of the configuration that `_sections` wires in; the manager and
    # the configuration reach them only through it (type hints aside).
    for module in ("admission.manager", "admission.config", "admission.watcher"):
        imported = _union("module", "function")[module]
        assert not {m for m in imported if m.startswith("admission.pools")}, module
    assert "admission.manager" not in _union(*KINDS)["admission.watcher"]


def test_the_reservation_protocol_is_declared_only_by_the_stub() -> None:
    # The rate limiters' private queue protocol is native (one Rust macro) and typed by
    # _native.pyi; Python code names it `_rate_wait.RateLimiter` and never re-declares it.
    declared = {
        path.name
        for pattern in ("*.py", "*.pyi")  # (not "*.py*": an installed wheel has its .pyc)
        for path in PACKAGE.rglob(pattern)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name in ("_enqueue", "_status", "_withdraw")
    }
    assert declared == {"_native.pyi"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, []),
    ],
)
def test_cycles_finds_every_cycle_and_only_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert cycles(graph) == expected
