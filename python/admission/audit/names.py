"""What a name in one file refers to, read from that file's imports.

Owns the mapping from local names to qualified names (``gather`` -> ``asyncio.gather`` after
``from asyncio import gather``; ``aio.sleep`` -> ``asyncio.sleep`` after ``import asyncio as aio``)
and the dotted text of an expression. It never imports the modules it names: the analysed code's
dependencies need not be installed.
"""

from __future__ import annotations

import ast

__all__ = ["Imports", "dotted", "last_name"]


def _chain(node: ast.expr) -> tuple[str, list[str]] | None:
    """The root name and the attributes after it (``a.b.c`` -> ``("a", ["b", "c"])``)."""
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    attributes.reverse()
    return node.id, attributes


def dotted(node: ast.expr) -> str | None:
    """The dotted text of a name or attribute chain (``self.pool.acquire``), else None."""
    chain = _chain(node)
    return None if chain is None else ".".join([chain[0], *chain[1]])


def last_name(node: ast.expr) -> str | None:
    """The rightmost identifier of a name, attribute or call (``a.b.c()`` -> ``c``)."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


class Imports:
    """The imports of one file, flow-insensitive: every ``import`` anywhere in the file counts.

    A name that is both imported and rebound locally is still read as the import; the rules
    only ask about names whose meaning rarely changes (``asyncio``, ``time.sleep``, ...).
    """

    __slots__ = ("_aliases", "_module")

    def __init__(self, module: str = "") -> None:
        # local name -> qualified name ("np" -> "numpy", "sleep" -> "time.sleep")
        self._aliases: dict[str, str] = {}
        # the analysed file's own dotted module name, for relative imports ("" if unknown)
        self._module = module

    def add(self, node: ast.Import | ast.ImportFrom) -> None:
        """Record one import statement."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is not None:
                    self._aliases[alias.asname] = alias.name
                else:
                    # ``import a.b.c`` binds ``a``, which refers to the package ``a``
                    top = alias.name.partition(".")[0]
                    self._aliases[top] = top
            return
        base = node.module or ""
        if node.level:
            base = self._relative(node.level, base)
        for alias in node.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name
            self._aliases[local] = f"{base}.{alias.name}" if base else alias.name

    def _relative(self, level: int, module: str) -> str:
        parts = self._module.split(".") if self._module else []
        # ``from . import x`` inside package ``p.q`` (module ``p.q.m``) is ``p.q.x``
        package = parts[: len(parts) - level] if level <= len(parts) else []
        prefix = ".".join(package)
        if module:
            return f"{prefix}.{module}" if prefix else f".{module}"
        return prefix

    def collect(self, tree: ast.Module) -> None:
        """Record the module-level imports (also those under ``if``/``try``/``with``).

        Imports inside functions are added by the walker as it meets them.
        """
        stack: list[ast.stmt] = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.add(node)
            elif isinstance(node, ast.If | ast.While | ast.For | ast.With):
                stack.extend(node.body)
                stack.extend(getattr(node, "orelse", ()))
            elif isinstance(node, ast.Try):
                stack.extend(node.body)
                stack.extend(node.orelse)
                stack.extend(node.finalbody)
                for handler in node.handlers:
                    stack.extend(handler.body)

    def resolve(self, node: ast.expr) -> str | None:
        """The qualified name of a name or attribute chain, if its root is an import.

        ``asyncio.gather`` -> ``asyncio.gather``; ``gather`` after ``from asyncio import
        gather`` -> ``asyncio.gather``; ``self.loop.create_task`` -> None.
        """
        chain = _chain(node)
        root = None if chain is None else self._aliases.get(chain[0])
        if chain is None or root is None:
            return None
        return ".".join([root, *chain[1]])

    def is_imported(self, name: str) -> bool:
        """Whether a local name is bound by an import."""
        return name in self._aliases

    def target(self, name: str) -> str | None:
        """The qualified name an imported local name stands for (``spawn`` ->
        ``asyncio.create_task`` after ``from asyncio import create_task as spawn``)."""
        return self._aliases.get(name)
