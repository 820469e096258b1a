"""What every rule check is handed: the file's facts, the settings, and a way to report.

Also the judgements several rules share: is this expression a limiter, is this loop over data
of unbounded size, does this function bound its own concurrency. Each is a conservative
reading of one file: when the code does not say, the answer is the one that reports less.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterable, Iterator

from admission.audit.checks.class_state import is_empty_collection, returns_class_state
from admission.audit.config import Settings
from admission.audit.findings import Finding, Fix
from admission.audit.names import dotted, last_name
from admission.audit.rules import rule
from admission.audit.walk import (
    ASYNC,
    CLASS,
    ELSE,
    IF,
    LOOP,
    MAIN,
    TRY,
    WITH,
    Block,
    FileFacts,
    Scope,
    Site,
    own_nodes,
)

__all__ = [
    "OWN_LOOP_ENDS",
    "Context",
    "continues",
    "holds",
    "is_test_path",
    "leaves_after",
    "own_nodes",
    "parameter_defaults",
    "parsed_annotation",
]

# Loops over ranges up to this many items count as bounded (`for i in range(8)`).
SMALL_RANGE = 100

# Calls that yield as many items as the iterable they are given.
_SAME_SIZE = frozenset(
    {
        "enumerate",
        "reversed",
        "sorted",
        "list",
        "tuple",
        "set",
        "frozenset",
        "dict",
        "iter",
        "as_completed",
    }
)

# Calls that yield the items of the iterables they are given (their size follows them).
_ITERATING = frozenset({"map", "filter", "zip", "chain", "islice"})
# Views of a mapping or a copy of a collection: the same items as the object they are called on.
_VIEWS = frozenset({"items", "keys", "values", "copy"})
# Calls that take the next item of a queue, socket, stream or collection: a ``while`` loop
# around one runs once per item received.
_RECEIVES = frozenset(
    [
        "get",
        "get_nowait",
        "recv",
        "receive",
        "receive_nowait",
        "accept",
        "sock_accept",
        "read",
        "readline",
        "readuntil",
        "readexactly",
        "pop",
        "popleft",
        "popitem",
        "fetch",
        "fetchone",
        "fetchmany",
        "getmany",
    ]
)

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# Words in a name that say "this bounds concurrency" (semaphores, limiters, locks, ...).
_LIMITER_WORDS = frozenset(
    {
        "sem",
        "sems",
        "sema",
        "lock",
        "locks",
        "mutex",
        "rate",
        "bulkhead",
        "throttle",
        "throttler",
        "bucket",
        "buckets",
        "permit",
        "permits",
        "slot",
        "slots",
    }
)
_LIMITER_PREFIXES = ("semaphore", "limit", "throttl", "capacit", "concurren")
_BREAKER_WORDS = frozenset({"breaker", "breakers", "circuit", "cb"})

# Constructors of limiters, by qualified name (admission's own are recognised by module).
LIMITER_TYPES = frozenset(
    {
        "asyncio.Semaphore",
        "asyncio.BoundedSemaphore",
        "asyncio.Lock",
        "asyncio.Condition",
        "trio.Semaphore",
        "trio.CapacityLimiter",
        "trio.Lock",
        "trio.StrictFIFOLock",
        "anyio.Semaphore",
        "anyio.CapacityLimiter",
        "anyio.Lock",
        "threading.Semaphore",
        "threading.BoundedSemaphore",
        "threading.Lock",
        "threading.RLock",
        "aiolimiter.AsyncLimiter",
        "asyncio_throttle.Throttler",
        "pyrate_limiter.Limiter",
    }
)

# Calls that wrap a coroutine and run it as it is: look through them to the coroutine.
_PASSTHROUGH = frozenset({"create_task", "ensure_future", "wait_for", "shield", "Task"})

# Iterables that yield bounded batches of their input (`for batch in batched(items, 50)`).
_BATCHERS = frozenset(
    {
        "batched",
        "chunked",
        "chunks",
        "chunk",
        "batch",
        "batches",
        "grouper",
        "ichunked",
        "sliced",
        "split_every",
        "partition_all",
        "paginate",
    }
)
_BATCH_WORDS = frozenset({"batch", "batches", "chunk", "chunks", "page", "pages", "window"})
# Keywords that cap how many items a call returns (`fetch(batch=100)`, `query(limit=50)`).
_SIZE_KEYWORDS = frozenset(
    {
        "batch",
        "batch_size",
        "limit",
        "max_records",
        "max_messages",
        "max_count",
        "max_results",
        "page_size",
    }
)
# Words of a method that hands back the registrations an object keeps in memory
# (`self._subscriptions.get_subscribed_recipients(topic)`, `self.listeners_for(event)`).
_REGISTRATION_WORDS = frozenset(
    {"callbacks", "handlers", "hooks", "listeners", "observers", "receivers", "registered"}
    | {"subscribed", "subscribers", "subscriptions"}
)
# Words of an attribute that reaches a store or a remote service: what its methods hand back
# was read from there (`self.db.get_subscribers(list_id)`: a mailing list's rows), data.
_STORE_WORDS = frozenset(
    {"api", "cache", "client", "collection", "conn", "connection", "cursor", "database"}
    | {"db", "redis", "repo", "repository", "session", "storage", "store", "table"}
)
# Collections of the program's own resources: sized by its configuration, not by the data
# (`for pool in self._pools.values()`, `for handler in self.handlers`, `for broker_id in
# brokers`). Matched against the words of the iterable's name and of the loop variable, in
# the singular or the plural.
_OWNED_ROOTS = frozenset(
    {
        "backend",
        "broker",
        "callback",
        "channel",
        "child",
        "children",
        "client",
        "cluster",
        "conn",
        "connection",
        "consumer",
        "coordinator",
        "cron",
        "database",
        "deployment",
        "endpoint",
        "engine",
        "executor",
        "exporter",
        "extension",
        "filter",
        "handler",
        "hook",
        "host",
        "limiter",
        "listener",
        "logger",
        "loop",
        "middleware",
        "node",
        "observer",
        "partition",
        "peer",
        "plugin",
        "pool",
        "producer",
        "provider",
        "receiver",
        "region",
        "replica",
        "schedule",
        "semaphore",
        "server",
        "service",
        "session",
        "shard",
        "sink",
        "socket",
        "stage",
        "subscriber",
        "thread",
        "validator",
        "watcher",
        "worker",
    }
)


# Existing tasks and futures: gathering them starts nothing (plural names of collections only:
# a loop variable `task` is as often a job to run).
_OWNED_COLLECTIONS = frozenset({"tasks", "futures", "futs", "waiters"})

# Calls that return their argument unchanged, only retyped for the type checker.
_CASTS = frozenset({"typing.cast", "typing_extensions.cast"})
_ANNOTATED = frozenset({"typing.Annotated", "typing_extensions.Annotated"})
# what declares a parameter of a command line (typer's defaults, click's decorators)
_COMMAND_LINE_PARAMETERS = frozenset(
    {"typer.Argument", "typer.Option", "typer.params.Argument", "typer.params.Option"}
)
_COMMAND_LINE_DECORATORS = frozenset(
    {
        f"{package}.{kind}"
        for package in ("click", "asyncclick", "rich_click", "cloup")
        for kind in ("argument", "option", "decorators.argument", "decorators.option")
    }
)


def owned(name: str, *, collection: bool = False) -> bool:
    """Whether a name is one of the program's own resources (see `_OWNED_ROOTS`)."""
    for word in words(name):
        if collection and word in _OWNED_COLLECTIONS:
            return True
        if word in _OWNED_ROOTS or word.removesuffix("s") in _OWNED_ROOTS:
            return True
        if word.endswith("es") and word[:-2] in _OWNED_ROOTS:
            return True
    return False


def registrations_query(node: ast.expr) -> bool:
    """A call on the object itself or on one of its own attributes (``self.m(...)``,
    ``self._manager.m(...)``) whose name says it hands back registrations (subscribers,
    listeners, handlers, ...), or any call on the object's own registry
    (``self.registry.get_service_infos()``): the program's registrations, as
    ``self._listeners`` is. Not a call through an attribute that names a store or a client
    (``self.db.get_subscribers()``), nor on anything but the object."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    says_registrations = any(word in _REGISTRATION_WORDS for word in words(node.func.attr))
    receiver = node.func.value
    while isinstance(receiver, ast.Attribute):
        attribute = words(receiver.attr)
        if any(word in _STORE_WORDS for word in attribute):
            return False
        says_registrations = says_registrations or any(
            word in ("registry", "registrations") for word in attribute
        )
        receiver = receiver.value
    in_object = isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")
    return in_object and says_registrations


# a directory named for tests (`tests`, `test`, `testing`, `_testbase`, `test_utils`) or a
# file that pytest or unittest would collect or load (`test_x.py`, `x_test.py`, `conftest.py`)
_TEST_DIRECTORY = re.compile(r"(^|[_.])tests?(ing|base|utils?|case)?($|[_.])")
_TEST_FILE = re.compile(r"^(test_|tests?$|conftest$|testing$|testcase$)|_test$")


def is_test_path(path: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is test code."""
    *directories, name = path.replace("\\", "/").split("/")
    stem = name.removesuffix(".py")
    return any(_TEST_DIRECTORY.search(d) for d in directories) or bool(_TEST_FILE.search(stem))


def conjuncts(test: ast.expr) -> list[ast.expr]:
    """The tests an ``and`` requires, nested ``and``s flattened (``a and (b and c)`` -> a, b,
    c); any other test is its own one."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [part for value in test.values for part in conjuncts(value)]
    return [test]


def words(name: str) -> list[str]:
    """The lower-case words of an identifier: ``maxRetries_count`` -> max, retries, count."""
    return [w.lower() for w in _WORD.findall(name)]


def _limiter_name(name: str) -> bool:
    return any(w in _LIMITER_WORDS or w.startswith(_LIMITER_PREFIXES) for w in words(name))


def _breaker_name(name: str) -> bool:
    return any(w in _BREAKER_WORDS for w in words(name))


def matches(patterns: Iterable[str], *texts: str | None) -> bool:
    """Whether any of the names matches any glob (``*.fetch`` matches ``client.fetch``)."""
    for text in texts:
        if text is None:
            continue
        for pattern in patterns:
            if fnmatch.fnmatchcase(text, pattern):
                return True
    return False


_ARITHMETIC_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Pow)


def _arithmetic(op: ast.operator, left: int, right: int) -> int | None:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.FloorDiv):
        return left // right if right else None
    # `**`: only what a count is written as (`10**6`), never a number too big to compute
    return left**right if 0 <= right <= 64 and abs(left) <= 1 << 32 else None


def _count_of_range(numbers: list[int]) -> int | None:
    """How many items ``range(*numbers)`` yields (None for a call that raises), computed
    without building it: ``range(10**30)`` has a length too large for ``len``."""
    if not 1 <= len(numbers) <= 3:
        return None
    start, stop, step = [0, *numbers, 1][:3] if len(numbers) == 1 else [*numbers, 1][:3]
    if step == 0:
        return None
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _binding(name: str, scope: Scope) -> tuple[Scope, list[ast.expr], list[ast.expr]] | None:
    """Where ``name`` is bound, from ``scope`` outwards: the nearest scope that iterates it
    (its ``for`` iterables) or assigns it (the values); None for a parameter or no binding."""
    current: Scope | None = scope
    while current is not None:
        # a class body's names are not seen from its methods
        if current is scope or current.kind != CLASS:
            iterables = current.for_targets.get(name, [])
            values = current.assigns.get(name, [])
            if iterables or values:
                return current, list(iterables), list(values)
            if name in current.params:
                return None
        current = current.parent
    return None


def _reaching(use: ast.Name, scope: Scope, values: list[ast.expr]) -> list[ast.expr]:
    """The values of ``use``'s name that can reach it: only the scope's last assignment of
    the name when it is a plain statement that comes before the statement holding the use
    in the same block, and nothing else binds or adds to the name (``repos = fetch()``,
    ``repos = repos[:10]``, then a fan-out over ``repos``); else all of them. Any other
    binding (a tuple target, ``:=``, ``+=``, ``for``, ``with ... as``, a ``nonlocal`` or
    ``global`` of it) keeps them all."""
    if len(values) < 2:
        return values
    last = max(values, key=lambda v: (v.lineno, v.col_offset))
    if last.lineno >= use.lineno:
        return values
    if any(value.lineno > last.lineno for value, _ in scope.appends.get(use.id, ())):
        return values
    block = _block_of_assignment(scope.node, last)
    if block is None:
        return values
    index, statements = block
    if not any(holds(statement, use) for statement in statements[index + 1 :]):
        return values
    plain: set[int] = set()  # the targets of the assignments `values` came from
    stores: list[ast.Name] = []  # every binding of the name
    for node in ast.walk(scope.node):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value in values:
            plain.update(id(target) for target in _targets(node))
        elif isinstance(node, ast.Name) and node.id == use.id and isinstance(node.ctx, ast.Store):
            stores.append(node)
        elif isinstance(node, ast.Nonlocal | ast.Global) and use.id in node.names:
            return values
    return values if any(id(store) not in plain for store in stores) else [last]


def _block_of_assignment(root: ast.AST, value: ast.expr) -> tuple[int, list[ast.stmt]] | None:
    """Where the plain assignment (``name = value``) of ``value`` sits: its index and block."""
    for node in ast.walk(root):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if not isinstance(statements, list):
                continue
            for index, statement in enumerate(statements):
                if (
                    isinstance(statement, ast.Assign | ast.AnnAssign)
                    and statement.value is value
                    and all(isinstance(t, ast.Name) for t in _targets(statement))
                ):
                    return index, statements
    return None


def _targets(statement: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return statement.targets if isinstance(statement, ast.Assign) else [statement.target]


def holds(statement: ast.stmt, node: ast.expr | ast.stmt) -> bool:
    """Whether ``node`` lies inside ``statement`` (by their positions in the source: no
    walk of the statement)."""
    start = (statement.lineno, statement.col_offset)
    end = (statement.end_lineno or statement.lineno, statement.end_col_offset or 0)
    return (
        start <= (node.lineno, node.col_offset)
        and (node.end_lineno or node.lineno, node.end_col_offset or 0) <= end
    )


def leaves_after(loop: ast.AST, call: ast.Call) -> bool:
    """After the call, the loop's round leaves it (``break`` or ``return`` in its block or a
    block around it, before any ``continue``): it happens once, as the loop's last step (a
    spawn made once, a pause before leaving rather than before another round). A ``raise``
    does not count: a retry around the loop may catch it."""

    def outcome(statements: list[ast.stmt]) -> bool | None:
        # True: leaves the loop; False: goes round; None: falls through to what follows
        for index, statement in enumerate(statements):
            if not holds(statement, call):
                continue
            if isinstance(statement, ast.If | ast.With | ast.AsyncWith | ast.Try):
                inner_lists = [
                    getattr(statement, field, None) for field in ("body", "orelse", "finalbody")
                ] + [h.body for h in getattr(statement, "handlers", [])]
                for inner in inner_lists:
                    if isinstance(inner, list) and any(holds(s, call) for s in inner):
                        found = outcome(inner)
                        if found is not None:
                            return found
            for after in statements[index + 1 :]:
                if isinstance(after, ast.Break | ast.Return):
                    return True
                if continues([after]):
                    return False  # `continue`, also under an `if`: the round may go on
            return None
        return None

    return bool(outcome(getattr(loop, "body", [])))


def continues(statements: list[ast.stmt]) -> bool:
    """Whether ``statements`` hold a ``continue`` of the loop around them (not one of a loop
    inside them): a way to the next round."""
    stack: list[ast.AST] = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Continue):
            return True
        if not isinstance(node, OWN_LOOP_ENDS):
            stack.extend(ast.iter_child_nodes(node))
    return False


# statements whose `continue`s (and `break`s) are not the enclosing loop's
OWN_LOOP_ENDS = (
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
)


class Context:
    """One file being checked: its facts, the settings, and the findings so far."""

    def __init__(
        self,
        facts: FileFacts,
        settings: Settings,
        path: str,
        lines: list[str],
        relative_path: str | None = None,
    ):
        self.facts = facts
        self.settings = settings
        self.path = path
        # the path under the project's root (where settings' globs are read), for readings
        # that depend on where a file sits (tests or library code)
        self.relative_path = relative_path or path
        self.in_tests = is_test_path(self.relative_path)
        # whether the fan-out rules ask a test file for a count written large (see
        # `fan_out_over_data`)
        self.asks_for_a_count = self.in_tests and settings.test_fan_out_evidence == "count"
        self.lines = lines
        self.findings: list[Finding] = []
        # ids of nodes already reported per code (one finding per node and rule)
        self._reported: set[tuple[int, str]] = set()
        self._enters: dict[int, bool] = {}
        self._call_sites: dict[str, list[ast.Call]] | None = None

    # -- reporting -----------------------------------------------------------------------

    def column(self, line: int, byte_offset: int) -> int:
        """A 1-based character column from the parser's 0-based UTF-8 byte offset."""
        if 1 <= line <= len(self.lines):
            text = self.lines[line - 1]
            if not text.isascii():
                return len(text.encode()[:byte_offset].decode(errors="replace")) + 1
        return byte_offset + 1

    def report(
        self,
        node: ast.AST,
        code: str,
        message: str,
        *,
        severity: str | None = None,
        fix: Fix | None = None,
        end: ast.AST | None = None,
    ) -> None:
        """Record a finding at ``node`` (once per node and code), up to the end of ``end``
        if given (the head of a statement rather than all of its body)."""
        key = (id(node), code)
        if key in self._reported or not self.settings.enabled(code):
            return
        self._reported.add(key)
        last = end if end is not None else node
        line = getattr(node, "lineno", 1)
        end_line = getattr(last, "end_lineno", None) or line
        column = self.column(line, getattr(node, "col_offset", 0))
        end_column = self.column(end_line, getattr(last, "end_col_offset", None) or 0)
        self.findings.append(
            Finding(
                self.path,
                line,
                column,
                end_line,
                end_column,
                code,
                message,
                severity or rule(code).severity,
                fix,
            )
        )

    # -- names ---------------------------------------------------------------------------

    def resolve(self, node: ast.expr) -> str | None:
        """The qualified name of an expression through the file's imports."""
        return self.facts.imports.resolve(node)

    def bindings(self, node: ast.expr, scope: Scope) -> list[ast.expr]:
        """The values a name or ``self.attr`` may hold, from assignments in this file.

        A plain name is looked up in its scope and the enclosing ones (closures, module);
        ``self.x`` in the methods of the enclosing class.
        """
        if isinstance(node, ast.Name):
            found: list[ast.expr] = []
            current: Scope | None = scope
            while current is not None:
                values = current.assigns.get(node.id)
                if values:
                    found.extend(values)
                    break
                if node.id in current.params:
                    break
                current = current.parent
            return found
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            function = scope.function()
            cls = function.cls if function is not None else None
            if cls is None:
                # a nested function inside a method: the method's class
                outer = function.parent if function is not None else None
                while outer is not None and cls is None:
                    cls = outer.cls
                    outer = outer.parent
            if cls is not None:
                return list(self.facts.self_assigns.get((cls.name, node.attr), ()))
        return []

    def constructed(self, node: ast.expr, scope: Scope) -> Iterator[str]:
        """Qualified names of the calls a name was bound to (``s = httpx.Client()``)."""
        for value in self.bindings(node, scope):
            if isinstance(value, ast.Call):
                resolved = self.resolve(value.func)
                if resolved is not None:
                    yield resolved

    def annotation(self, node: ast.expr, scope: Scope) -> str | None:
        """The qualified annotation of a parameter (``client: httpx.Client``)."""
        if not isinstance(node, ast.Name):
            return None
        current: Scope | None = scope
        while current is not None:
            if node.id in current.params:
                annotation = parsed_annotation(current.params[node.id])
                return None if annotation is None else self.resolve(annotation)
            if node.id in current.assigns:
                return None
            current = current.parent
        return None

    # -- limiters ------------------------------------------------------------------------

    def is_limiter(self, node: ast.expr, scope: Scope, *, breaker: bool = False) -> bool:
        """Whether entering ``node`` (``async with node:``) bounds concurrency.

        A limiter type (asyncio/trio/anyio/threading semaphores and locks, aiolimiter,
        anything of admission's), an ``x.acquire()`` call, or a name that says so
        (``sem``, ``self._limiter``, ``rate_limit``). ``breaker=True`` also accepts circuit
        breakers.
        """
        if isinstance(node, ast.Await):
            node = node.value
        if isinstance(node, ast.Call):
            resolved = self.resolve(node.func)
            if resolved is not None and (
                resolved in LIMITER_TYPES or resolved.startswith("admission.")
            ):
                return True
            name = last_name(node.func)
            if name in ("acquire", "reserve"):
                return True
            if name is not None and (_limiter_name(name) or (breaker and _breaker_name(name))):
                return True
            node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        if isinstance(node, ast.Subscript):
            node = node.value
        name = last_name(node)
        if name is None:
            return False
        if _limiter_name(name) or (breaker and _breaker_name(name)):
            return True
        for resolved in self.constructed(node, scope):
            if resolved in LIMITER_TYPES or resolved.startswith("admission."):
                return True
        return False

    def is_limiter_decorator(self, decorator: ast.expr, *, breaker: bool = False) -> bool:
        """``@limiter``, ``@sem_limited(5)``, ``@adm.something``, ``@breaker`` (if asked)."""
        func = decorator.func if isinstance(decorator, ast.Call) else decorator
        resolved = self.resolve(func)
        if resolved is not None and resolved.startswith("admission."):
            return True
        text = dotted(func)
        if text is None:
            return False
        return any(
            _limiter_name(part) or (breaker and _breaker_name(part)) for part in text.split(".")
        )

    def enclosing_limiter(
        self, site: Site, *, breaker: bool = False, after: int = 0
    ) -> ast.expr | None:
        """The limiter of the innermost ``with`` around the site that enters one, if any.

        Only blocks from index ``after`` on count (to look inside a loop only).
        """
        for kind, node in reversed(site.blocks[after:]):
            if kind == WITH:
                assert isinstance(node, ast.With | ast.AsyncWith)
                for item in node.items:
                    if self.is_limiter(item.context_expr, site.scope, breaker=breaker):
                        return item.context_expr
        return None

    def enters_limiter(self, scope: Scope) -> bool:
        """Whether a function enters a limiter in its own body (``async with sem``)."""
        cached = self._enters.get(id(scope))
        if cached is not None:
            return cached
        result = scope.acquires or any(
            self.is_limiter(item.context_expr, scope) for w in scope.withs for item in w.items
        )
        result = result or any(self.is_limiter_decorator(d) for d in scope.decorators)
        self._enters[id(scope)] = result
        return result

    def callees(self, func: ast.expr, scope: Scope) -> list[Scope]:
        """The functions of this file a call may reach: ``f`` by name, ``self.m`` in the class
        (else any method ``m``), ``obj.m`` in any class."""
        if isinstance(func, ast.Name):
            return list(self.facts.by_name.get(func.id, ()))
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
                function = scope.function()
                cls = function.cls if function is not None else None
                if cls is not None:
                    method = self.facts.methods.get(cls.name, {}).get(func.attr)
                    if method is not None:
                        return [method]
            return list(self.facts.methods_by_name.get(func.attr, ()))
        return []

    def function_bounded(self, func: ast.expr, scope: Scope, depth: int = 2) -> bool:
        """Whether calling ``func`` enters a limiter within ``depth`` call levels."""
        if matches(self.settings.bounded_callables, self.resolve(func), dotted(func)):
            return True
        for callee in self.callees(func, scope):
            if self.enters_limiter(callee):
                return True
            if depth > 1:
                for called in callee.calls:
                    target: ast.expr = (
                        ast.Attribute(ast.Name("self"), called[1:])
                        if called.startswith(".")
                        else ast.Name(called)
                    )
                    if self.function_bounded(target, callee, depth - 1):
                        return True
        return False

    def work_bounded(self, work: ast.expr, scope: Scope) -> bool:
        """Whether one element of a fan-out (a coroutine call, a function reference, a
        lambda) bounds itself: it enters a limiter within two call levels, is a configured
        bounded callable, or is handed a limiter."""
        if isinstance(work, ast.Await):
            work = work.value
        if isinstance(work, ast.Lambda):
            return self.work_bounded(work.body, scope)
        if isinstance(work, ast.Name | ast.Attribute):
            return self.function_bounded(work, scope)
        if not isinstance(work, ast.Call):
            return False
        func = work.func
        name = last_name(func)
        if name == "acquire":
            return True  # each task is an acquisition of a limiter
        if name == "partial" and work.args:
            return self.work_bounded(work.args[0], scope)
        passes_through = name in _PASSTHROUGH or name == "start_soon"
        if passes_through and work.args and self.work_bounded(work.args[0], scope):
            return True
        arguments = [*work.args, *(k.value for k in work.keywords)]
        if any(
            self.is_limiter(a, scope)
            for a in arguments
            if isinstance(a, ast.Name | ast.Attribute | ast.Subscript)
        ):
            return True
        return self.function_bounded(func, scope)

    def receiver_limited(self, work: ast.expr, scope: Scope) -> bool:
        """One element is a method call on an object this function built with a limiter
        handed to it (``bot = Bot(rate_limiter=AIORateLimiter(...))``, then
        ``bot.send(...)``): each call passes through that limiter inside the object."""
        if isinstance(work, ast.Await):
            work = work.value
        if not isinstance(work, ast.Call) or not isinstance(work.func, ast.Attribute):
            return False
        receiver = work.func.value
        if not isinstance(receiver, ast.Name):
            return False
        values = scope.assigns.get(receiver.id)
        if not values or receiver.id in scope.params:
            return False
        for value in values:
            if not isinstance(value, ast.Call):
                return False
            given = [*value.args, *(k.value for k in value.keywords)]
            if not any(self.is_limiter(a, scope) for a in given):
                return False
        return True

    # -- sizes ---------------------------------------------------------------------------

    def iterable_bounded(self, node: ast.expr, scope: Scope, seen: int = 0) -> bool:
        """Whether iterating ``node`` yields a small, fixed number of items.

        Literals, ``range`` with constant or configuration arguments (not ``len(...)``),
        slices with an upper bound, and batches (``for batch in batched(items, 50)``: a
        ``batch`` is bounded). Anything else (parameters, attributes, query results, ...) is
        data whose size the code does not bound.
        """
        if seen > 4:
            return False
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return not any(isinstance(e, ast.Starred) for e in node.elts)
        if isinstance(node, ast.Dict | ast.Constant | ast.JoinedStr):
            return True
        if isinstance(node, ast.BoolOp):
            # `callbacks or ()`: one of the alternatives, bounded if each of them is
            return all(self.iterable_bounded(value, scope, seen + 1) for value in node.values)
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            # as many items as its loops give: `[watch() for _ in range(workers)]`
            return all(self.iterable_bounded(g.iter, scope, seen + 1) for g in node.generators)
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                return node.slice.upper is not None
            # one entry of a registry of the program's own (`self._listeners[channel]`)
            owner = last_name(node.value)
            return owner is not None and owned(owner, collection=True)
        if isinstance(node, ast.Await):
            node = node.value
            if isinstance(node, ast.Call) and last_name(node.func) == "gather":
                # the results of `await gather(a(), b(), c())`: as many as it was given
                return not any(isinstance(a, ast.Starred) for a in node.args)
        if isinstance(node, ast.Call) and any(k.arg in _SIZE_KEYWORDS for k in node.keywords):
            return True  # `fetch(batch=100)`, `query(limit=50)`: at most that many
        if isinstance(node, ast.Call):
            name = last_name(node.func)
            if isinstance(node.func, ast.Name) and name == "range":
                return self._range_bounded(node)
            # as many items as they are given (`as_completed(aws)` yields one per awaitable)
            if name in _SAME_SIZE or (
                name in ("items", "keys", "values") and isinstance(node.func, ast.Attribute)
            ):
                inner = node.args[0] if node.args else None
                if isinstance(node.func, ast.Attribute) and name in ("items", "keys", "values"):
                    inner = node.func.value
                return inner is not None and self.iterable_bounded(inner, scope, seen + 1)
            if name == "zip":
                return any(self.iterable_bounded(a, scope, seen + 1) for a in node.args)
            return False
        if isinstance(node, ast.Attribute):
            return owned(node.attr, collection=True)
        if isinstance(node, ast.Name):
            if owned(node.id, collection=True) or any(w in _BATCH_WORDS for w in words(node.id)):
                return True
            current: Scope | None = scope
            while current is not None:
                iterables = current.for_targets.get(node.id)
                if iterables:
                    return all(self._yields_batches(i) for i in iterables)
                values = current.assigns.get(node.id)
                if values:
                    if current is scope:
                        values = _reaching(node, scope, values)
                    return all(
                        self._filled_by_bounded_loops(node.id, current)
                        if isinstance(v, ast.Call) and is_empty_collection(v)
                        else self.iterable_bounded(v, current, seen + 1)
                        for v in values
                    )
                if node.id in current.params:
                    # `*args`: the items the caller wrote out; `nodes: dict[str, Node]`: the
                    # program's own resources, as the annotation says; a private function's
                    # parameter that every caller in the file writes out (`self._render([a, b])`)
                    return (
                        node.id == current.vararg
                        or _owned_annotation(current.params[node.id])
                        or self._literal_at_every_call(current, node.id)
                    )
                current = current.parent
            return False
        return False

    def _filled_by_bounded_loops(self, name: str, scope: Scope) -> bool:
        """A collection built empty by a call (``list()``, ``list[Manager]()``) holds what
        the function puts in: bounded when it is filled, one item per ``append``/``add``, only
        in bounded loops or outside any (``for _ in range(workers): managers.append(...)``).
        Filled by ``extend``/``update`` or by another function (a callback): not read so."""
        fills = scope.appends.get(name)
        if not fills or ".extend" in scope.calls or ".update" in scope.calls:
            return False
        if any(
            name in inner.appends and name not in inner.assigns and _nested_in(inner, scope)
            for inner in self.facts.functions
        ):
            return False
        return all(
            self.loop_bounded(loop, scope)
            for _, blocks in fills
            for kind, loop in blocks
            if kind == LOOP
        )

    def calls_by_name(self) -> dict[str, list[ast.Call]]:
        """The file's calls of a plain name or of a method (on any object), by that name; a
        name also used other than called (passed as a callback) maps to no list."""
        if self._call_sites is None:
            sites: dict[str, list[ast.Call]] = {}
            called: set[int] = set()
            used: set[str] = set()
            for node in ast.walk(self.facts.tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    if isinstance(func, ast.Attribute):
                        sites.setdefault(func.attr, []).append(node)
                    elif isinstance(func, ast.Name):
                        sites.setdefault(func.id, []).append(node)
                    called.add(id(func))
                elif isinstance(node, ast.Name | ast.Attribute) and id(node) not in called:
                    used.add(node.id if isinstance(node, ast.Name) else node.attr)
            # `ast.walk` is breadth-first: a call is met before its `func`, so `called` is
            # complete when the `func` node comes
            self._call_sites = {name: calls for name, calls in sites.items() if name not in used}
        return self._call_sites

    def _literal_at_every_call(self, function: Scope, param: str) -> bool:
        """A private function (``_render``), called in this file, where every call passes a
        list, tuple or set display for ``param``: its size is what the callers wrote. A
        public one may be called from elsewhere with anything."""
        node = function.node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return False
        if not node.name.startswith("_") or node.name.startswith("__"):
            return False
        calls = self.calls_by_name().get(node.name)
        if not calls:
            return False
        positional = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
        if function.cls is not None and positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        index = positional.index(param) if param in positional else None
        for call in calls:
            given: ast.expr | None = None
            if index is not None and index < len(call.args):
                if any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
                    return False
                given = call.args[index]
            for keyword in call.keywords:
                if keyword.arg == param:
                    given = keyword.value
                elif keyword.arg is None:
                    return False  # `**kwargs`: cannot tell
            if not (
                isinstance(given, ast.List | ast.Tuple | ast.Set)
                and not any(isinstance(e, ast.Starred) for e in given.elts)
            ):
                return False
        return True

    def _yields_batches(self, iterable: ast.expr) -> bool:
        if isinstance(iterable, ast.Call):
            name = last_name(iterable.func)
            if name in _BATCHERS:
                return True
            if name == "range" and len(iterable.args) == 3:
                # for i in range(0, len(items), 100): items[i:i + 100]
                return False
        name = last_name(iterable)
        return name is not None and any(w in _BATCH_WORDS for w in words(name))

    def _range_bounded(self, call: ast.Call) -> bool:
        for arg in call.args:
            for node in ast.walk(arg):
                if isinstance(node, ast.Call) and last_name(node.func) == "len":
                    return False
        if call.args and all(isinstance(a, ast.Constant) for a in call.args):
            values = [a.value for a in call.args if isinstance(a, ast.Constant)]
            numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            count = _count_of_range(numbers) if len(numbers) == len(values) else None
            if count is not None:
                return count <= SMALL_RANGE
        # range(workers), range(self.concurrency): a setting, not the size of the data
        return True

    def fan_out_loop_bounded(self, loop: ast.AST, scope: Scope) -> bool:
        """`loop_bounded` for the fan-out rules: in a test file that asks for a count (see
        `fan_out_over_data`), a ``for`` or a comprehension is bounded unless its count is
        written large (``range(REQUESTS)`` with ``REQUESTS = 1000`` is not a setting there)."""
        if self.asks_for_a_count and not isinstance(loop, ast.While):
            return not self.loop_over_data(loop, scope)
        return self.loop_bounded(loop, scope)

    def loop_bounded(self, loop: ast.AST, scope: Scope) -> bool:
        """Whether a loop runs a small, fixed number of times (see `iterable_bounded`)."""
        if isinstance(loop, ast.For | ast.AsyncFor):
            return _owned_target(loop.target) or self.iterable_bounded(loop.iter, scope)
        if isinstance(loop, ast.While):
            return _compares_len(loop.test) or self._test_compares_len(loop.test, scope)
        if isinstance(loop, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return all(
                _owned_target(g.target) or self.iterable_bounded(g.iter, scope)
                for g in loop.generators
            )
        return False

    def loop_over_data(self, loop: ast.AST, scope: Scope) -> bool:
        """Evidence that a loop runs once per item of data (what the fan-out rules ask for
        before they report, beside `loop_bounded`'s no): an ``async for`` over a stream; a
        ``for`` over what the function was handed, computed or received (see
        `_data_iterable`); a ``while`` that takes its next item from a queue, socket or
        collection (``await queue.get()``, ``sock_accept``, ``popleft()``). A loop over the
        object's own collections (``self._handlers``, ``self.connectors.values()``) or over
        module constants is over what the program registered or configured: no evidence."""
        if isinstance(loop, ast.AsyncFor):
            return not self.asks_for_a_count
        if isinstance(loop, ast.For):
            return self.fan_out_over_data(loop.iter, scope)
        if isinstance(loop, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return any(
                (g.is_async and not self.asks_for_a_count) or self.fan_out_over_data(g.iter, scope)
                for g in loop.generators
            )
        if isinstance(loop, ast.While):
            return any(
                isinstance(node, ast.Call) and last_name(node.func) in _RECEIVES
                for node in own_nodes(loop.body)
            )
        return False

    def fan_out_over_data(self, node: ast.expr, scope: Scope) -> bool:
        """The fan-out rules' evidence that iterating ``node`` runs once per item of data:
        `iterable_over_data`, or in a test file only a count written large (`counted_large`).
        A test's data is what the test made (two files written to a temporary directory, the
        indexes its fixtures created, a parametrized pair): sized by the test, not by
        production, unless it says otherwise (``for _ in range(1000)``)."""
        if self.asks_for_a_count:
            return self.counted_large(node, scope)
        return self.iterable_over_data(node, scope)

    def counted_large(self, node: ast.expr, scope: Scope, seen: int = 0) -> bool:
        """Whether iterating ``node`` yields more than `SMALL_RANGE` items by a count the code
        writes: ``range(1000)`` (also through a constant name, ``enumerate``, ``zip``, a
        comprehension, the results of ``await gather(*[... for _ in range(1000)])``, or a list
        filled in such a loop)."""
        if seen > 6:
            return False
        again = seen + 1
        if isinstance(node, ast.Await):
            call = node.value
            return (
                isinstance(call, ast.Call)
                and last_name(call.func) == "gather"
                and any(
                    self.counted_large(a.value, scope, again)
                    for a in call.args
                    if isinstance(a, ast.Starred)
                )
            )
        if isinstance(node, ast.Call):
            name = last_name(node.func)
            if isinstance(node.func, ast.Attribute):
                return name in _VIEWS and self.counted_large(node.func.value, scope, again)
            if name == "range":
                count = self._range_count(node, scope)
                return count is not None and count > SMALL_RANGE
            items = node.args[1:] if name in ("map", "filter") else node.args
            if name == "zip":
                return bool(items) and all(self.counted_large(a, scope, again) for a in items)
            if name in _SAME_SIZE or name in ("map", "filter", "chain"):
                return any(self.counted_large(a, scope, again) for a in items)
            return False
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return any(self.counted_large(g.iter, scope, again) for g in node.generators)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return any(
                self.counted_large(e.value, scope, again)
                for e in node.elts
                if isinstance(e, ast.Starred)
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.counted_large(node.left, scope, again) or self.counted_large(
                node.right, scope, again
            )
        if not isinstance(node, ast.Name):
            return False
        binding = _binding(node.id, scope)
        if binding is None:
            return False
        owner, iterables, values = binding
        return any(self.counted_large(i, owner, again) for i in iterables) or any(
            self._filled_in_counted_loop(node.id, owner, again)
            if is_empty_collection(v)
            else self.counted_large(v, owner, again)
            for v in values
        )

    def _filled_in_counted_loop(self, name: str, scope: Scope, seen: int) -> bool:
        """``tasks = []`` then ``tasks.append(...)`` in ``for _ in range(1000)``."""
        for _, blocks in scope.appends.get(name, ()):
            for kind, loop in blocks:
                if kind != LOOP:
                    continue
                if isinstance(loop, ast.For) and self.counted_large(loop.iter, scope, seen):
                    return True
                if isinstance(
                    loop, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
                ) and self.counted_large(loop, scope, seen):
                    return True
        return False

    def _range_count(self, call: ast.Call, scope: Scope) -> int | None:
        """How many items ``range(...)`` yields when its arguments are integers the code
        writes (literals or names bound once to one), else None."""
        numbers: list[int] = []
        for arg in call.args:
            value = self._int_constant(arg, scope)
            if value is None:
                return None
            numbers.append(value)
        return _count_of_range(numbers)

    def _int_constant(self, node: ast.expr, scope: Scope, seen: int = 0) -> int | None:
        """The integer ``node`` always is: a literal, a name bound once to one, or arithmetic
        of those (``10**3``, ``2 * N``, ``-5``); else None."""
        if seen > 6:
            return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self._int_constant(node.operand, scope, seen + 1)
            return None if value is None else -value
        if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITHMETIC_OPS):
            left = self._int_constant(node.left, scope, seen + 1)
            right = self._int_constant(node.right, scope, seen + 1)
            if left is None or right is None:
                return None
            return _arithmetic(node.op, left, right)
        if isinstance(node, ast.Constant):
            number = node.value
            return number if isinstance(number, int) and not isinstance(number, bool) else None
        binding = _binding(node.id, scope) if isinstance(node, ast.Name) else None
        if binding is None:
            return None
        owner, iterables, values = binding
        if iterables or len(values) != 1:
            return None
        return self._int_constant(values[0], owner, seen + 1)

    def iterable_over_data(self, node: ast.expr, scope: Scope, seen: int = 0) -> bool:
        """Whether an iterable is data: a parameter (or an attribute of one, ``data.ids``),
        a call's or an ``await``'s result, a local computed from those; not ``self.x`` /
        ``cls.x`` (the object's own registry), not a module constant, not a test function's
        parameter (a fixture or a parametrized value, sized by the test)."""
        if seen > 6:
            return False
        again = seen + 1
        if isinstance(node, ast.Await):
            return not registrations_query(node.value)
        if isinstance(node, ast.Call):
            if registrations_query(node):
                return False
            function = scope.function()
            owner = function.cls if function is not None else None
            if owner is not None and returns_class_state(self.facts, node, owner):
                return False  # `self.get_link_fields()`: the class's schema or its registry
            name = last_name(node.func)
            if self.resolve(node.func) in _CASTS and len(node.args) == 2:
                # `cast(T, x)` hands back `x` itself: what it is decides
                return self.iterable_over_data(node.args[1], scope, again)
            if isinstance(node.func, ast.Attribute) and name in _VIEWS:
                return self.iterable_over_data(node.func.value, scope, again)
            if isinstance(node.func, ast.Name) and name in _SAME_SIZE | _ITERATING:
                items = node.args[1:] if name in ("map", "filter") else node.args
                return bool(items) and all(self.iterable_over_data(a, scope, again) for a in items)
            return True  # what a call returns: a query's rows, a listing, a parse
        if isinstance(node, ast.Attribute | ast.Subscript):
            root: ast.expr = node
            while isinstance(root, ast.Attribute | ast.Subscript):
                root = root.value
            if isinstance(root, ast.Name) and root.id in ("self", "cls"):
                return False
            if isinstance(root, ast.Name) and self._built_from_constants(root, scope):
                return False  # `held = Held("a", "b")`, `held.started`: the object's own
            return self.iterable_over_data(root, scope, again)
        if isinstance(node, ast.BinOp):
            return self.iterable_over_data(node.left, scope, again) or self.iterable_over_data(
                node.right, scope, again
            )
        if isinstance(node, ast.BoolOp):
            return any(self.iterable_over_data(v, scope, again) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.iterable_over_data(node.body, scope, again) or self.iterable_over_data(
                node.orelse, scope, again
            )
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return any(
                bool(g.is_async) or self.iterable_over_data(g.iter, scope, again)
                for g in node.generators
            )
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return any(
                self.iterable_over_data(e.value, scope, again)
                for e in node.elts
                if isinstance(e, ast.Starred)
            )
        if not isinstance(node, ast.Name):
            return False
        current: Scope | None = scope
        while current is not None:
            iterables = current.for_targets.get(node.id)
            if iterables:
                return any(self.iterable_over_data(i, current, again) for i in iterables)
            values = current.assigns.get(node.id)
            if values:
                if current is not scope and self._module_registry(node.id, current, values):
                    return False
                # An empty collection the function fills (`rows = []` then appends): its size
                # is what the filling loop gives, which the fan-out rules judge at that loop.
                return any(
                    is_empty_collection(v) or self.iterable_over_data(v, current, again)
                    for v in values
                )
            if node.id in current.params:
                function = current.function()
                if self._services_annotation(current.params[node.id]):
                    return False  # `checks: list[HealthCheck]`: the program's I/O objects
                if self._command_line_parameter(node.id, current):
                    return False  # `wait pod/a pod/b`: what a user typed, a handful
                return not (function is not None and function.name.startswith("test"))
            if current.is_function and _unpacked(node.id, current):
                return True  # `done, pending = await asyncio.wait(...)`: a result
            current = current.parent
        return False

    def _module_registry(self, name: str, owner: Scope, values: list[ast.expr]) -> bool:
        """A module-level collection created empty and filled only by the file's functions,
        one item per call (``_hooks: set[Hook] = set()``, ``_hooks.add(hook)`` in the
        decorator that registers a hook): the program's registrations, as ``self._listeners``
        is the object's. A collection filled at import, in a loop or by ``extend``/``update``
        (many items at once) is not read so."""
        if owner is not self.facts.module or not all(is_empty_collection(v) for v in values):
            return False
        fillers = [
            blocks
            for scope in self.facts.functions
            for blocks in (b for _, b in scope.appends.get(name, ()))
        ]
        if not fillers or self.facts.module.appends.get(name):
            return False
        if any(kind == LOOP for blocks in fillers for kind, _ in blocks):
            return False
        for node in ast.walk(self.facts.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("extend", "update", "__ior__")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == name
            ) or (
                isinstance(node, ast.AugAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == name
            ):
                return False
        return True

    def _built_from_constants(self, name: ast.Name, scope: Scope) -> bool:
        """A local bound only to instances of a class (a capitalised callee) built from
        literal arguments: its collections are its own, sized by those literals and its
        code, not data the function received."""
        if name.id in scope.params:
            return False
        values = scope.assigns.get(name.id)
        if not values:
            return False
        for value in values:
            if not isinstance(value, ast.Call):
                return False
            callee = (last_name(value.func) or "").lstrip("_")
            if not callee[:1].isupper():
                return False
            given = [*value.args, *(k.value for k in value.keywords)]
            if not all(isinstance(a, ast.Constant) for a in given):
                return False
        return True

    def _command_line_parameter(self, name: str, function: Scope) -> bool:
        """A parameter of a command-line command (typer's ``resources: list[str] =
        typer.Argument(...)``, also in ``Annotated``; a function under click's
        ``@click.argument``/``@click.option``): the values a user types on one command line,
        sized by a person at a prompt, not by data the program reads."""
        if any(
            isinstance(d, ast.Call) and self.resolve(d.func) in _COMMAND_LINE_DECORATORS
            for d in function.decorators
        ):
            return True
        default = parameter_defaults(function.node).get(name)
        if default is not None and self._declares_command_line(default):
            return True
        annotation = parsed_annotation(function.params.get(name))
        return (
            isinstance(annotation, ast.Subscript)
            and self.resolve(annotation.value) in _ANNOTATED
            and isinstance(annotation.slice, ast.Tuple)
            and any(self._declares_command_line(e) for e in annotation.slice.elts[1:])
        )

    def _declares_command_line(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Call) and self.resolve(node.func) in _COMMAND_LINE_PARAMETERS

    def _services_annotation(self, annotation: ast.expr | None) -> bool:
        """A parameter annotated as a collection of a class defined in this file that has
        ``async def`` methods (``checks: List[HealthCheck]``): objects that do the program's
        I/O (checks, clients, connections), which the program built and configured, not
        records of data (those carry no coroutines)."""
        annotation = parsed_annotation(annotation)
        if not isinstance(annotation, ast.Subscript):
            return False
        for inner in ast.walk(annotation.slice):
            name = last_name(inner) if isinstance(inner, ast.Name | ast.Attribute) else None
            if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                name = inner.value
            methods = self.facts.methods.get(name or "")
            if methods and any(method.kind == ASYNC for method in methods.values()):
                return True
        return False

    def _test_compares_len(self, test: ast.expr, scope: Scope) -> bool:
        """A loop condition that is a predicate of this file comparing a ``len(...)``
        (``while self._can_spawn():`` returning ``len(self._running) < self._limit``), read
        one call level down: the bound is in the loop's condition, under another name."""
        calls = [n for n in ast.walk(test) if isinstance(n, ast.Call)]
        for call in calls:
            for callee in self.callees(call.func, scope):
                body = getattr(callee.node, "body", [])
                for node in own_nodes(body if isinstance(body, list) else []):
                    if (
                        isinstance(node, ast.Return)
                        and node.value is not None
                        and _compares_len(node.value)
                    ):
                        return True
        return False

    # -- where ---------------------------------------------------------------------------

    def in_async(self, site: Site) -> bool:
        """Directly inside ``async def`` (not in a nested ``def``, ``lambda`` or class)."""
        return site.scope.kind == ASYNC

    @staticmethod
    def in_main_block(site: Site) -> bool:
        """Inside ``if __name__ == "__main__":`` (the site's scope or one around it)."""
        scope: Scope | None = site.scope
        blocks: tuple[Block, ...] = site.blocks
        while scope is not None:
            if any(kind == MAIN for kind, _ in blocks):
                return True
            blocks = scope.def_blocks
            scope = scope.parent
        return False

    def guarded_by(self, site: Site) -> Iterator[tuple[str, ast.AST]]:
        """The ``if``/``else``/``try`` blocks around a site, in its scope and the ones around
        it (a function defined under ``if sys.version_info < ...`` is guarded too)."""
        scope: Scope | None = site.scope
        blocks: tuple[Block, ...] = site.blocks
        while scope is not None:
            for kind, node in reversed(blocks):
                if kind in (IF, ELSE, TRY) or kind == "except":
                    yield kind, node
            blocks = scope.def_blocks
            scope = scope.parent

    def inner_loop(self, site: Site) -> ast.AST | None:
        """The innermost loop around the site within its scope."""
        for kind, node in reversed(site.blocks):
            if kind == LOOP:
                return node
        return None


def _nested_in(inner: Scope, outer: Scope) -> bool:
    """Whether ``inner`` is defined inside ``outer`` (at any depth)."""
    parent = inner.parent
    while parent is not None:
        if parent is outer:
            return True
        parent = parent.parent
    return False


def _unpacked(name: str, scope: Scope) -> bool:
    """Whether a function binds ``name`` by unpacking (``a, b = ...``), which `Scope.assigns`
    does not record."""
    body = getattr(scope.node, "body", [])
    return any(
        isinstance(node, ast.Assign)
        and any(
            isinstance(t, ast.Tuple | ast.List)
            and any(isinstance(e, ast.Name) and e.id == name for e in ast.walk(t))
            for t in node.targets
        )
        for node in own_nodes(body if isinstance(body, list) else [])
    )


def _owned_target(target: ast.expr) -> bool:
    """A loop variable that names one of the program's resources (``for broker_id in ...``)."""
    return any(owned(n.id) for n in ast.walk(target) if isinstance(n, ast.Name))


def parameter_defaults(node: ast.AST) -> dict[str, ast.expr]:
    """A function's parameters that have a default, by name (none for what is no function)."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return {}
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    # the last positional parameters are those with defaults; keyword-only ones pair one to one
    with_defaults = positional[len(positional) - len(arguments.defaults) :]
    defaults = {a.arg: d for a, d in zip(with_defaults, arguments.defaults, strict=True)}
    defaults.update(
        (a.arg, d)
        for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
        if d is not None
    )
    return defaults


def parsed_annotation(annotation: ast.expr | None) -> ast.expr | None:
    """An annotation as an expression: a string one (``"ClusterNode"``) parsed, None when
    there is none or it does not parse."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            return ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    return annotation


def _owned_annotation(annotation: ast.expr | None) -> bool:
    """Whether a parameter's annotation names a collection of the program's resources
    (``Dict[str, "ClusterNode"]``, ``list[Listener]``)."""
    annotation = parsed_annotation(annotation)
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant):
            name = node.value
        elif isinstance(node, ast.Name | ast.Attribute):
            name = last_name(node)
        else:
            continue
        if isinstance(name, str) and name.isidentifier() and owned(name):
            return True
    return False


def _compares_len(test: ast.expr) -> bool:
    """Whether a condition compares a ``len(...)`` (``while len(pending) >= limit``)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Call) and last_name(side.func) == "len":
                    return True
    return False
