"""Positive evidence that a function runs repeatedly, read from its own file.

ADM302 in library and example code reports a thread only where the code shows that the
function building it runs again and again: the thread is built in a loop; the function is a
request or message handler (a route decorator, a ``handle``/``on_*`` callback, a
``do_GET`` of an HTTP handler, ``__next__``/``__anext__``/``__call__``, a method of a
``...Handler`` or ``...Connection`` class); or
the file calls it from a loop, hands it on as a callback, or calls it from such a function.
Without that evidence the thread may be one per process
(a command's run, a server's start), which the file alone cannot tell from one per call.
Tests keep the older reading: a test helper runs once per test, and tests are many. The
setting ``thread-evidence = "none"`` gives the older reading everywhere.
"""

from __future__ import annotations

import ast
import re
import weakref
from collections.abc import Callable

from admission.audit.checks.context import Context, words
from admission.audit.names import last_name
from admission.audit.walk import CLASS, LOOP, MODULE, Scope, Site

__all__ = ["NESTED", "children_in_loops", "names_function", "runs_repeatedly"]

# start-up and shutdown hooks spelled as callbacks: once per process, not per event
_START_UP = frozenset(
    {
        "on_starting",
        "on_startup",
        "on_start",
        "on_ready",
        "on_load",
        "on_shutdown",
        "on_exit",
        "on_stop",
    }
)
# the last word of a class name whose objects are made per connection or whose methods run
# per event
_PER_EVENT_CLASS_WORDS = frozenset({"handler", "connection"})
# handlers, callbacks, and the methods Python calls per item or per call of an object
_HANDLER_NAME = re.compile(
    r"^(handle(_.*)?|.*_handler|on_.+|do_[A-Z]+|__next__|__anext__|__call__)$"
)
# nodes whose body runs repeatedly, and nodes whose body runs when called, not where written
LOOPS = (
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.ListComp,
    ast.SetComp,
    ast.GeneratorExp,
    ast.DictComp,
)
NESTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_DEPTH = 3


def runs_repeatedly(
    ctx: Context, site: Site, function: Scope, routed: Callable[[Context, Scope], bool]
) -> bool:
    """Whether the file shows that ``site`` runs more than once per process or object;
    ``routed`` tells a request handler by its decorators (ADM301's reading, passed in so
    that this module does not import the checks that use it)."""
    if site.loops():
        return True
    scope: Scope | None = site.scope
    while scope is not None and scope is not function.parent:
        # a closure or comprehension defined in a loop of its enclosing function
        if any(kind == LOOP for kind, _ in scope.def_blocks):
            return True
        scope = scope.parent
    return _repeated(ctx, function, routed, 0)


def _repeated(
    ctx: Context, function: Scope, routed: Callable[[Context, Scope], bool], depth: int
) -> bool:
    if depth > _DEPTH:
        return False
    # asked again for the same function at the same depth by each thread and each caller
    # path: read once (without it, callers of callers make the question grow as a power)
    known = _uses(ctx).repeated
    key = (id(function.node), depth)
    if key not in known:
        known[key] = _read_repeated(ctx, function, routed, depth)
    return known[key]


def _read_repeated(
    ctx: Context, function: Scope, routed: Callable[[Context, Scope], bool], depth: int
) -> bool:
    if function.name not in _START_UP and (
        _HANDLER_NAME.match(function.name) or routed(ctx, function) or _per_event_object(function)
    ):
        return True
    if function.parent is not None and function.parent.kind not in (MODULE, CLASS):
        # a nested function: repeated when its enclosing one is, or when it is handed on
        if _handed_on(ctx, function) or _called_in_loop(ctx, function):
            return True
        enclosing = function.parent.function()
        return enclosing is not None and _repeated(ctx, enclosing, routed, depth + 1)
    if _handed_on(ctx, function) or _called_in_loop(ctx, function):
        return True
    return any(_repeated(ctx, caller, routed, depth + 1) for caller in _callers(ctx, function))


def _per_event_object(function: Scope) -> bool:
    """A method of a class that its name says is made per connection, or whose methods run
    per event (``class IRCConnection``, ``class LLMCachingHandler``, ``logging.Handler``'s
    subclasses): its objects come and its methods run with the load."""
    if function.cls is None:
        return False
    name = words(function.cls.name)
    return bool(name) and name[-1] in _PER_EVENT_CLASS_WORDS


def names_function(func: ast.expr, function: Scope) -> bool:
    """Whether an expression may name ``function``: ``x.name`` for a method, ``name``
    otherwise (the file does not say which class an attribute reaches: each counts)."""
    if function.cls is not None:
        return isinstance(func, ast.Attribute) and func.attr == function.name
    return isinstance(func, ast.Name) and func.id == function.name


def _callers(ctx: Context, function: Scope) -> list[Scope]:
    key = _call_key(_spelling(function))
    return [f for f in _uses(ctx).callers.get(key, ()) if f is not function]


def _call_key(spelling: _Spelling) -> str:
    """How the walk files a call in ``Scope.calls``: ``.name`` for any ``x.name()``, ``name``
    for ``name()``."""
    is_method, name = spelling
    return "." + name if is_method else name


# A name as a callee or a value can spell it: (`x.name`: True, `name`: False, name)
_Spelling = tuple[bool, str]


class _Uses:
    """Who calls what, the names the file calls in a loop and the names it hands on: read
    once per file."""

    def __init__(self, ctx: Context) -> None:
        # the functions that call each name (`name`, or `.name` for any `x.name()`)
        self.callers: dict[str, list[Scope]] = {}
        for function in ctx.facts.functions:
            for called in function.calls:
                self.callers.setdefault(called, []).append(function)
        self.looped: set[_Spelling] = set()
        self.handed: set[_Spelling] = set()
        # `_repeated`'s answers by (function node's id, depth)
        self.repeated: dict[tuple[int, int], bool] = {}
        scopes = {id(f.node): f for f in ctx.facts.functions}
        # (node, in a loop, the names local to the function it is in, that function's scope)
        stack: list[tuple[ast.AST, bool, frozenset[str], Scope]] = [
            (ctx.facts.tree, False, frozenset(), ctx.facts.module)
        ]
        while stack:
            node, in_loop, local, scope = stack.pop()
            if isinstance(node, ast.Call):
                values = [*node.args, *(k.value for k in node.keywords if k.arg != "target")]
                callees = [node.func]
                if (
                    last_name(node.func) in _CALLS_LATER_NAMES
                    and ctx.resolve(node.func) in _CALLS_LATER
                ):
                    # `threading.Timer(5, f)`, `atexit.register(f)`: f runs once per call of
                    # this one, as a call of it made here would
                    callees += values
                    values = []
                for callee in callees:
                    spelled = _spelled(callee, local)
                    if in_loop:
                        self.looped.update(spelled)
                    if callee is not node.func:
                        for spelling in spelled:
                            self.callers.setdefault(_call_key(spelling), []).append(scope)
                for value in values:
                    self.handed.update(_named(value, local))
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute | ast.Subscript) for t in node.targets
            ):
                # stored on an object or in a container: `client.on_message = self.receive`
                self.handed.update(_named(node.value, local))
            if isinstance(node, NESTED):
                if not isinstance(node, ast.ClassDef):
                    scope = scopes.get(id(node), scope)
                    local = _locals(scope)
                stack.extend((child, False, local, scope) for child in ast.iter_child_nodes(node))
            elif isinstance(node, LOOPS):
                stack.extend(
                    (child, inner, local, scope)
                    for child, inner in children_in_loops(node, in_loop)
                )
            else:
                stack.extend((child, in_loop, local, scope) for child in ast.iter_child_nodes(node))


# calls that run what they are handed once, later, as often as they are called themselves
_CALLS_LATER = frozenset({"atexit.register", "threading.Timer", "weakref.finalize"})
_CALLS_LATER_NAMES = frozenset(name.rsplit(".", 1)[1] for name in _CALLS_LATER)


def children_in_loops(node: ast.AST, in_loop: bool) -> list[tuple[ast.AST, bool]]:
    """A node's children, each with whether it runs once per round of a loop: a ``for``'s
    iterable and ``else`` run once, as does a comprehension's first iterable."""
    if isinstance(node, ast.For | ast.AsyncFor):
        once: list[ast.AST] = [node.iter, node.target, *node.orelse]
        rounds: list[ast.AST] = list(node.body)
    elif isinstance(node, ast.While):
        once, rounds = list(node.orelse), [node.test, *node.body]
    else:
        once, rounds = [], []
    if once or rounds:
        return [(c, in_loop) for c in once] + [(c, True) for c in rounds]
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        first = node.generators[0].iter
        return [(c, in_loop if c is first else True) for c in _comprehension_parts(node)]
    return [(c, in_loop) for c in ast.iter_child_nodes(node)]


def _comprehension_parts(
    node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp,
) -> list[ast.AST]:
    parts: list[ast.AST] = []
    for generator in node.generators:
        parts += [generator.iter, generator.target, *generator.ifs]
    parts += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
    return parts


def _locals(function: Scope) -> frozenset[str]:
    """The names a function binds itself (its parameters, assignments and loop variables): a
    name there is the function's own, not a module-level function of the same name."""
    return (
        frozenset(function.params) | frozenset(function.assigns) | frozenset(function.for_targets)
    )


_USES: weakref.WeakKeyDictionary[Context, _Uses] = weakref.WeakKeyDictionary()


def _uses(ctx: Context) -> _Uses:
    uses = _USES.get(ctx)
    if uses is None:
        uses = _USES[ctx] = _Uses(ctx)
    return uses


def _spelling(function: Scope) -> _Spelling:
    return (function.cls is not None, function.name)


def _spelled(node: ast.expr, local: frozenset[str] = frozenset()) -> list[_Spelling]:
    """How ``node`` may name a function: ``x.name`` a method, ``name`` a function (unless
    ``name`` is one of the enclosing function's own, ``local``)."""
    if isinstance(node, ast.Attribute):
        return [(True, node.attr)]
    if isinstance(node, ast.Name) and node.id not in local:
        return [(False, node.id)]
    return []


def _called_in_loop(ctx: Context, function: Scope) -> bool:
    """A call of ``function`` in a loop anywhere in the file (not counting loops of other
    functions around a nested definition)."""
    return _spelling(function) in _uses(ctx).looped


def _handed_on(ctx: Context, function: Scope) -> bool:
    """``function`` named, not called, as an argument of a call (``signal(SIG, self.on)``,
    ``app.add_handler(handle)``, also inside a display or ``partial``) or stored on an
    object or in a container (``client.on_message = self.receive``). The ``target`` of a
    thread or a process is left out: it says where a thread runs, not how often."""
    return _spelling(function) in _uses(ctx).handed


def _named(value: ast.expr, local: frozenset[str]) -> list[_Spelling]:
    """The functions ``value`` may name outside any call in it (a call's own arguments are
    read as that call's): names and attributes, not the receivers inside an attribute
    (``self.worker.__name__`` names ``__name__``, not ``worker``)."""
    names: list[_Spelling] = []
    stack: list[ast.AST] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.expr):
            names.extend(_spelled(node, local))
        if not isinstance(node, ast.Call | ast.Lambda | ast.Attribute):
            stack.extend(ast.iter_child_nodes(node))
    return names
