"""What a class owns, sized by the class and not by data: its ``ClassVar`` attributes and the
registries its own methods fill.

Read by the fan-out rules through a method of the class that hands one of them back
(``self.get_link_fields()``, ``cls.get_action_list(...)``): iterating what it returns is
iterating the class's schema or registrations. Never decides whether a call is reported.
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Iterator

from admission.audit.names import last_name
from admission.audit.walk import FileFacts, own_nodes

__all__ = ["is_empty_collection", "returns_class_state"]

# Calls that put one item into a collection; and ones that put in many at once.
_ADDS_ONE = frozenset({"append", "add", "appendleft", "insert", "setdefault"})
_ADDS_MANY = frozenset({"extend", "update", "__ior__", "extendleft"})
_SELF = ("self", "cls")
# Fields of a compound statement that hold the statements `_fills` reads with their loops.
_NESTED_BLOCKS = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})


def is_empty_collection(value: ast.expr) -> bool:
    """``[]``, ``{}``, ``set()``, ``list()``, ``dict()``, ``deque()``, ``defaultdict()``, also
    with the items' type written in (``list[Manager]()``: the same empty list)."""
    if isinstance(value, ast.List | ast.Set | ast.Dict):
        return not (value.elts if isinstance(value, ast.List | ast.Set) else value.keys)
    if not isinstance(value, ast.Call) or value.args:
        return False
    func = value.func.value if isinstance(value.func, ast.Subscript) else value.func
    return last_name(func) in ("list", "set", "dict", "deque", "defaultdict")


def returns_class_state(facts: FileFacts, call: ast.Call, owner: ast.ClassDef) -> bool:
    """``self.m(...)`` / ``cls.m(...)`` of a method ``m`` of ``owner`` whose every ``return``
    hands back nothing, an empty collection, or one of the class's own attributes (or an
    entry of it: ``cls._actions[kind][event]``) that is a ``ClassVar`` or a registry (see
    `_registry`)."""
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in _SELF
    ):
        return False
    method = facts.methods.get(owner.name, {}).get(func.attr)
    if method is None or method.cls is not owner:
        return False
    body = getattr(method.node, "body", [])
    returns = [node for node in own_nodes(body) if isinstance(node, ast.Return)]
    if not returns:
        return False
    for returned in returns:
        value = returned.value
        if value is None or is_empty_collection(value):
            continue
        if isinstance(value, ast.Constant) and value.value is None:
            continue
        attribute = _own_attribute(value)
        if attribute is None or not (
            _class_var(owner, attribute) or _registry(facts, owner, attribute)
        ):
            return False
    return True


def _own_attribute(value: ast.expr, *, through_attributes: bool = False) -> str | None:
    """``x`` of ``self.x`` / ``cls.x``, also under subscripts (``cls.x[key][kind]``) and,
    ``through_attributes``, under attributes of it (``self.x.pending``: what a fill reaches)."""
    while isinstance(value, ast.Subscript) or (
        through_attributes
        and isinstance(value, ast.Attribute)
        and not (isinstance(value.value, ast.Name) and value.value.id in _SELF)
    ):
        value = value.value
    if (
        isinstance(value, ast.Attribute)
        and isinstance(value.value, ast.Name)
        and value.value.id in _SELF
    ):
        return value.attr
    return None


def _class_var(owner: ast.ClassDef, attribute: str) -> bool:
    """Declared ``x: ClassVar[...]`` in the class body: the class's own, set as the class is
    defined or initialised (its declared fields, its cache), not per object."""
    for statement in owner.body:
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == attribute
        ):
            annotation = statement.annotation
            if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
                return annotation.value.startswith(("ClassVar", "typing.ClassVar"))
            while isinstance(annotation, ast.Subscript):
                annotation = annotation.value
            return last_name(annotation) == "ClassVar"
    return False


# each file's `_registry` answers by (class node's id, attribute): every fan-out over the
# same class attribute asks again, and each answer reads all the class's methods and the file
_REGISTRIES: weakref.WeakKeyDictionary[FileFacts, dict[tuple[int, str], bool]] = (
    weakref.WeakKeyDictionary()
)


def _registry(facts: FileFacts, owner: ast.ClassDef, attribute: str) -> bool:
    known = _REGISTRIES.setdefault(facts, {})
    key = (id(owner), attribute)
    if key not in known:
        known[key] = _read_registry(facts, owner, attribute)
    return known[key]


def _read_registry(facts: FileFacts, owner: ast.ClassDef, attribute: str) -> bool:
    """Created empty in the class body (``_actions: dict[...] = {}``), never bound again
    through ``self``/``cls``, and filled only by the class's own methods, one item per call
    (``cls._actions[kind][event].append(hook)``, also in a loop that files the same item
    under each key it iterates: ``for event in events: ...[event].append(hook)``): the
    class's registrations, as round 16 reads a module's. Filled by many items at once
    (``extend``, ``update``, ``|=``), per item of a loop, or from outside the class: not."""
    created = [
        statement.value
        for statement in owner.body
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == attribute for t in statement.targets)
        )
        or (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == attribute
        )
    ]
    if not created or not all(v is not None and is_empty_collection(v) for v in created):
        return False
    if facts.self_assigns.get((owner.name, attribute)):
        return False
    fills = 0
    for method in facts.methods.get(owner.name, {}).values():
        if method.cls is not owner:
            continue
        for one_item in _fills(getattr(method.node, "body", []), attribute, ()):
            if not one_item:
                return False
            fills += 1
    return fills > 0 and not _filled_from_outside(facts, owner, attribute)


def _fills(
    statements: list[ast.stmt], attribute: str, loops: tuple[frozenset[str], ...]
) -> Iterator[bool]:
    """For each statement of a method that puts something into ``self.x`` / ``cls.x``
    (``attribute``): whether it puts one item per call. ``loops``: the names each loop
    around it binds (none for a ``while``)."""
    for statement in statements:
        if isinstance(statement, ast.For | ast.AsyncFor):
            bound = frozenset(_names(statement.target))
            yield from _fills_in(statement.iter, attribute, loops)
            yield from _fills(statement.body, attribute, (*loops, bound))
            yield from _fills(statement.orelse, attribute, loops)
        elif isinstance(statement, ast.While):
            yield from _fills(statement.body, attribute, (*loops, frozenset()))
            yield from _fills(statement.orelse, attribute, loops)
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield from _fills(statement.body, attribute, loops)
        else:
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(statement, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    yield from _fills(inner, attribute, loops)
            for handler in getattr(statement, "handlers", []):
                yield from _fills(handler.body, attribute, loops)
            for case in getattr(statement, "cases", []):
                yield from _fills(case.body, attribute, loops)
            yield from _fills_in(statement, attribute, loops, shallow=True)


def _fills_in(
    node: ast.AST, attribute: str, loops: tuple[frozenset[str], ...], *, shallow: bool = False
) -> Iterator[bool]:
    """The fills in one statement's own expressions (not its nested statement lists when
    ``shallow``: `_fills` reads those with their loops)."""
    nodes: list[tuple[ast.AST, tuple[frozenset[str], ...]]] = [(node, loops)]
    while nodes:
        current, around = nodes.pop()
        if isinstance(current, ast.Call) and isinstance(current.func, ast.Attribute):
            method = current.func.attr
            if _own_attribute(current.func.value, through_attributes=True) == attribute:
                if method in _ADDS_MANY:
                    yield False
                elif method in _ADDS_ONE:
                    yield _one_per_call(current.func.value, current.args, around)
        elif isinstance(current, ast.Assign):
            for target in current.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and _own_attribute(target, through_attributes=True) == attribute
                ):
                    yield _one_per_call(target.value, [current.value], around)
        elif (
            isinstance(current, ast.AugAssign)
            and _own_attribute(current.target, through_attributes=True) == attribute
        ):
            yield False
        if isinstance(current, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            # a fill in a comprehension runs once per item it iterates: a loop without a key
            around = (*around, frozenset())
        for name, value in ast.iter_fields(current):
            if shallow and current is node and name in _NESTED_BLOCKS:
                continue
            if isinstance(value, ast.AST):
                nodes.append((value, around))
            elif isinstance(value, list):
                nodes.extend((item, around) for item in value if isinstance(item, ast.AST))


def _one_per_call(
    receiver: ast.expr, values: list[ast.expr], loops: tuple[frozenset[str], ...]
) -> bool:
    """One item per call: outside loops, or in loops whose every one keys the receiver by
    what it binds (``...[event].append(hook)``) while the item reads none of it."""
    read_by_receiver = set(_names(receiver))
    read_by_values = {name for value in values for name in _names(value)}
    return all(bound & read_by_receiver and not bound & read_by_values for bound in loops)


def _filled_from_outside(facts: FileFacts, owner: ast.ClassDef, attribute: str) -> bool:
    """Whether code outside the class's methods touches ``Owner.x`` other than by reading it
    (a call on it, an assignment into it)."""
    for node in ast.walk(facts.tree):
        target: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _ADDS_ONE | _ADDS_MANY:
                target = node.func.value
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next(
                (t for t in targets if isinstance(t, ast.Attribute | ast.Subscript)), None
            )
        while isinstance(target, ast.Subscript):
            target = target.value
        if (
            isinstance(target, ast.Attribute)
            and target.attr == attribute
            and isinstance(target.value, ast.Name)
            and target.value.id == owner.name
        ):
            return True
    return False


def _names(node: ast.AST) -> Iterator[str]:
    return (n.id for n in ast.walk(node) if isinstance(n, ast.Name))
