"""One pass over a file's syntax tree: what the rules need to know, gathered once.

Owns the traversal and the facts it collects: scopes (module, class, ``def``, ``async def``,
``lambda``), the blocks around each node inside its scope (loops, ``with``, ``try``, ``if``),
assignments, appends, awaits, and the call sites a rule may care about. It decides nothing: the
rules (``admission.audit.checks``) read these facts after the walk, when every function of the
file is known. What follows a ``return``, ``raise``, ``break`` or ``continue`` in its own block
never runs, and is not walked: no rule reports it, and nothing it would bind counts.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from admission.audit.names import Imports, dotted

__all__ = [
    "ASYNC",
    "CLASS",
    "ELSE",
    "HANDLER",
    "IF",
    "LAMBDA",
    "LOOP",
    "MAIN",
    "MODULE",
    "SYNC",
    "TRY",
    "WITH",
    "Block",
    "FileFacts",
    "Scope",
    "Site",
    "own_nodes",
    "walk",
]

# scope kinds
MODULE: Final = "module"
CLASS: Final = "class"
SYNC: Final = "def"
ASYNC: Final = "async def"
LAMBDA: Final = "lambda"

# block kinds: where a node sits inside its scope
LOOP: Final = "loop"  # for / async for / while body, or a comprehension
WITH: Final = "with"  # with / async with body (node: the With statement)
TRY: Final = "try"  # try body (node: the Try statement)
HANDLER: Final = "except"  # except handler body (node: the ExceptHandler; extra: the Try)
IF: Final = "if"  # if body (node: the If statement)
ELSE: Final = "else"  # if's else branch
MAIN: Final = "main"  # the body of `if __name__ == "__main__":`

Block = tuple[str, ast.AST]


class Scope:
    """A module, class body, function or lambda, and what happens directly inside it."""

    __slots__ = (
        "acquires",
        "appends",
        "assigns",
        "awaited_names",
        "calls",
        "cls",
        "daemons",
        "decorators",
        "def_blocks",
        "for_targets",
        "globals",
        "joined",
        "kind",
        "name",
        "node",
        "nonlocals",
        "params",
        "parent",
        "returned",
        "vararg",
        "withs",
    )

    def __init__(
        self,
        kind: str,
        node: ast.AST,
        parent: Scope | None,
        name: str = "",
        cls: ast.ClassDef | None = None,
        decorators: Iterable[ast.expr] = (),
        def_blocks: tuple[Block, ...] = (),
    ) -> None:
        self.kind = kind
        self.node = node
        self.parent = parent
        self.name = name
        # the class a method is defined in (None for other scopes)
        self.cls = cls
        self.decorators: tuple[ast.expr, ...] = tuple(decorators)
        # the blocks around the definition in the enclosing scope (a def under `if sys...`)
        self.def_blocks = def_blocks
        # local name -> the values bound to it (assignment, `with ... as`, annotated assign)
        self.assigns: dict[str, list[ast.expr]] = {}
        # receiver text ("tasks", "self.tasks") -> (appended value, the blocks around it)
        self.appends: dict[str, list[tuple[ast.expr, tuple[Block, ...]]]] = {}
        # loop variable -> the iterables it is bound from
        self.for_targets: dict[str, list[ast.expr]] = {}
        # names that appear under an `await` (a task awaited in the same scope)
        self.awaited_names: set[str] = set()
        # the functions called directly: "name" for name(), ".attr" for obj.attr()
        self.calls: set[str] = set()
        # parameter name -> its annotation (None when not annotated)
        self.params: dict[str, ast.expr | None] = {}
        # the name of `*args`, if any
        self.vararg: str | None = None
        # the with / async with statements directly in this scope
        self.withs: list[ast.With | ast.AsyncWith] = []
        # whether the body calls some `.acquire()` (a semaphore, a pool, a lock)
        self.acquires = False
        # receivers of `.join()` / `.shutdown()` calls ("t", "self._thread", "pool"), also of
        # such a method handed to a call to run later (`stack.callback(t.join)`), and of a
        # `with` entered on them (`with executor as pool:`)
        self.joined: set[str] = set()
        # names returned (`return t`): the caller owns them
        self.returned: set[str] = set()
        # names declared `global`: module state, set once for the process
        self.globals: set[str] = set()
        # names declared `nonlocal`: the enclosing function's variables
        self.nonlocals: set[str] = set()
        # receivers made daemons by assignment (`t.daemon = True`)
        self.daemons: set[str] = set()

    @property
    def is_function(self) -> bool:
        """A ``def``, ``async def`` or ``lambda``."""
        return self.kind in (SYNC, ASYNC, LAMBDA)

    def function(self) -> Scope | None:
        """The nearest enclosing function scope (itself if it is one)."""
        scope: Scope | None = self
        while scope is not None and not scope.is_function:
            scope = scope.parent
        return scope


class Site:
    """A node some rule may report, with where it stands."""

    __slots__ = ("blocks", "node", "scope")

    def __init__(self, node: ast.AST, scope: Scope, blocks: tuple[Block, ...]) -> None:
        self.node = node
        self.scope = scope
        # innermost last; only the blocks inside `scope`
        self.blocks = blocks

    def loops(self) -> list[ast.AST]:
        """The loops around the node within its scope, innermost first."""
        return [node for kind, node in reversed(self.blocks) if kind == LOOP]


class FileFacts:
    """Everything the walk learned about one file."""

    def __init__(self, tree: ast.Module, imports: Imports) -> None:
        self.tree = tree
        self.imports = imports
        self.module = Scope(MODULE, tree, None)
        # every function and lambda scope, in source order
        self.functions: list[Scope] = []
        # function name -> its definitions anywhere in the file (nested ones too)
        self.by_name: dict[str, list[Scope]] = {}
        # class name -> method name -> definition
        self.methods: dict[str, dict[str, Scope]] = {}
        # method name -> its definitions in any class
        self.methods_by_name: dict[str, list[Scope]] = {}
        # (class name, attribute) -> values assigned to self.attribute in its methods
        self.self_assigns: dict[tuple[str, str], list[ast.expr]] = {}
        # class name -> base class expressions
        self.bases: dict[str, list[ast.expr]] = {}
        # call sites whose callee's last name is in the walk's `interesting` set
        self.calls: list[Site] = []
        # `while` loops whose test is always true (`while True`, `while 1`)
        self.forever_loops: list[Site] = []
        # ids of Call nodes that are awaited directly (`await f()`)
        self.awaited_calls: set[int] = set()
        # id of a call -> the call it is a direct argument of (`gather(create_task(c))`)
        self.argument_of: dict[int, ast.Call] = {}
        # id of a call -> the target its value is bound to ("t", "self._thread")
        self.bound_to: dict[int, str] = {}
        # ids of calls that are the context expression of a with item
        self.with_items: set[int] = set()
        # attribute calls inside `async def` on a name or self attribute (`r.get(...)`)
        self.async_method_calls: list[Site] = []


# Fields of each node type that can hold other nodes, without the expression contexts and
# operators (`ctx`, `op`, `ops`), which hold no calls. Filled lazily per type.
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_NO_CHILDREN = frozenset({"ctx", "op", "ops", "type_comment", "kind", "type_ignores"})
_LEAVES: tuple[type, ...] = (ast.Name, ast.Constant, ast.Pass, ast.Break, ast.Continue)


def _child_fields(cls: type) -> tuple[str, ...]:
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        fields = tuple(f for f in getattr(cls, "_fields", ()) if f not in _NO_CHILDREN)
        _CHILD_FIELDS[cls] = fields
    return fields


def _is_always_true(test: ast.expr) -> bool:
    return isinstance(test, ast.Constant) and bool(test.value) and test.value is not Ellipsis


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = (test.left, test.comparators[0])
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return bool(names) and bool(consts)


# methods that wait for a thread or pool to end (`finish`: a Thread subclass's own join)
_JOINS = frozenset({"join", "shutdown", "finish", "stop", "terminate", "kill", "result", "wait"})
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_CALL_OR_COMPREHENSION = (ast.Call, *_COMPREHENSIONS)
# Statements after which the rest of their block is unreachable.
_ENDS_BLOCK = frozenset({ast.Return, ast.Raise, ast.Break, ast.Continue})
_TRY_TYPES: tuple[type, ...] = (
    (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)  # TryStar: 3.11+
)


class _Walker:
    """The traversal. ``interesting`` decides which calls are kept as sites, by last name."""

    def __init__(self, facts: FileFacts, interesting: Callable[[str, Scope], bool]) -> None:
        self.facts = facts
        self.interesting = interesting
        self.scope = facts.module
        self.blocks: list[Block] = []
        self.class_stack: list[ast.ClassDef] = []

    # -- generic traversal -------------------------------------------------------------

    def visit(self, node: ast.AST) -> None:
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            handler(self, node)
        elif not isinstance(node, _LEAVES):
            self.children(node)

    def children(self, node: ast.AST) -> None:
        visit = self.visit
        for name in _child_fields(type(node)):
            value = getattr(node, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST):
                        visit(item)
            elif isinstance(value, ast.AST):
                visit(value)

    def body(self, statements: list[ast.stmt]) -> None:
        visit = self.visit
        for statement in statements:
            visit(statement)
            if type(statement) in _ENDS_BLOCK:
                # what follows in the same block never runs: no rule reads it
                break

    def _push_scope(self, scope: Scope) -> tuple[Scope, list[Block]]:
        saved = (self.scope, self.blocks)
        self.scope = scope
        self.blocks = []
        return saved

    def _pop_scope(self, saved: tuple[Scope, list[Block]]) -> None:
        self.scope, self.blocks = saved

    # -- scopes --------------------------------------------------------------------------

    def _arguments(self, args: ast.arguments) -> None:
        for default in args.defaults:
            self.visit(default)
        for kw_default in args.kw_defaults:
            if kw_default is not None:
                self.visit(kw_default)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._arguments(node.args)
        cls = self.class_stack[-1] if self.scope.kind == CLASS and self.class_stack else None
        kind = ASYNC if isinstance(node, ast.AsyncFunctionDef) else SYNC
        scope = Scope(
            kind, node, self.scope, node.name, cls, node.decorator_list, tuple(self.blocks)
        )
        all_args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        for extra in (node.args.vararg, node.args.kwarg):
            if extra is not None:
                all_args.append(extra)
        for arg in all_args:
            scope.params[arg.arg] = arg.annotation
        if node.args.vararg is not None:
            scope.vararg = node.args.vararg.arg
        facts = self.facts
        facts.functions.append(scope)
        facts.by_name.setdefault(node.name, []).append(scope)
        if cls is not None:
            facts.methods.setdefault(cls.name, {})[node.name] = scope
            facts.methods_by_name.setdefault(node.name, []).append(scope)
        saved = self._push_scope(scope)
        self.body(node.body)
        self._pop_scope(saved)

    def _lambda(self, node: ast.Lambda) -> None:
        self._arguments(node.args)
        scope = Scope(LAMBDA, node, self.scope, "<lambda>", def_blocks=tuple(self.blocks))
        self.facts.functions.append(scope)
        saved = self._push_scope(scope)
        self.visit(node.body)
        self._pop_scope(saved)

    def _class(self, node: ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        for base in node.bases:
            self.visit(base)
        self.facts.bases[node.name] = list(node.bases)
        scope = Scope(CLASS, node, self.scope, node.name, def_blocks=tuple(self.blocks))
        saved = self._push_scope(scope)
        self.class_stack.append(node)
        self.body(node.body)
        self.class_stack.pop()
        self._pop_scope(saved)

    # -- blocks --------------------------------------------------------------------------

    def _bind_target(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.scope.assigns.setdefault(target.id, []).append(value)
        elif (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id in ("self", "cls")
        ):
            method = self.scope.function()
            cls = method.cls if method is not None else None
            if cls is not None:
                key = (cls.name, target.attr)
                self.facts.self_assigns.setdefault(key, []).append(value)
        elif isinstance(target, ast.Subscript):
            # `registry[key] = value`: the value joins the container, as with append()
            text = dotted(target.value)
            if text is not None:
                self.scope.appends.setdefault(text, []).append((value, tuple(self.blocks)))

    def _for(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        for name in _target_names(node.target):
            self.scope.for_targets.setdefault(name, []).append(node.iter)
        self.blocks.append((LOOP, node))
        self.body(node.body)
        self.blocks.pop()
        self.body(node.orelse)

    def _while(self, node: ast.While) -> None:
        if _is_always_true(node.test):
            self.facts.forever_loops.append(Site(node, self.scope, tuple(self.blocks)))
        self.blocks.append((LOOP, node))
        self.visit(node.test)
        self.body(node.body)
        self.blocks.pop()
        self.body(node.orelse)

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        generators = node.generators
        # the first iterable is evaluated once, outside the comprehension's loop
        self.visit(generators[0].iter)
        self.blocks.append((LOOP, node))
        for index, generator in enumerate(generators):
            if index:
                self.visit(generator.iter)
            for name in _target_names(generator.target):
                self.scope.for_targets.setdefault(name, []).append(generator.iter)
            for condition in generator.ifs:
                self.visit(condition)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.blocks.pop()

    def _with(self, node: ast.With | ast.AsyncWith) -> None:
        self.scope.withs.append(node)
        for item in node.items:
            if isinstance(item.context_expr, ast.Call):
                self.facts.with_items.add(id(item.context_expr))
            else:
                # `with executor as pool:` on an object built earlier (in an if/else): its
                # exit shuts it down as surely as `executor.shutdown()`
                entered = dotted(item.context_expr)
                if entered is not None:
                    self.scope.joined.add(entered)
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._bind_target(item.optional_vars, item.context_expr)
        self.blocks.append((WITH, node))
        self.body(node.body)
        self.blocks.pop()

    def _try(self, node: ast.Try) -> None:
        self.blocks.append((TRY, node))
        self.body(node.body)
        self.blocks.pop()
        for handler in node.handlers:
            if handler.type is not None:
                self.visit(handler.type)
            self.blocks.append((HANDLER, handler))
            self.body(handler.body)
            self.blocks.pop()
        self.body(node.orelse)
        self.body(node.finalbody)

    def _if(self, node: ast.If) -> None:
        self.visit(node.test)
        main = self.scope.kind == MODULE and _is_main_test(node.test)
        self.blocks.append((MAIN if main else IF, node))
        self.body(node.body)
        self.blocks.pop()
        if node.orelse:
            self.blocks.append((ELSE, node))
            self.body(node.orelse)
            self.blocks.pop()

    # -- statements and expressions ------------------------------------------------------

    def _global(self, node: ast.Global) -> None:
        self.scope.globals.update(node.names)

    def _nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.nonlocals.update(node.names)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if self.scope.kind != MODULE:
            self.facts.imports.add(node)

    def _assign(self, node: ast.Assign) -> None:
        value = node.value
        self.visit(value)
        for target in node.targets:
            self._bind_target(target, value)
            if isinstance(value, ast.Call):
                text = dotted(target)
                if text is not None:
                    self.facts.bound_to[id(value)] = text
            elif (
                isinstance(target, ast.Attribute)
                and target.attr == "daemon"
                and isinstance(value, ast.Constant)
                and value.value is True
            ):
                text = dotted(target.value)
                if text is not None:
                    self.scope.daemons.add(text)
            if not isinstance(target, ast.Name):
                self.visit(target)

    def _augassign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name) and isinstance(node.op, ast.Add):
            # `items += [...]`: another source of the list's elements
            self.scope.assigns.setdefault(node.target.id, []).append(node.value)
        self.visit(node.target)

    def _joined_later(self, method: ast.Attribute) -> None:
        """A join handed to a call to run it later (`stack.callback(thread.join)`,
        `to_thread.run_sync(self._thread.join, 10)`, `atexit.register(pool.shutdown)`): the
        receiver is joined as surely as by a direct call."""
        text = dotted(method.value)
        if text is not None:
            self.scope.joined.add(text)

    def _return(self, node: ast.Return) -> None:
        if node.value is not None:
            # `return t`, also `return t, stop`: each item of a returned tuple or list is
            # handed to the caller as it would be alone
            items = (
                node.value.elts if isinstance(node.value, ast.Tuple | ast.List) else [node.value]
            )
            for item in items:
                text = dotted(item)
                if text is not None:
                    self.scope.returned.add(text)
            self.visit(node.value)

    def _annassign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind_target(node.target, node.value)
            if isinstance(node.value, ast.Call):
                text = dotted(node.target)
                if text is not None:
                    self.facts.bound_to[id(node.value)] = text
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def _await(self, node: ast.Await) -> None:
        value = node.value
        if isinstance(value, ast.Call):
            self.facts.awaited_calls.add(id(value))
        for name in _names_in(value):
            self.scope.awaited_names.add(name)
        self.visit(value)

    def _call(self, node: ast.Call) -> None:
        func = node.func
        scope = self.scope
        name: str | None
        if isinstance(func, ast.Attribute):
            name = func.attr
            scope.calls.add("." + name)
            receiver = func.value
            if name == "acquire":
                scope.acquires = True
            elif name in ("append", "add", "extend", "appendleft"):
                text = dotted(receiver)
                if text is not None and node.args:
                    scope.appends.setdefault(text, []).append((node.args[0], tuple(self.blocks)))
            elif name in _JOINS:
                text = dotted(receiver)
                if (
                    text is None
                    and type(receiver) is ast.Subscript
                    and any(kind == LOOP for kind, _ in self.blocks)
                ):
                    # `for i in range(n): threads[i].join()`: each item, by its index
                    owner = dotted(receiver.value)
                    text = None if owner is None else f"{owner}[]"
                if text is not None:
                    scope.joined.add(text)
            if scope.kind == ASYNC and (
                isinstance(receiver, ast.Name)
                or (isinstance(receiver, ast.Attribute) and isinstance(receiver.value, ast.Name))
            ):
                self.facts.async_method_calls.append(Site(node, scope, tuple(self.blocks)))
        elif isinstance(func, ast.Name):
            name = func.id
            scope.calls.add(name)
        else:
            name = None
        if name is not None and (
            self.interesting(name, scope)
            # a class of this file (a subclass of Thread), or an imported name that may be
            # an alias (`from asyncio import create_task as spawn`)
            or name in self.facts.bases
            or (type(func) is ast.Name and self.facts.imports.is_imported(name))
        ):
            self.facts.calls.append(Site(node, scope, tuple(self.blocks)))
        argument_of = self.facts.argument_of
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                arg = arg.value
            if isinstance(arg, _CALL_OR_COMPREHENSION):
                argument_of[id(arg)] = node
            elif type(arg) is ast.Attribute and arg.attr in _JOINS:
                self._joined_later(arg)
        for keyword in node.keywords:
            if isinstance(keyword.value, _CALL_OR_COMPREHENSION):
                argument_of[id(keyword.value)] = node
            elif type(keyword.value) is ast.Attribute and keyword.value.attr in _JOINS:
                self._joined_later(keyword.value)
        self.children(node)


# Node type -> the walker's method for it (unbound: a dict of bound methods on the walker
# would be a reference cycle keeping every file's tree alive until the cycle collector ran).
_HANDLERS: dict[type, Callable[[_Walker, Any], None]] = {
    ast.FunctionDef: _Walker._function,
    ast.AsyncFunctionDef: _Walker._function,
    ast.Lambda: _Walker._lambda,
    ast.ClassDef: _Walker._class,
    ast.For: _Walker._for,
    ast.AsyncFor: _Walker._for,
    ast.While: _Walker._while,
    ast.With: _Walker._with,
    ast.AsyncWith: _Walker._with,
    ast.If: _Walker._if,
    ast.Call: _Walker._call,
    ast.Await: _Walker._await,
    ast.Assign: _Walker._assign,
    ast.Return: _Walker._return,
    ast.AugAssign: _Walker._augassign,
    ast.AnnAssign: _Walker._annassign,
    ast.Global: _Walker._global,
    ast.Nonlocal: _Walker._nonlocal,
    ast.Import: _Walker._import,
    ast.ImportFrom: _Walker._import,
    **{try_type: _Walker._try for try_type in _TRY_TYPES},
    **{comp: _Walker._comprehension for comp in _COMPREHENSIONS},
}


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        names: list[str] = []
        for element in target.elts:
            names.extend(_target_names(element))
        return names
    return []


def _names_in(node: ast.expr) -> list[str]:
    """Names at the top of an awaited expression: ``await t``, ``await gather(t1, *ts)``."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Call):
        names: list[str] = []
        for arg in node.args:
            inner = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(inner, ast.Name):
                names.append(inner.id)
            elif isinstance(inner, ast.List | ast.Tuple | ast.Set):
                names.extend(e.id for e in inner.elts if isinstance(e, ast.Name))
        return names
    text = dotted(node)
    return [text] if text else []


def walk(
    tree: ast.Module, imports: Imports, interesting: Callable[[str, Scope], bool]
) -> FileFacts:
    """Walk a parsed module once and return its facts."""
    facts = FileFacts(tree, imports)
    imports.collect(tree)
    walker = _Walker(facts, interesting)
    walker.body(tree.body)
    return facts


def own_nodes(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes of a statement list in source order, not descending into nested functions,
    lambdas and classes (their code runs elsewhere)."""
    stack: list[ast.AST] = list(reversed(statements))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))
