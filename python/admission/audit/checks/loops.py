"""ADM501, ADM502: ``asyncio.get_event_loop()``.

ADM501: inside a coroutine, where ``asyncio.get_running_loop()`` is what is meant (with a fix
that rewrites ``asyncio.get_event_loop()`` to it). ADM502: at module level or in synchronous
code, where it raises RuntimeError since Python 3.14 when no loop runs. Neither fires in a
version-guarded shim: under a ``sys.version_info`` / ``hasattr`` test, in a ``try`` that
catches the RuntimeError, or in the fallback of a ``get_running_loop()`` that failed; nor
does ADM502 after ``asyncio.set_event_loop(...)`` on every way to the call in the same
function (at module level, after one at module level), or under a test that the loop
``get_running_loop()`` returned is there (a loop runs: it is returned). A generator decorated
as a coroutine (``@types.coroutine``, ``@asyncio.coroutine``, tornado's ``@gen.coroutine``) is
a coroutine: ADM501, and so is a generator under any decorator that yields asyncio's futures
(``x = yield asyncio.ensure_future(...)``: a framework's coroutine or test decorator drives it).
"""

from __future__ import annotations

import ast
import weakref

from admission.audit.checks.context import Context, conjuncts, holds, own_nodes, words
from admission.audit.findings import Edit, Fix
from admission.audit.names import dotted, last_name
from admission.audit.walk import ELSE, IF, MODULE, SYNC, TRY, FileFacts, Site

__all__ = ["check_get_event_loop"]

_GET_EVENT_LOOP = frozenset({"asyncio.get_event_loop", "asyncio.events.get_event_loop"})
_CAUGHT = frozenset(
    {"RuntimeError", "Exception", "BaseException", "DeprecationWarning", "AttributeError"}
)


def _version_test(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and node.attr in ("version_info", "hexversion"):
            return True
        if isinstance(node, ast.Call) and last_name(node.func) in ("hasattr", "getattr"):
            return True
        if isinstance(node, ast.Name | ast.Attribute):
            name = last_name(node) or ""
            if any(w.startswith(("py3", "py2", "python3", "version")) for w in words(name)):
                return True
            if name.upper() == name and name.startswith("PY"):
                return True
    return False


def _catches_runtime_error(handlers: list[ast.ExceptHandler]) -> bool:
    for handler in handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(last_name(t) in _CAUGHT for t in types):
            return True
    return False


def _returns_early_on_version(function: ast.AST) -> bool:
    """``if sys.version_info >= ...: return ...`` (or ``hasattr``) at the top of the
    function, whose branch leaves the function on every way through it (a ``try`` that
    returns the running loop and, in its handler, a new one): the code after it is the old
    versions' branch."""
    body = getattr(function, "body", [])
    for statement in body if isinstance(body, list) else []:
        if (
            isinstance(statement, ast.If)
            and _version_test(statement.test)
            and _always_returns(statement.body)
        ):
            return True
    return False


def _always_returns(statements: list[ast.stmt]) -> bool:
    """Whether every way through ``statements`` ends in a ``return`` or ``raise``."""
    if not statements:
        return False
    last = statements[-1]
    if isinstance(last, ast.Return | ast.Raise):
        return True
    if isinstance(last, ast.If):
        return _always_returns(last.body) and _always_returns(last.orelse)
    if isinstance(last, ast.With | ast.AsyncWith):
        return _always_returns(last.body)
    if isinstance(last, ast.Try) or type(last).__name__ == "TryStar":
        if _always_returns(getattr(last, "finalbody", [])):
            return True
        body, orelse = getattr(last, "body", []), getattr(last, "orelse", [])
        handlers: list[ast.ExceptHandler] = getattr(last, "handlers", [])
        attempt = _always_returns(body) or _always_returns(orelse)
        return attempt and all(_always_returns(handler.body) for handler in handlers)
    return False


def _shim(ctx: Context, site: Site) -> bool:
    function = site.scope.function()
    if function is not None and _returns_early_on_version(function.node):
        return True
    for kind, node in ctx.guarded_by(site):
        if kind in (IF, ELSE):
            assert isinstance(node, ast.If)
            if _version_test(node.test):
                return True
        elif kind == TRY:
            assert isinstance(node, ast.Try)
            if _catches_runtime_error(node.handlers):
                return True
        else:
            # an except handler: the fallback after get_running_loop() failed
            assert isinstance(node, ast.ExceptHandler)
            if _catches_runtime_error([node]):
                return True
    return False


# asyncio's calls that return a future or task (what a generator-based coroutine yields)
_FUTURES = frozenset(
    {
        "asyncio.ensure_future",
        "asyncio.create_task",
        "asyncio.wrap_future",
        "asyncio.gather",
        "asyncio.shield",
        "asyncio.wait_for",
        "asyncio.sleep",
        "asyncio.tasks.ensure_future",
        "asyncio.tasks.create_task",
        "asyncio.tasks.gather",
    }
)
_SET_EVENT_LOOP = frozenset({"asyncio.set_event_loop", "asyncio.events.set_event_loop"})


def _loop_set_before(ctx: Context, site: Site, call: ast.Call) -> bool:
    """``asyncio.set_event_loop(loop)`` on every way to the call, earlier in the same
    function, or earlier at module level for a call at module level (a script setting its
    loop, then handing it on): ``get_event_loop()`` then returns that loop, it cannot raise.
    A loop set under an ``if`` that the call is not in (``if sys.platform == "win32":
    set_event_loop(proactor)``), unless both branches set one, leaves the other way open."""
    function = site.scope.function()
    if function is not None:
        body = getattr(function.node, "body", [])
    else:
        body = ctx.facts.tree.body if site.scope.kind == MODULE else []
    return isinstance(body, list) and _set_on_the_way(ctx, body, call)


def _set_on_the_way(ctx: Context, statements: list[ast.stmt], call: ast.Call) -> bool:
    """Whether ``statements`` set the loop on every way to ``call`` (which is in them or
    after them)."""
    for statement in statements:
        if holds(statement, call):
            return any(
                _set_on_the_way(ctx, branch, call)
                for branch in _branches(statement)
                if any(holds(inner, call) for inner in branch)
            )
        if statement.lineno > call.lineno:
            return False
        if _sets_loop(ctx, statement):
            return True
    return False


def _sets_loop(ctx: Context, statement: ast.stmt, helpers: bool = True) -> bool:
    """Whether ``statement`` sets the loop whichever way it goes (an ``if`` on both branches;
    a ``with`` or ``try`` in its body; a loop's body may not run), also by calling a function
    of the same file that does so before it can return (``loop = initialize_event_loop()``:
    one call level)."""
    if isinstance(statement, ast.If):
        return bool(statement.orelse) and all(
            any(_sets_loop(ctx, inner, helpers) for inner in branch)
            for branch in (statement.body, statement.orelse)
        )
    if isinstance(statement, ast.With | ast.AsyncWith | ast.Try):
        return any(_sets_loop(ctx, inner, helpers) for inner in statement.body)
    if isinstance(
        statement,
        ast.For | ast.AsyncFor | ast.While | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
    ):
        return False
    for node in own_nodes([statement]):
        if not isinstance(node, ast.Call):
            continue
        if ctx.resolve(node.func) in _SET_EVENT_LOOP:
            return True
        if (
            helpers
            and isinstance(node.func, ast.Name)
            and _sets_loop_when_called(ctx, node.func.id)
        ):
            return True
    return False


# per file: whether the module-level function of a name sets the loop before it returns
_LOOP_SETTERS: weakref.WeakKeyDictionary[FileFacts, dict[str, bool]] = weakref.WeakKeyDictionary()


def _sets_loop_when_called(ctx: Context, name: str) -> bool:
    """Whether calling ``name`` runs the file's one module-level plain function of that
    name (not a coroutine or a generator: calling one runs nothing; not a name bound by
    anything else at module level) and it sets the loop on every way before it returns."""
    known = _LOOP_SETTERS.setdefault(ctx.facts, {})
    if name not in known:
        found = [
            node
            for node in ctx.facts.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == name
        ]
        function = found[0] if len(found) == 1 else None
        known[name] = (
            isinstance(function, ast.FunctionDef)
            and name not in ctx.facts.module.assigns
            and not ctx.facts.imports.is_imported(name)
            and not any(
                isinstance(node, ast.Yield | ast.YieldFrom) for node in own_nodes(function.body)
            )
            and _way_through(ctx, function.body) == _SET
        )
    return known[name]


# How the ways through a statement list end: every one set the loop; some returned before
# setting it; or they reach the end with it not set on every way.
_SET, _LEAKS, _OPEN = "set", "leaks", "open"


def _way_through(ctx: Context, statements: list[ast.stmt]) -> str:
    for statement in statements:
        if isinstance(statement, ast.If):
            ways = (_way_through(ctx, statement.body), _way_through(ctx, statement.orelse))
            if _LEAKS in ways:
                return _LEAKS
            if ways == (_SET, _SET):
                return _SET
        elif isinstance(statement, ast.With | ast.AsyncWith | ast.Try):
            if isinstance(statement, ast.Try) and any(
                isinstance(node, ast.Return)
                for node in own_nodes(
                    [*statement.orelse, *statement.finalbody]
                    + [s for h in statement.handlers for s in h.body]
                )
            ):
                return _LEAKS
            way = _way_through(ctx, statement.body)
            if way != _OPEN:
                return way
        elif _sets_loop(ctx, statement, helpers=False):
            return _SET
        elif any(isinstance(node, ast.Return) for node in own_nodes([statement])):
            return _LEAKS
    return _OPEN


def _branches(statement: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists inside a compound statement (none for a simple one)."""
    if isinstance(statement, ast.Try):
        return [
            statement.body,
            *(handler.body for handler in statement.handlers),
            statement.orelse,
            statement.finalbody,
        ]
    return [
        branch
        for branch in (getattr(statement, "body", None), getattr(statement, "orelse", None))
        if isinstance(branch, list)
    ]


def _generator_coroutine(ctx: Context, site: Site) -> bool:
    """Directly inside a generator decorated as a coroutine (``@types.coroutine``,
    ``@asyncio.coroutine``, ``@gen.coroutine``), or decorated by anything and yielding
    asyncio's futures (``x = yield asyncio.ensure_future(...)``: a framework's test or
    coroutine decorator drives it, a ``@contextmanager`` generator yields no future): the
    loop drives it as it drives ``async def`` (a plain function under such a decorator is
    called as it stands: sync code)."""
    scope = site.scope
    if scope.kind != SYNC or not scope.decorators:
        return False
    body = getattr(scope.node, "body", [])
    yields = [
        node
        for node in own_nodes(body if isinstance(body, list) else [])
        if isinstance(node, ast.Yield | ast.YieldFrom)
    ]
    if any(
        last_name(d.func if isinstance(d, ast.Call) else d) == "coroutine" for d in scope.decorators
    ):
        return bool(yields)
    return any(
        isinstance(node.value, ast.Call) and ctx.resolve(node.value.func) in _FUTURES
        for node in yields
    )


_GET_RUNNING_LOOP = frozenset({"asyncio.get_running_loop", "asyncio.events.get_running_loop"})


def _under_a_running_loop(ctx: Context, site: Site) -> bool:
    """In the body of an ``if`` that holds only when ``get_running_loop()`` returned a loop:
    its test reads, as present, a name the function binds only to that call's result or to
    None (``try: loop = get_running_loop()`` / ``except RuntimeError: loop = None``, then
    ``if loop and loop.is_running():`` or ``if loop is not None:``). A loop runs there, so
    ``get_event_loop()`` returns it and cannot raise. A test of absence (``if loop is
    None:``), or a name also bound to anything else, says nothing."""
    function = site.scope.function()
    if function is None:
        return False
    for kind, node in ctx.guarded_by(site):
        if kind != IF:
            continue
        assert isinstance(node, ast.If)
        for name in _present(node.test):
            values = function.assigns.get(name, [])
            running = [
                v
                for v in values
                if isinstance(v, ast.Call) and ctx.resolve(v.func) in _GET_RUNNING_LOOP
            ]
            if running and all(
                v in running or (isinstance(v, ast.Constant) and v.value is None) for v in values
            ):
                return True
    return False


def _present(test: ast.expr) -> list[str]:
    """The names a test requires to be present: ``x``, ``x is not None``, ``x.is_running()``,
    or any of them in an ``and``."""
    return [name for part in conjuncts(test) for name in _present_one(part)]


def _present_one(test: ast.expr) -> list[str]:
    if isinstance(test, ast.Name):
        return [test.id]
    if (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.IsNot)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    ):
        return [test.left.id]
    if (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Attribute)
        and test.func.attr == "is_running"
        and isinstance(test.func.value, ast.Name)
    ):
        return [test.func.value.id]
    return []


def check_get_event_loop(ctx: Context, site: Site) -> None:
    """ADM501 in a coroutine, ADM502 elsewhere."""
    call = site.node
    assert isinstance(call, ast.Call)
    if ctx.resolve(call.func) not in _GET_EVENT_LOOP or _shim(ctx, site):
        return
    if ctx.in_async(site) or _generator_coroutine(ctx, site):
        fix = None
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and not call.args
            and not call.keywords
            and func.end_lineno is not None
            and func.end_col_offset is not None
        ):
            line = func.end_lineno
            end = ctx.column(line, func.end_col_offset)
            start = end - len("get_event_loop")
            fix = Fix(
                "Replace with `get_running_loop()`",
                (Edit(line, start, line, end, "get_running_loop"),),
            )
        ctx.report(
            call,
            "ADM501",
            f"`{dotted(call.func)}()` in a coroutine: use `asyncio.get_running_loop()`, "
            "which always returns the loop running this coroutine",
            fix=fix,
        )
        return
    if _loop_set_before(ctx, site, call) or _under_a_running_loop(ctx, site):
        return
    ctx.report(
        call,
        "ADM502",
        f"`{dotted(call.func)}()` outside a coroutine raises RuntimeError when no loop is "
        "running (Python 3.14+): run coroutines with `asyncio.run(main())`, or create a loop "
        "with `asyncio.new_event_loop()`",
    )
