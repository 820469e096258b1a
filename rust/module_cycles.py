"""Fails if the modules of a Rust crate depend on each other in a cycle.

A module depends on the modules its source names by path, outside comments and string
literals: `use` lines (grouped ones too) and paths written inline, such as a macro body's
`crate::args::count_arg`, from the crate root (`crate::`) or relative (`super::`,
`self::`). A path names the deepest module it reaches (`crate::asyncio::Waiter` is the module
`asyncio`). A module and its own submodules are one unit here: `asyncio` re-exporting
`asyncio::waiter`, or `asyncio::waiter` using `super::permits` (its sibling), is no cycle
between `asyncio` and `waiter`; but `asyncio::waiter` and `asyncio::permits` using each other
is. The crate root (`lib.rs`: the module list, the constants) is everyone's parent.

Usage: python rust/module_cycles.py rust/core/src rust/py/src   (exit status 1 on a cycle)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

Module = tuple[str, ...]

# Comments and literals go first, so a `crate::` in a doc comment or a message is no edge.
TOKENS = re.compile(
    r"""//[^\n]*|/\*.*?\*/|r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"|b?'(?:\\.|[^'\\])'""", re.S
)
PATH = re.compile(r"\b(crate|super|self)((?:\s*::\s*(?:\{[^}]*\}|\w+))+)")


def module_of(src: Path, file: Path) -> Module:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts.pop()
    return tuple(parts)


def expand(tail: str) -> list[list[str]]:
    """`::a::{b, c::d}` -> [[a, b], [a, c, d]] (one level of braces is enough here)."""
    tail = re.sub(r"\s+", "", tail).lstrip(":")
    head, brace, group = tail.partition("{")
    prefix = [p for p in head.split("::") if p]
    if not brace:
        return [prefix]
    return [prefix + item.split("::") for item in group.rstrip("}").split(",") if item]


def graph(src: Path) -> dict[Module, set[Module]]:
    """Each module's dependencies on the others (see the module docstring)."""
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f) for f in files}
    edges: dict[Module, set[Module]] = {m: set() for m in modules}
    for file in files:
        here = module_of(src, file)
        code = TOKENS.sub(lambda m: "" if m.group(0).startswith("/") else '""', file.read_text())
        for match in PATH.finditer(code):
            base = {"crate": (), "super": here[:-1], "self": here}[match.group(1)]
            for path in expand(match.group(2)):
                target = base
                for part in path:
                    if part == "super":
                        target = target[:-1]
                    elif (*target, part) in modules:
                        target = (*target, part)
                    else:
                        break
                # Within its own subtree, or to a module that contains it, is no dependency.
                if here[: len(target)] == target or target[: len(here)] == here:
                    continue
                edges[here].add(target)
    return edges


def cycles(edges: dict[Module, set[Module]]) -> list[list[Module]]:
    """The modules of each cycle: the strongly connected components of more than one."""
    index: dict[Module, int] = {}
    low: dict[Module, int] = {}
    stack: list[Module] = []
    found: list[list[Module]] = []

    def visit(v: Module) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def name(m: Module) -> str:
    return "::".join(m) or "crate"


def report(src: Path) -> list[str]:
    """One line per module in a cycle, with its dependencies inside the cycle."""
    edges = graph(src)
    lines = []
    for component in cycles(edges):
        lines.append(f"{src}: modules in a cycle: {', '.join(map(name, component))}")
        for m in component:
            inside = sorted(name(t) for t in edges[m] if t in component)
            lines.append(f"    {name(m)} -> {', '.join(inside)}")
    return lines


def main(dirs: list[str]) -> int:
    lines = [line for d in dirs for line in report(Path(d))]
    print("\n".join(lines) if lines else f"no module cycle in {', '.join(dirs)}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
