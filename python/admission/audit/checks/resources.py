"""ADM301, ADM302, ADM303: connections, clients, threads and executors made per operation.

ADM301: a client, session, connection or pool constructed inside a loop over data or a
request handler. ADM302: a ``threading.Thread`` started per call and never joined (an error
when it is a daemon). ADM303: a ``ThreadPoolExecutor`` built per call. None of them fires at
module level, in ``__init__``/``__aenter__``/``__enter__``, app start-up or lifespan hooks,
fixtures, ``main()`` or under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import TypeVar

from admission.audit.checks.blocking import HTTP_VERBS
from admission.audit.checks.context import Context, conjuncts, matches, own_nodes, words
from admission.audit.checks.repetition import (
    NESTED,
    children_in_loops,
    names_function,
    runs_repeatedly,
)
from admission.audit.names import dotted, last_name
from admission.audit.walk import IF, LAMBDA, LOOP, MODULE, TRY, Scope, Site

__all__ = ["check_client", "check_executor", "check_thread"]

CLIENTS = frozenset(
    {
        "asyncpg.connect",
        "asyncpg.create_pool",
        "asyncpg.pool.create_pool",
        "aiohttp.ClientSession",
        "aiohttp.client.ClientSession",
        "aiohttp.TCPConnector",
        "httpx.AsyncClient",
        "httpx.Client",
        "requests.Session",
        "requests.session",
        "requests.sessions.Session",
        "aiomysql.connect",
        "aiomysql.create_pool",
        "aiopg.connect",
        "aiopg.create_pool",
        "aiosqlite.connect",
        "psycopg.connect",
        "psycopg.AsyncConnection.connect",
        "psycopg.Connection.connect",
        "psycopg_pool.AsyncConnectionPool",
        "psycopg_pool.ConnectionPool",
        "psycopg2.connect",
        "psycopg2.pool.SimpleConnectionPool",
        "psycopg2.pool.ThreadedConnectionPool",
        "pymysql.connect",
        "redis.Redis",
        "redis.StrictRedis",
        "redis.from_url",
        "redis.Redis.from_url",
        "redis.ConnectionPool",
        "redis.asyncio.Redis",
        "redis.asyncio.from_url",
        "redis.asyncio.Redis.from_url",
        "redis.asyncio.ConnectionPool",
        "aioredis.from_url",
        "aioredis.Redis",
        "aioredis.create_redis_pool",
        "motor.motor_asyncio.AsyncIOMotorClient",
        "pymongo.MongoClient",
        "openai.OpenAI",
        "openai.AsyncOpenAI",
        "openai.AzureOpenAI",
        "openai.AsyncAzureOpenAI",
        "anthropic.Anthropic",
        "anthropic.AsyncAnthropic",
        "sqlalchemy.create_engine",
        "sqlalchemy.ext.asyncio.create_async_engine",
        "grpc.insecure_channel",
        "grpc.secure_channel",
        "grpc.aio.insecure_channel",
        "grpc.aio.secure_channel",
        "boto3.client",
        "boto3.resource",
        "aioboto3.Session",
    }
)
THREADS = frozenset({"threading.Thread"})
EXECUTORS = frozenset(
    {"concurrent.futures.ThreadPoolExecutor", "concurrent.futures.thread.ThreadPoolExecutor"}
)

# Functions that run once per process or per object: building a client there is the fix.
_SET_UP = frozenset(
    {
        "__init__",
        "__post_init__",
        "__aenter__",
        "__enter__",
        "__new__",
        "main",
        "setup",
        "set_up",
        "setUp",
        "asyncSetUp",
        "setUpClass",
        "setup_class",
        "setup_method",
        "startup",
        "on_startup",
        "start_up",
        "lifespan",
        "init",
        "initialize",
        "create_app",
        "make_app",
        "get_app",
        "build_app",
        "connect",
        "open",
        "start",
    }
)
_ROUTE_VERBS = HTTP_VERBS | {"route", "api_route", "websocket", "view"}
_HOOK_DECORATORS = (
    "fixture",
    "on_event",
    "on_startup",
    "before_serving",
    "before_first_request",
    "asynccontextmanager",
    "contextmanager",
    "lru_cache",
    "cache",
    "cached",
)


def _decorator_text(ctx: Context, decorator: ast.expr) -> tuple[str | None, str | None]:
    func = decorator.func if isinstance(decorator, ast.Call) else decorator
    return dotted(func), ctx.resolve(func)


def is_handler(ctx: Context, function: Scope) -> bool:
    """A request handler: a route decorator with a path (``@app.get("/items")``,
    ``@router.post(path="/x")``, ``@bp.route("/")``, ``@routes.get("/")``) or one of the
    ``handler-decorators`` settings."""
    for decorator in function.decorators:
        text, resolved = _decorator_text(ctx, decorator)
        if matches(ctx.settings.handler_decorators, text, resolved):
            return True
        if not isinstance(decorator, ast.Call) or not isinstance(decorator.func, ast.Attribute):
            continue
        if decorator.func.attr not in _ROUTE_VERBS:
            continue
        paths = [*decorator.args[:1], *(k.value for k in decorator.keywords if k.arg == "path")]
        if any(
            isinstance(p, ast.Constant) and isinstance(p.value, str) and p.value.startswith("/")
            for p in paths
        ):
            return True
    return False


def _set_up(ctx: Context, function: Scope) -> bool:
    """A function that runs once: constructors, start-up, lifespan, fixtures, main."""
    scope: Scope | None = function
    while scope is not None and scope.kind != MODULE:
        if scope.name in _SET_UP or "lifespan" in scope.name or scope.name.startswith("setup"):
            return True
        for decorator in scope.decorators:
            text, _ = _decorator_text(ctx, decorator)
            if text is not None and text.rsplit(".", 1)[-1] in _HOOK_DECORATORS:
                return True
        scope = scope.parent
    return False


# Methods that run once per object, as it is built: a dataclass's (or attrs') post-init hook
# is part of its constructor.
_CONSTRUCTORS = frozenset({"__init__", "__post_init__", "__attrs_post_init__"})
# Methods that begin an object's life as a connection, a session or a service: called once
# per life, matched by a close or stop (a thread they keep on the object is its one worker).
_LIFECYCLE_STARTS = frozenset(
    {"start", "connect", "open", "__enter__", "__aenter__", "setup", "initialize", "activate"}
)


def _kept_by_init_helper(ctx: Context, site: Site, function: Scope) -> bool:
    """Stored on the object (``self._watcher = Thread(...)``) by a private method that only
    the constructor (``__init__``, a dataclass's ``__post_init__``) calls
    (``_start_threads``): one per object, kept by it, as if ``__init__`` had built it."""
    target = ctx.facts.bound_to.get(id(site.node))
    if target is None or not target.startswith("self."):
        return False
    if function.cls is None or not function.name.startswith("_") or function.name[:2] == "__":
        return False
    called = "." + function.name
    callers = [f for f in ctx.facts.functions if called in f.calls]
    return bool(callers) and all(f.name in _CONSTRUCTORS and f.cls is function.cls for f in callers)


def _made_for_constructors(ctx: Context, site: Site, function: Scope) -> bool:
    """Returned by a module-level factory (``def _make_pool(): return ThreadPoolExecutor(...)``)
    that only constructors of the file call, each storing the result on the object
    (``self._executor = _make_pool()``) that a method of its class shuts down: one per object,
    kept and shut down by it, as if ``__init__`` had built it."""
    parent = function.parent
    if function.cls is not None or parent is None or parent.kind != MODULE:
        return False
    if not _returns(function, site.node):
        return False
    callers = [f for f in ctx.facts.functions if function.name in f.calls]
    return bool(callers) and all(
        f.name in _CONSTRUCTORS and _keeps_and_shuts_down(ctx, f, function.name) for f in callers
    )


def _made_for_set_up(ctx: Context, site: Site, function: Scope) -> bool:
    """Returned by a factory method (``def get_thread_pool(self): return
    ThreadPoolExecutor(...)``, there to be overridden) that only the class's set-up methods
    call (a constructor, start-up, or an initialiser of the object's life, ``init_process``),
    each storing the result on the object (``self.tpool = self.get_thread_pool()``) that a
    method of the class shuts down: the object's one pool, as if set-up had built it. The
    same factory called by a method run per request, or a pool kept and never shut down,
    still fires."""
    if function.cls is None or not _returns(function, site.node):
        return False
    called = "." + function.name
    callers = [f for f in ctx.facts.functions if called in f.calls and f.cls is function.cls]
    return bool(callers) and all(
        (_set_up(ctx, f) or f.name.startswith("init_"))
        and _keeps_and_shuts_down(ctx, f, f"self.{function.name}")
        for f in callers
    )


def _trait_default(ctx: Context, site: Site, function: Scope) -> bool:
    """Returned by a traitlets dynamic default (``@default("executor")``, or a method named
    ``_executor_default`` in a class that declares ``executor = Any()``): traitlets calls it
    once per object, the first time the trait is read, and keeps what it returns on the
    object, as ``__init__`` would. A method of another name, or one whose trait the class does
    not declare, still fires."""
    cls = function.cls
    if cls is None or not _returns(function, site.node):
        return False
    for decorator in function.decorators:
        if (
            isinstance(decorator, ast.Call)
            and ctx.resolve(decorator.func) in _TRAIT_DEFAULTS
            and decorator.args
            and isinstance(decorator.args[0], ast.Constant)
        ):
            return True
    if not function.name.startswith("_") or not function.name.endswith("_default"):
        return False
    trait = function.name.removeprefix("_").removesuffix("_default")
    return any(
        isinstance(statement, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == trait
            for t in (
                statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            )
        )
        for statement in cls.body
    )


_TRAIT_DEFAULTS = frozenset({"traitlets.default", "traitlets.traitlets.default"})


def _returns(function: Scope, value: ast.AST) -> bool:
    """Whether ``function`` hands ``value`` back as it is (``return ThreadPoolExecutor()``)."""
    body = getattr(function.node, "body", [])
    return any(
        isinstance(node, ast.Return) and node.value is value
        for node in own_nodes(body if isinstance(body, list) else [])
    )


def _keeps_and_shuts_down(ctx: Context, caller: Scope, factory: str) -> bool:
    """Each call of ``factory`` in ``caller`` is stored on the object (``self.pool =
    factory()``), which one of its class's methods shuts down."""
    if caller.cls is None:
        return False
    body = getattr(caller.node, "body", [])
    for node in own_nodes(body if isinstance(body, list) else []):
        if not isinstance(node, ast.Call) or dotted(node.func) != factory:
            continue
        target = ctx.facts.bound_to.get(id(node))
        if target is None or not target.startswith("self."):
            return False
        if not _joined(ctx, target, Site(node, caller, ())):
            return False
    return True


def _created_once(ctx: Context, site: Site) -> bool:
    """Under ``if x is None:`` / ``if not x:`` (a lazily created, shared object), or bound
    to a ``global`` (module state: `_EXECUTOR = ThreadPoolExecutor()` after a fork)."""
    target = ctx.facts.bound_to.get(id(site.node))
    if target is not None and target in site.scope.globals:
        return True
    for kind, node in site.blocks:
        if kind != IF:
            continue
        assert isinstance(node, ast.If)
        for test in ast.walk(node.test):
            if (
                isinstance(test, ast.Compare)
                and any(isinstance(op, ast.Is) for op in test.ops)
                and any(isinstance(c, ast.Constant) and c.value is None for c in test.comparators)
            ):
                return True
            if (
                isinstance(test, ast.UnaryOp)
                and isinstance(test.op, ast.Not)
                and isinstance(test.operand, ast.Name | ast.Attribute)
            ):
                return True
    return False


def _started_under_a_count(site: Site) -> bool:
    """Started in the body of an ``if``/``while`` whose test keeps a count of the object's
    (or the class's) below a limit, and that body adds to the count (``if self.spawned <
    self.max_threads: Thread(...).start(); self.spawned += 1``): a worker set grown lazily
    up to its limit, as a pool built once. A local count starts over on each call, and
    still fires."""
    for kind, node in site.blocks:
        if not (kind == IF and isinstance(node, ast.If)) and not (
            kind == LOOP and isinstance(node, ast.While)
        ):
            continue
        for part in conjuncts(node.test):
            if not (
                isinstance(part, ast.Compare)
                and len(part.ops) == 1
                and isinstance(part.ops[0], ast.Lt | ast.LtE)
            ):
                continue
            count = dotted(part.left)
            if count is None or not count.startswith(("self.", "cls.")):
                continue
            if any(
                isinstance(statement, ast.AugAssign)
                and isinstance(statement.op, ast.Add)
                and dotted(statement.target) == count
                for statement in own_nodes(node.body)
            ):
                return True
    return False


def _started_once(site: Site, function: Scope) -> bool:
    """Behind a guard that returns when the previous one is still there: in the body around
    the thread (the function's, a ``with``'s around it or one ending before it: a lock), an
    earlier ``if ...: return`` whose
    test reads a name or attribute that the body then binds (``if self._loop is not None and
    self._loop.is_running(): return`` ... ``self._loop = new_event_loop()``; ``if _started:
    return`` ... ``_started = True``): a start that runs only when nothing runs, one at a
    time. Only the state of the object (``self.x``), of the class in a classmethod
    (``cls.x``) or of the module (a ``global``) counts: a
    guard on anything else (``if request is None: return``, a local rebound after ``if not
    items: return``) says nothing."""
    line = getattr(site.node, "lineno", 0)
    bodies: list[list[ast.stmt]] = [getattr(function.node, "body", [])]
    bodies += [node.body for _, node in site.blocks if isinstance(node, ast.With | ast.AsyncWith)]
    # a `with` block of the function's body that ends before the thread (a debounce: `with
    # lock: if self._busy: return; self._busy = True`, then the thread)
    bodies += [
        node.body
        for node in bodies[0]
        if isinstance(node, ast.With | ast.AsyncWith) and (node.end_lineno or line) < line
    ]

    # a classmethod's `cls.x` is the class's state, shared by every object: a start-once
    # flag there is the process's
    owners = ("self.", "cls.") if next(iter(function.params), None) == "cls" else ("self.",)

    def state(text: str | None) -> bool:
        return text is not None and (text.startswith(owners) or text in function.globals)

    for body in bodies:
        for index, guard in enumerate(body):
            if guard.lineno >= line:
                break
            if not (
                isinstance(guard, ast.If)
                and not guard.orelse
                and isinstance(guard.body[-1], ast.Return)
            ):
                continue
            read = {dotted(node) for node in ast.walk(guard.test) if isinstance(node, ast.expr)}
            if {text for text in read if state(text)} & _bound_in(body[index + 1 :]):
                return True
    return False


def _kept_by_lifecycle_start(ctx: Context, site: Site, function: Scope, target: str) -> bool:
    """Kept on the object (``self._thread = Thread(...)``, or through a local stored
    there) by the method that starts its life (``connect``, ``start``, ``__enter__``, ...),
    or by a private method only such starts call (``start`` -> ``self._start()``): the
    object's one worker, ended by the matching ``close``/``stop``, whether that joins it or
    waits for an event the thread sets. A start handed what to run (``start(self, job)``)
    or a method called per request that does the same still fires."""
    if not _lifecycle_start(function):
        private = function.name.startswith("_") and not function.name.startswith("__")
        called = "." + function.name
        # the class's own calls (another class's `_start` is another method)
        callers = [f for f in ctx.facts.functions if called in f.calls and f.cls is function.cls]
        if not (
            private
            and not set(function.params) - {"self", "cls"}
            and callers
            and all(_lifecycle_start(f) for f in callers)
        ):
            return False
    return target.startswith("self.") or bool(_kept_on_self(site.scope, target))


# Module-level hooks a server calls once, as it starts (gunicorn's `on_starting` and
# `when_ready` in a config file, an app's `startup`): set-up, defined for the framework to call.
_START_UP_HOOKS = frozenset({"on_starting", "when_ready", "startup", "on_startup", "start_up"})


def _runs_once(ctx: Context, function: Scope, depth: int = 0) -> bool:
    """A function that runs once per process (or per life of its object) because every
    call of it in the file is made, outside any loop, by code that runs once: module-level
    statements (the ``__main__`` block too), ``main``, a lifecycle start (``start(self)``), or
    (up to three calls deep) a function that is itself called only so (``start`` ->
    ``self.start_app()`` -> ``self.launch_browser()``; ``main`` -> ``setup()``;
    ``run(check())`` at module level), handed nothing (no parameter but ``self``: the same
    set-up each time; a function handed what to do, ``interactive_client(uri)``, is a job
    that other code may ask for as often as it likes). A module-level start-up hook no code
    of the file calls (a config file's ``when_ready(server)``) is set-up too. A function also
    named without being called (handed as a callback: ``signal.signal(SIGINT,
    self._on_sigint)``) or called in a loop, per request or by anything else runs as often as
    those, and still fires."""
    if depth > 3 or function.kind == LAMBDA:
        return False
    module = ctx.facts.module

    def is_callee(func: ast.expr) -> bool:
        return names_function(func, function)

    if function.cls is not None:
        # any `x.name()` of the file may call it (a subclass's `self.name()`, another
        # object's `app.name()`): each is read as a call of it
        called = "." + function.name
        callers = [f for f in ctx.facts.functions if called in f.calls]
        if called in module.calls:
            callers.append(module)
    elif function.parent is module:
        callers = [f for f in ctx.facts.functions if function.name in f.calls]
        if function.name in module.calls:
            callers.append(module)
    else:
        return False
    if not callers:
        return function.cls is None and function.name in _START_UP_HOOKS
    if function.name not in ctx.calls_by_name():
        return False  # also named other than called: handed on, as a callback
    if set(function.params) - {"self", "cls"}:
        return False  # handed what to do (`interactive_client(uri)`): a job, as often as asked
    for caller in callers:
        body = getattr(caller.node, "body", [])
        calls, looped = _calls_in(body if isinstance(body, list) else [], is_callee)
        if looped or not calls:
            return False
        if caller is module or (caller.name == "main" and caller.parent is module):
            continue
        if _lifecycle_start(caller) or _runs_once(ctx, caller, depth + 1):
            continue
        return False
    return True


def _calls_in(statements: list[ast.stmt], is_callee: Callable[[ast.expr], bool]) -> tuple[int, int]:
    """How many calls in ``statements`` (not in nested functions) have a callee that
    ``is_callee`` accepts, and how many of those are in a loop (or a comprehension)."""
    calls = looped = 0
    stack: list[tuple[ast.AST, bool]] = [(statement, False) for statement in statements]
    while stack:
        node, in_loop = stack.pop()
        if isinstance(node, ast.Call) and is_callee(node.func):
            calls += 1
            looped += in_loop
        if isinstance(node, NESTED):
            continue
        stack.extend(children_in_loops(node, in_loop))
    return calls, looped


def _lifecycle_start(function: Scope) -> bool:
    """A method that starts its object's life, handed nothing to run (``start(self)``), or
    the ``run(self)`` of a thread's or a process's class (``class Scheduler(TailThread)``):
    the body of its one thread, which ``start()`` runs once per object."""
    if function.cls is None or set(function.params) - {"self", "cls"}:
        return False
    if function.name in _LIFECYCLE_STARTS:
        return True
    return function.name == "run" and any(
        word in ("thread", "process")
        for base in function.cls.bases
        for word in words(last_name(base) or "")
    )


# Calls that raise a signal other code waits for: an event's `set`, a future's result.
_SIGNALS = frozenset({"set", "set_result", "set_exception", "cancel"})


def _signals_set(statement: ast.stmt) -> set[str]:
    """The events or futures a statement sets (``done.set()``, ``fut.set_result(None)``, also
    handed to a call: ``loop.call_soon_threadsafe(self._join_fut.set_result, None)``)."""
    found = set()
    for node in own_nodes([statement]):
        if isinstance(node, ast.Attribute) and node.attr in _SIGNALS:
            text = dotted(node.value)
            if text is not None:
                found.add(text)
    return found


def _final_signals(statements: list[ast.stmt]) -> set[str]:
    """The signals a function body sets as its last act."""
    return _final_acts(statements, _signals_set)


_Act = TypeVar("_Act")


def _final_acts(statements: list[ast.stmt], read: Callable[[ast.stmt], set[_Act]]) -> set[_Act]:
    """What ``read`` finds in a function body's last act: its last statement (into the
    ``try``/``with``/``if`` it ends with), or the statement right before a
    ``break``/``return`` that ends it (``done.set(); break`` in its loop)."""
    found: set[_Act] = set()
    if not statements:
        return found
    last = statements[-1]
    if isinstance(last, ast.Try):
        # each way out of it: its body (or its `else`), a handler, its `finally`
        for way in (last.body, last.orelse, last.finalbody, *(h.body for h in last.handlers)):
            found |= _final_acts(way, read)
    elif isinstance(last, ast.With | ast.AsyncWith | ast.If):
        found |= _final_acts(last.body, read)
    elif not isinstance(last, ast.While | ast.For | ast.AsyncFor):
        found |= read(last)
    for node in own_nodes(statements):
        body = getattr(node, "body", None)
        for block in (body, getattr(node, "orelse", None)):
            if not isinstance(block, list):
                continue
            for index, statement in enumerate(block[1:], 1):
                if isinstance(statement, ast.Break | ast.Return):
                    found |= read(block[index - 1])
    return found


# A queue's producer end (`q.put(item)`, `q.put_nowait(item)`) and its consumer end.
_PUTS = frozenset({"put", "put_nowait"})


def _puts(statements: list[ast.stmt]) -> set[tuple[str, str]]:
    """The (queue, name) pairs that ``statements`` put a name into: ``q.put(DONE)``, or the
    put handed to a call with its item (``loop.call_soon_threadsafe(q.put_nowait, DONE)``)."""
    found = set()
    for node in own_nodes(statements):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _PUTS and node.args:
            pairs = [(func.value, node.args[0])]
        else:
            pairs = [
                (arg.value, item)
                for arg, item in zip(node.args, node.args[1:], strict=False)
                if isinstance(arg, ast.Attribute) and arg.attr in _PUTS
            ]
        for queue, item in pairs:
            text = dotted(queue)
            if text is not None and isinstance(item, ast.Name):
                found.add((text, item.id))
    return found


def _final_puts(run: Scope) -> set[tuple[str, str]]:
    """The sentinels a thread's target puts into a queue as its last act, also through a
    function defined in it that its last act runs (``asyncio.run(drain())``, whose
    ``finally`` puts it)."""
    body = getattr(run.node, "body", [])
    statements = body if isinstance(body, list) else []
    nested = {
        statement.name: statement.body
        for statement in statements
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef)
    }

    def read(statement: ast.stmt) -> set[tuple[str, str]]:
        found = _puts([statement])
        for node in own_nodes([statement]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                inner = nested.pop(node.func.id, None)  # popped: read once, no recursion
                if inner is not None:
                    found |= _final_acts(inner, read)
        return found

    return _final_acts(statements, read)


def _reads_until(scope: Scope, queue: str, sentinel: str, after: int) -> bool:
    """A loop of ``scope``, after line ``after``, that takes items from ``queue`` with no
    timeout (``item = q.get()``, ``await q.get()``) and leaves when one is ``sentinel``
    (``if item is DONE: break``, or ``if q.get() is DONE: break``)."""

    def taken(value: ast.expr) -> bool:
        value = value.value if isinstance(value, ast.Await) else value
        return _bare_call_on(value, ("get", "get_nowait"), queue)

    body = getattr(scope.node, "body", [])
    for loop in own_nodes(body if isinstance(body, list) else []):
        if not isinstance(loop, ast.While | ast.For | ast.AsyncFor) or loop.lineno <= after:
            continue
        nodes = list(own_nodes(loop.body))
        items = {
            node.targets[0].id
            for node in nodes
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and taken(node.value)
        }
        for node in nodes:
            if not (
                isinstance(node, ast.If)
                and isinstance(node.body[-1], ast.Break | ast.Return)
                and isinstance(node.test, ast.Compare)
                and isinstance(node.test.ops[0], ast.Is)
                and dotted(node.test.comparators[0]) == sentinel
            ):
                continue
            left = node.test.left
            if (isinstance(left, ast.Name) and left.id in items) or taken(left):
                return True
    return False


def _hands_its_end_through_a_queue(ctx: Context, run: Scope, site: Site, line: int) -> bool:
    """The thread's target puts a sentinel into a queue as its last act, and the function
    that started it reads that queue, with no timeout, until the sentinel comes: a join
    spelled as a queue handshake. A sentinel also put by other code of the function (a
    callback), or put as the thread starts, says nothing of its end."""
    others = [site.scope, *(f for f in ctx.facts.functions if f.parent is site.scope)]
    for queue, sentinel in _final_puts(run):
        if any(
            (queue, sentinel) in _puts(getattr(other.node, "body", []))
            for other in others
            if other is not run
        ):
            continue
        if _reads_until(site.scope, queue, sentinel, line):
            return True
    return False


# calls that hand back an awaitable of the future they are given
_FUTURE_WRAPPERS = frozenset({"wrap_future", "shield"})


def _waits_for(scope: Scope, signal: str) -> bool:
    """``signal`` is waited for in ``scope`` until it comes: awaited, ``.wait()``/
    ``.result()`` called on it with no timeout, or a loop that goes round until it is set
    (``while not done.is_set():``). A wait with a timeout (``done.wait(5)``) gives up and
    leaves the thread running: no join."""
    body = getattr(scope.node, "body", [])
    for node in own_nodes(body if isinstance(body, list) else []):
        if isinstance(node, ast.Await) and dotted(node.value) == signal:
            return True
        if (
            isinstance(node, ast.Await)
            and isinstance(node.value, ast.Call)
            and last_name(node.value.func) in _FUTURE_WRAPPERS
            and node.value.args
            and dotted(node.value.args[0]) == signal
            and not any(k.arg == "timeout" for k in node.value.keywords)
        ):
            return True  # `await asyncio.wrap_future(future)`: awaits the future itself
        if _bare_call_on(node, ("wait", "result"), signal):
            return True
        if _checked(node) and any(
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("wait", "result", "exception")
            and dotted(n.func.value) == signal
            for n in ast.walk(node)
        ):
            return True
        if isinstance(node, ast.While) and any(
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "is_set"
            and dotted(n.func.value) == signal
            for n in ast.walk(node.test)
        ):
            return True
    return False


def _checked(node: ast.AST) -> bool:
    """A statement whose wait the test checks: an ``assert`` (``assert done.wait(30)``,
    ``assert f.result(timeout=5) == 42``) or a ``with pytest.raises(...)`` block (unittest's
    ``assertRaises`` too). A timed
    wait that gives up fails the test there, so the test goes on only once the signal came.
    A check that the wait gives up (``assert not done.wait(0.1)``, ``pytest.raises(
    TimeoutError)``) says the thread still runs: no join."""
    if isinstance(node, ast.Assert):
        return not (isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not))
    return isinstance(node, ast.With) and any(
        isinstance(item.context_expr, ast.Call)
        and last_name(item.context_expr.func) in ("raises", "assertRaises")
        and not any("Timeout" in (last_name(a) or "") for a in item.context_expr.args)
        for item in node.items
    )


def _bare_call_on(node: ast.AST, methods: tuple[str, ...], receiver: str) -> bool:
    """A call of one of ``methods`` on ``receiver``, handed nothing (no timeout)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in methods
        and not node.args
        and not node.keywords
        and dotted(node.func.value) == receiver
    )


# Methods that signal and return at once (an event's `set`, a lock's or semaphore's
# `release`, a condition's `notify`): a thread that runs only one ends as it starts.
_WAKE_UPS = frozenset({"set", "release", "notify", "notify_all"})


def _only_signals(ctx: Context, call: ast.Call) -> bool:
    """The thread's whole work is one signal (``Thread(target=event.set).start()``, to wake
    waiters from another thread): it ends at once, before threads could pile up. Not a
    method of the object's own (``target=self.release``) or of a class of this file (its
    ``release`` may do anything), nor one handed arguments."""
    target = next((k.value for k in call.keywords if k.arg == "target"), None)
    if not isinstance(target, ast.Attribute) or target.attr not in _WAKE_UPS:
        return False
    if call.args or any(k.arg in (None, "args", "kwargs") for k in call.keywords):
        return False
    receiver = dotted(target.value)
    if receiver is None or receiver.split(".")[0] in ("self", "cls"):
        return False
    return not any(function.name == target.attr for function in ctx.facts.functions)


def _serves_until_shut_down(ctx: Context, call: ast.Call, site: Site) -> bool:
    """The thread runs a server's ``serve_forever`` (``target=server.serve_forever``) and
    the code that owns the server calls ``server.shutdown()``: socketserver's ``shutdown``
    tells the loop to stop and waits until it has, so the thread has returned from its only
    work when the call does: a join spelled as a stop. ``server_close()`` or a stop that
    does not wait (a flag, ``stop()``) is no join, and still fires."""
    target = next((k.value for k in call.keywords if k.arg == "target"), None)
    if not (isinstance(target, ast.Attribute) and target.attr == "serve_forever"):
        return False
    server = dotted(target.value)
    if server is None:
        return False
    for owner in _owners(ctx, server, site.scope):
        body = getattr(owner.node, "body", [])
        for node in own_nodes(body if isinstance(body, list) else []):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "shutdown"
                and dotted(node.func.value) == server
            ):
                return True
    return False


def _signals_its_end(ctx: Context, call: ast.Call, site: Site) -> bool:
    """The thread runs a function of the same scope (a closure, ``target=run``) that sets an
    event or resolves a future as its last act, and the thread's owner waits for that
    signal (``await self._join_fut``, ``while not done.is_set():``), or puts a sentinel
    into a queue the owner reads until it comes: a join spelled as a signal, the owner goes
    on only once the thread has (all but) ended. A signal set as the thread starts (a ready
    handshake) is no join, and still fires."""
    target = next((k.value for k in call.keywords if k.arg == "target"), None)
    if not isinstance(target, ast.Name):
        return False
    runs = [
        f
        for f in ctx.facts.functions
        if f.name == target.id and f.parent is site.scope and f.kind != MODULE
    ]
    if len(runs) != 1:
        return False
    body = getattr(runs[0].node, "body", [])
    if _waits_for_its_last_call(runs[0], site.scope, call):
        return True
    if _hands_its_end_through_a_queue(ctx, runs[0], site, call.lineno):
        return True
    for signal in _final_signals(body if isinstance(body, list) else []):
        owners = [o for o in _owners(ctx, signal, site.scope) if o is not runs[0]]
        # set by other code too (a callback once the loop runs): it says that code ran, not
        # that the thread ended
        if any(_sets_signal(owner, signal) for owner in owners):
            continue
        if any(_waits_for(owner, signal) for owner in owners):
            return True
    return False


# Words of a method that waits for an object's state (`wait_till_done`, `poll_for_result`,
# `join`), as `.wait()` / `.result()` do for an event or a future.
_WAIT_WORDS = frozenset({"wait", "result", "join"})


def _waits_for_its_last_call(run: Scope, owner: Scope, thread: ast.Call) -> bool:
    """The thread's target ends with a call on an object it shares with its owner
    (``self.state.set_done()``, ``monitor.notify_done(tid)``), and the owner, after starting
    it, waits on that same object with no timeout (``self.state.wait_till_done()``,
    ``monitor.poll_for_result(tid)``): round 14's end signal, through the object's own
    methods rather than an event. A wait given anything but what the last call reported
    (a timeout), a wait on another object, or the owner making that last call itself (then
    the call says nothing of the thread) still fires."""
    body = getattr(run.node, "body", [])
    statements = body if isinstance(body, list) else []
    if not statements:
        return False
    last = statements[-1]
    if not (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Attribute)
    ):
        return False
    receiver = dotted(last.value.func.value)
    if receiver is None:
        return False
    root = receiver.partition(".")[0]
    if root in run.assigns or root in run.params:
        return False  # the thread's own object, which the owner cannot see
    method = last.value.func.attr
    if method in _SIGNALS:
        return False  # an event's or a future's: `_final_signals` reads those
    reported = {dotted(arg) for arg in last.value.args} - {None}
    line = getattr(thread, "lineno", 0)
    owner_body = getattr(owner.node, "body", [])
    waited = False
    for node in own_nodes(owner_body if isinstance(owner_body, list) else []):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and dotted(node.func.value) == receiver
        ):
            continue
        if node.func.attr == method:
            return False
        if (
            node.lineno > line
            and _WAIT_WORDS & set(words(node.func.attr))
            and not node.keywords
            # about what the thread reported (`poll_for_result(tid)` after
            # `notify_done(tid)`), nothing more: another argument may be a timeout
            and all(dotted(arg) in reported for arg in node.args)
        ):
            waited = True
    return waited


def _sets_signal(scope: Scope, signal: str) -> bool:
    body = getattr(scope.node, "body", [])
    return any(
        signal in _signals_set(statement) for statement in (body if isinstance(body, list) else [])
    )


def _called_only_when_none_runs(ctx: Context, target: str, function: Scope) -> bool:
    """A method that binds the thread to ``self.x``, called by the class's other methods only
    under a test that ``self.x`` is empty (``if not self._thread: self._start_thread()``, ``if
    self._thread is None: ...``): a start that runs only when none runs, one at a time."""
    cls = function.cls
    if cls is None or not target.startswith("self."):
        return False
    callee = f"self.{function.name}"
    calls = guarded = 0
    for method in ctx.facts.methods.get(cls.name, {}).values():
        body = getattr(method.node, "body", [])
        for node in own_nodes(body if isinstance(body, list) else []):
            if isinstance(node, ast.Call) and dotted(node.func) == callee:
                calls += 1
            elif isinstance(node, ast.If) and _tests_empty(node.test, target):
                guarded += sum(
                    isinstance(inner, ast.Call) and dotted(inner.func) == callee
                    for inner in own_nodes(node.body)
                )
    return calls > 0 and guarded == calls


def _replaced_once_ended(site: Site, target: str) -> bool:
    """Bound to the object's thread (``self._ka = Thread(...)``) in the body of an ``if``
    that holds only when that thread has ended (``if not self._ka.is_alive():``, also in an
    ``and``): a new one replaces the last only once it is gone, one at a time. A test of
    another thread, or of a parameter, says nothing of this one."""
    if not target.startswith("self."):
        return False
    return any(
        kind == IF and isinstance(node, ast.If) and _tests_ended(node.test, target)
        for kind, node in site.blocks
    )


def _tests_ended(test: ast.expr, target: str) -> bool:
    """``not self.x.is_alive()``, or it in an ``and``."""
    return any(
        isinstance(part, ast.UnaryOp)
        and isinstance(part.op, ast.Not)
        and isinstance(part.operand, ast.Call)
        and isinstance(part.operand.func, ast.Attribute)
        and part.operand.func.attr == "is_alive"
        and dotted(part.operand.func.value) == target
        for part in conjuncts(test)
    )


def _tests_empty(test: ast.expr, target: str) -> bool:
    """``not self.x``, ``self.x is None``, or either in an ``and``."""
    return any(_is_empty_test(part, target) for part in conjuncts(test))


def _is_empty_test(test: ast.expr, target: str) -> bool:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return dotted(test.operand) == target
    return (
        isinstance(test, ast.Compare)
        and dotted(test.left) == target
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Is)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    )


def _bound_in(statements: list[ast.stmt]) -> set[str]:
    """The names and attributes assigned anywhere in ``statements``."""
    bound: set[str] = set()
    for statement in statements:
        for node in ast.walk(statement):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            bound.update(text for target in targets if (text := dotted(target)) is not None)
    return bound


def _per_operation(ctx: Context, site: Site) -> str | None:
    """Why a construction runs per operation ("in a loop", "in a request handler"), if it
    does; None at module level, in set-up code and in bounded or reconnect loops."""
    function = site.scope.function()
    if function is None or ctx.in_main_block(site) or _set_up(ctx, function):
        return None
    if _created_once(ctx, site):
        return None
    for index in range(len(site.blocks) - 1, -1, -1):
        kind, node = site.blocks[index]
        if kind != LOOP or ctx.loop_bounded(node, site.scope):
            continue
        if isinstance(node, ast.While) and any(k == TRY for k, _ in site.blocks[index:]):
            # `while True: try: connect() ... except: sleep`: a reconnect loop
            continue
        return "in a loop"
    if function.kind != "lambda" and is_handler(ctx, function):
        return f"in request handler `{function.name}`"
    return None


def check_client(ctx: Context, site: Site) -> None:
    """ADM301 at a client / connection / pool constructor run per operation."""
    call = site.node
    assert isinstance(call, ast.Call)
    resolved = ctx.resolve(call.func)
    if resolved not in CLIENTS:
        return
    where = _per_operation(ctx, site)
    if where is None:
        return
    ctx.report(
        call,
        "ADM301",
        f"`{resolved}` is created {where}: each operation pays a new connection and escapes "
        "every pool limit; create it once (start-up or lifespan) and share it",
    )


def _thread_classes(ctx: Context) -> set[str]:
    """Classes of this file that subclass ``threading.Thread``."""
    found = set()
    for name, bases in ctx.facts.bases.items():
        if any(ctx.resolve(b) in THREADS for b in bases):
            found.add(name)
    return found


def _owners(ctx: Context, target: str, scope: Scope) -> list[Scope]:
    """The functions where ``target`` names the same object: its own function for a local
    name, every method of the class for ``self.x``."""
    if target.startswith(("self.", "cls.")):
        function = scope.function()
        cls = function.cls if function is not None else None
        if cls is not None:
            return list(ctx.facts.methods.get(cls.name, {}).values())
    if target in scope.nonlocals:
        # `nonlocal worker` in a callback: the enclosing function may join it
        outer = scope.parent
        while outer is not None and target not in outer.assigns:
            outer = outer.parent
        return [scope] if outer is None else [scope, outer]
    return [scope, *_closures(ctx, target, scope)]


def _closures(ctx: Context, name: str, scope: Scope) -> list[Scope]:
    """The functions nested in ``scope`` where ``name`` is still its local (neither they nor
    any function between binds it): a cleanup coroutine defined in the function that started
    the thread joins that very thread."""
    found = []
    for function in ctx.facts.functions:
        outer: Scope | None = function
        while outer is not None and outer is not scope:
            if name in outer.assigns or name in outer.params:
                break
            outer = outer.parent
        if outer is scope and function is not scope:
            found.append(function)
    return found


def _joined(ctx: Context, target: str, site: Site) -> bool:
    """Whether the object bound to ``target`` is joined/shut down or handed to the caller:
    directly, through a list it was appended to, or (for ``self.x``) in any method."""
    scope = site.scope
    if _stored_on_another_object(target):
        return True
    if any(_joined(ctx, kept, site) for kept in _kept_on_self(scope, target)):
        return True
    for current in _owners(ctx, target, scope):
        if target in current.joined or target in current.returned:
            return True
        # through a local alias: `thread = self._thread; thread.join()`
        for name, values in current.assigns.items():
            if name in current.joined and any(dotted(v) == target for v in values):
                return True
        if _handed_over(current, target):
            return True
        # joined in a loop over a display of it (`for t in (first, second): t.join()`)
        for name, iterables in current.for_targets.items():
            if name in current.joined and any(
                isinstance(iterable, ast.List | ast.Tuple | ast.Set)
                and any(dotted(item) == target for item in iterable.elts)
                for iterable in iterables
            ):
                return True
        if _waited_while_alive(current, target):
            return True
    # appended to a list (`threads.append(t)`, `self.workers.append(t)`) that is joined
    # item by item (`for t in threads: t.join()`)
    containers = [
        name
        for name, items in scope.appends.items()
        if any(dotted(value) == target for value, _ in items)
    ]
    return any(_container_joined(ctx, c, scope) for c in containers)


def _joined_by_its_with_blocks(ctx: Context, target: str, function: Scope) -> bool:
    """A ``@contextmanager`` that yields the thread (``yield t``, or an item of a tuple:
    ``yield job, t``) to ``with`` blocks of this file that all bind it and join it (``with
    self.run_job() as (job, t): ... t.join(3)``): handed to its users, who join it. Yielded
    to users that do not join it, or to none in the file (a fixture's ``yield``), it still
    fires."""
    if not any(
        (dotted(d.func if isinstance(d, ast.Call) else d) or "").endswith("contextmanager")
        for d in function.decorators
    ):
        return False
    body = getattr(function.node, "body", [])
    positions = set()
    for node in own_nodes(body if isinstance(body, list) else []):
        if not isinstance(node, ast.Yield) or node.value is None:
            continue
        items = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        bare = not isinstance(node.value, ast.Tuple)
        positions |= {None if bare else i for i, item in enumerate(items) if dotted(item) == target}
    if len(positions) != 1:
        return False
    position = positions.pop()
    uses = 0
    for scope in ctx.facts.functions:
        for statement in scope.withs:
            for item in statement.items:
                entered = item.context_expr
                if not (isinstance(entered, ast.Call) and names_function(entered.func, function)):
                    continue
                bound: ast.expr | None = item.optional_vars
                if position is not None:
                    elements = bound.elts if isinstance(bound, ast.Tuple | ast.List) else []
                    bound = elements[position] if position < len(elements) else None
                if not isinstance(bound, ast.Name) or bound.id not in scope.joined:
                    return False
                uses += 1
    return uses > 0


def _waited_while_alive(scope: Scope, target: str) -> bool:
    """A ``while`` that goes round as long as the thread runs (``while t.is_alive(): await
    sleep(0.01)``): a join spelled as a poll, the function goes on only once it has ended."""
    body = getattr(scope.node, "body", [])
    return any(
        isinstance(node, ast.While)
        and isinstance(node.test, ast.Call)
        and isinstance(node.test.func, ast.Attribute)
        and node.test.func.attr == "is_alive"
        and dotted(node.test.func.value) == target
        for node in own_nodes(body if isinstance(body, list) else [])
    )


def _kept_on_self(scope: Scope, target: str) -> list[str]:
    """The attributes of ``self`` a local is stored in by its own function (``thread =
    Thread(...); thread.start(); self._thread = thread``, or at once: ``self._thread = thread
    = Thread(...)``): the object's other methods see it there, and may join it."""
    if "." in target:
        return []
    function = scope.function()
    body = getattr(function.node, "body", []) if function is not None else []
    kept = []
    for node in own_nodes(body if isinstance(body, list) else []):
        if isinstance(node, ast.Assign) and (
            dotted(node.value) == target or any(dotted(t) == target for t in node.targets)
        ):
            kept += [
                text
                for text in map(dotted, node.targets)
                if text is not None and text.startswith(("self.", "cls."))
            ]
    return kept


def _stored_on_another_object(target: str) -> bool:
    """Bound to an attribute of an object other than ``self`` (``state.pool = ...``,
    ``pubsub._executor = ...``): handed over to that object, whose own code shuts it down."""
    root, dot, _ = target.partition(".")
    return bool(dot) and root not in ("self", "cls")


def _handed_over(scope: Scope, target: str) -> bool:
    """Whether ``target`` is passed to a call (``join_all(threads)``, ``wait([t])``): its
    new owner may join it."""
    body = getattr(scope.node, "body", [])
    for statement in body if isinstance(body, list) else []:
        for node in ast.walk(statement):
            if not isinstance(node, ast.Call):
                continue
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if any(dotted(item) == target for item in _displayed(arg)):
                    return True
    return False


def _displayed(value: ast.expr) -> list[ast.expr]:
    """What an argument holds as it is written: the items of a list, tuple or set display,
    the values of a dict display (``merge(info, {"thread": t})``), else the value itself."""
    if isinstance(value, ast.List | ast.Tuple | ast.Set):
        return list(value.elts)
    if isinstance(value, ast.Dict):
        return [v for v in value.values if v is not None]
    return [value]


def _iterated(iterable: ast.expr) -> str | None:
    """What a loop runs over, seen through copies and views (``list(self._threads.values())``
    -> ``self._threads``)."""
    while isinstance(iterable, ast.Call):
        name = last_name(iterable.func)
        if name in ("values", "keys", "items", "copy") and isinstance(iterable.func, ast.Attribute):
            iterable = iterable.func.value
        elif name in ("list", "tuple", "sorted", "reversed", "set") and iterable.args:
            iterable = iterable.args[0]
        else:
            return None
    return dotted(iterable)


def _container_joined(ctx: Context, container: str, scope: Scope) -> bool:
    for current in _owners(ctx, container, scope):
        if container in current.returned or _handed_over(current, container):
            return True
        if f"{container}[]" in current.joined:
            return True  # joined item by item through its index, in a loop
        # copies of the container (`threads = [t for t in list(self._threads.values())]`)
        names = {container} | {
            name
            for name, values in current.assigns.items()
            if any(
                (
                    isinstance(v, ast.ListComp | ast.GeneratorExp | ast.SetComp)
                    and _iterated(v.generators[0].iter) == container
                )
                or (isinstance(v, ast.Call) and _iterated(v) == container)
                for v in values
            )
        }
        for name, iterables in current.for_targets.items():
            if name in current.joined and any(_iterated(i) in names for i in iterables):
                return True
    return False


def _element_of(ctx: Context, call: ast.Call, site: Site) -> str | None:
    """The collection a comprehension or a display of threads is bound to (``ts =
    [Thread(...) for ...]``, ``ts = [Thread(...), Thread(...)]``, also one part of a
    concatenation: ``ts = [Thread(...) for ...] + [Thread(...) for ...]``, and the values of
    a mapping: ``ts = {"local": Thread(...), "peer": Thread(...)}``)."""
    for name, values in site.scope.assigns.items():
        for value in values:
            for part in _summands(value):
                if isinstance(part, ast.ListComp | ast.SetComp) and part.elt is call:
                    return name
                if isinstance(part, ast.DictComp) and part.value is call:
                    return name
                if isinstance(part, ast.List | ast.Tuple | ast.Set) and any(
                    element is call for element in part.elts
                ):
                    return name
                if isinstance(part, ast.Dict) and any(v is call for v in part.values):
                    return name
    return None


def _summands(value: ast.expr) -> list[ast.expr]:
    """The parts a ``+`` adds up (``a + b + c`` -> a, b, c), or the value itself (a loop, not
    a recursion: a sum of thousands of terms is as deep as it is long)."""
    parts: list[ast.expr] = []
    stack = [value]
    while stack:
        part = stack.pop()
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Add):
            stack += [part.right, part.left]
        else:
            parts.append(part)
    return parts


def check_thread(ctx: Context, site: Site) -> None:
    """ADM302 at ``threading.Thread(...)`` built in a function and never joined."""
    call = site.node
    assert isinstance(call, ast.Call)
    subclass = isinstance(call.func, ast.Name) and call.func.id in _thread_classes(ctx)
    if ctx.resolve(call.func) not in THREADS and not subclass:
        return
    function = site.scope.function()
    if function is None or ctx.in_main_block(site):
        return
    if function.name == "main" or function.name in _CONSTRUCTORS:
        return
    if _kept_by_init_helper(ctx, site, function) or _created_once(ctx, site):
        return
    if _started_once(site, function) or _started_under_a_count(site):
        return
    target = ctx.facts.bound_to.get(id(call))
    if target is not None and _joined(ctx, target, site):
        return
    if target is not None and _joined_by_its_with_blocks(ctx, target, function):
        return
    if target is not None and _kept_by_lifecycle_start(ctx, site, function, target):
        return
    if _signals_its_end(ctx, call, site) or _only_signals(ctx, call):
        return
    if _serves_until_shut_down(ctx, call, site):
        return
    if target is not None and _called_only_when_none_runs(ctx, target, function):
        return
    if target is not None and _replaced_once_ended(site, target):
        return
    container = _element_of(ctx, call, site)
    if container is not None and _container_joined(ctx, container, site.scope):
        return
    if target is None and container is None:
        # appended as it is built: `threads.append(Thread(...))`
        for name, items in site.scope.appends.items():
            if any(value is call for value, _ in items) and _container_joined(
                ctx, name, site.scope
            ):
                return
    if _runs_once(ctx, function):
        return  # last: it reads the callers, the rest only the function
    if (
        ctx.settings.thread_evidence == "repetition"
        and not ctx.in_tests
        and not runs_repeatedly(ctx, site, function, is_handler)
    ):
        return  # outside tests, only where the file shows it runs per call (repetition.py)
    daemon = any(
        k.arg == "daemon" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    ) or (target is not None and any(target in s.daemons for s in _owners(ctx, target, site.scope)))
    name = last_name(call.func) or "Thread"
    if daemon:
        ctx.report(
            call,
            "ADM302",
            f"a daemon `{name}` is started per call of `{function.name}` and never joined: "
            "threads grow with the load and are killed mid-work at exit; use one shared "
            "executor or `adm.to_thread(..., limiter=...)`",
            severity="error",
        )
    else:
        ctx.report(
            call,
            "ADM302",
            f"a `{name}` is started per call of `{function.name}` and never joined: threads "
            "grow with the load; use one shared executor or `adm.to_thread(..., limiter=...)`",
        )


_ASYNCIO_RUN = frozenset({"asyncio.run", "asyncio.runners.run"})


def _default_executor_of_its_own_loop(ctx: Context, site: Site, function: Scope) -> bool:
    """Handed, as it is built, to the running loop as its default executor
    (``asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(...))``) by a
    coroutine that every call of the file hands straight to ``asyncio.run``: each run's
    loop is its own, and ``asyncio.run`` shuts the loop's default executor down as the loop
    ends, as a ``with`` block would (one pool per loop, kept by the object it serves). A
    coroutine also awaited, or handed on, runs on a loop that outlives the call (and the
    pool it leaves behind) and still fires."""
    if function.kind != "async def" or function.name not in ctx.calls_by_name():
        return False
    body = getattr(function.node, "body", [])
    handed = any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "set_default_executor"
        and node.args[:1] == [site.node]
        for node in own_nodes(body if isinstance(body, list) else [])
    )
    if not handed:
        return False

    def is_callee(func: ast.expr) -> bool:
        return names_function(func, function)

    calls = runs = 0
    for caller in [ctx.facts.module, *ctx.facts.functions]:
        statements = getattr(caller.node, "body", [])
        statements = statements if isinstance(statements, list) else []
        calls += _calls_in(statements, is_callee)[0]
        runs += sum(
            isinstance(node, ast.Call)
            and ctx.resolve(node.func) in _ASYNCIO_RUN
            and any(isinstance(arg, ast.Call) and is_callee(arg.func) for arg in node.args[:1])
            for node in own_nodes(statements)
        )
    return calls > 0 and runs == calls


def _shut_down_by_its_test(ctx: Context, site: Site, function: Scope, target: str | None) -> bool:
    """A test function's own pool, shut down before the test ends (its ``with`` block,
    ``pool.shutdown()`` in the same function) and built once in it, not per round of a loop:
    a test runs once, so nothing is left behind and nothing grows across calls. A pool built
    in a test's loop, or by a helper that each test calls, still fires."""
    if not (ctx.in_tests and function.name.startswith("test")) or ctx.inner_loop(site):
        return False
    if id(site.node) in ctx.facts.with_items:
        return True
    return target is not None and "." not in target and target in function.joined


def check_executor(ctx: Context, site: Site) -> None:
    """ADM303 at ``ThreadPoolExecutor()`` built per call."""
    call = site.node
    assert isinstance(call, ast.Call)
    if ctx.resolve(call.func) not in EXECUTORS:
        return
    function = site.scope.function()
    if function is None or ctx.in_main_block(site) or _set_up(ctx, function):
        return
    if _kept_by_init_helper(ctx, site, function) or _created_once(ctx, site):
        return
    if _made_for_constructors(ctx, site, function) or _made_for_set_up(ctx, site, function):
        return
    if _trait_default(ctx, site, function):
        return
    target = ctx.facts.bound_to.get(id(call))
    if target is not None and _stored_on_another_object(target):
        return
    if _default_executor_of_its_own_loop(ctx, site, function):
        return
    if _shut_down_by_its_test(ctx, site, function, target):
        return
    reason = None
    if function.kind == "async def":
        reason = "in a coroutine"
    elif ctx.inner_loop(site) is not None:
        reason = "in a loop"
    elif is_handler(ctx, function):
        reason = f"in request handler `{function.name}`"
    elif id(call) not in ctx.facts.with_items and (
        target is None or not _joined(ctx, target, site)
    ):
        reason = "and never shut down"
    if reason is None:
        return
    ctx.report(
        call,
        "ADM303",
        f"a `ThreadPoolExecutor` is built per call of `{function.name}` ({reason}): fresh "
        "threads every time, no bound across calls; build it once (module level or "
        "`__init__`) and share it, or use `adm.to_thread`",
    )
