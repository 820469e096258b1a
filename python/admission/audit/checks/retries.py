"""ADM401, ADM402: retries that storm.

ADM401: a retry loop (a loop around ``try``/``except`` that sleeps before trying again) whose
delay has no randomness, tenacity's ``wait_exponential``/``wait_fixed``/... with no random
wait added, backoff's ``jitter=None``, redis-py's ``ConstantBackoff``/``ExponentialBackoff``.
ADM402: a ``while True`` retry loop with neither an attempt count nor a deadline.
Both ask for a retry's evidence: ADM401 (in a handler) a loop that ends when the attempt
works, (outside the handlers) one whose exit the attempt's outcome takes, not only its
owner's switch or the clock; ADM402 also an attempt that reaches a dependency and a loop
that ends whenever it works.
A delay computed by a helper of the same file is read through one call level.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from admission.audit.checks.context import (
    OWN_LOOP_ENDS,
    Context,
    continues,
    leaves_after,
    own_nodes,
    words,
)
from admission.audit.names import dotted, last_name
from admission.audit.walk import ASYNC, ELSE, HANDLER, IF, LAMBDA, LOOP, TRY, WITH, Scope, Site

__all__ = ["check_backoff_policy", "check_forever_loop", "check_sleep"]

SLEEPS = frozenset(
    {
        "time.sleep",
        "asyncio.sleep",
        "trio.sleep",
        "anyio.sleep",
        "gevent.sleep",
        "eventlet.sleep",
        "asyncio.tasks.sleep",
    }
)
_RANDOM_MODULES = ("random.", "secrets.", "numpy.random.", "np.random.")
_RANDOM_WORDS = frozenset(
    {
        "random",
        "rand",
        "jitter",
        "jittered",
        "uniform",
        "randint",
        "randrange",
        "gauss",
        "triangular",
        "expovariate",
        "betavariate",
        "normalvariate",
        "choice",
        "shuffle",
    }
)
# calls that only reshape a number: no randomness, nothing hidden
_ARITHMETIC = frozenset({"min", "max", "float", "int", "round", "abs", "pow", "sum"})

_TENACITY_ENTRIES = frozenset(
    {
        "tenacity.retry",
        "tenacity.Retrying",
        "tenacity.AsyncRetrying",
        "tenacity.asyncio.AsyncRetrying",
        "tenacity.retry_base",
    }
)
_TENACITY_FIXED = frozenset(
    {
        "wait_exponential",
        "wait_fixed",
        "wait_incrementing",
        "wait_chain",
        "wait_combine",
        "wait_none",
    }
)
_TENACITY_RANDOM = frozenset(
    {"wait_random", "wait_random_exponential", "wait_exponential_jitter", "wait_full_jitter"}
)
_BACKOFF_DECORATORS = frozenset({"backoff.on_exception", "backoff.on_predicate"})
_REDIS_FIXED = frozenset(
    {
        "redis.backoff.ConstantBackoff",
        "redis.backoff.ExponentialBackoff",
        "redis.asyncio.backoff.ConstantBackoff",
        "redis.asyncio.backoff.ExponentialBackoff",
    }
)
# names in a condition that say "attempt count" or "deadline"
_BOUND_WORDS = frozenset(
    {
        "attempt",
        "attempts",
        "retry",
        "retries",
        "tries",
        "try",
        "count",
        "counter",
        "deadline",
        "timeout",
        "elapsed",
        "remaining",
        "max",
        "limit",
        "budget",
        "until",
        "expires",
        "expiry",
        "left",
        "n",
        "i",
        "num",
        "times",
        "giveup",
        "give",
        "stop",
        "end",
        "time",
    }
)
_TIMEOUT_CONTEXTS = frozenset(
    {"timeout", "timeout_at", "fail_after", "fail_at", "move_on_after", "move_on_at"}
)


def _is_random(ctx: Context, node: ast.expr, scope: Scope, depth: int = 0) -> bool:
    """Whether a delay expression draws on randomness, or on something this file cannot
    see into (an unknown call is given the benefit of the doubt)."""
    if depth > 3:
        return False
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            resolved = ctx.resolve(inner.func) or ""
            name = last_name(inner.func) or ""
            if resolved.startswith(_RANDOM_MODULES) or any(w in _RANDOM_WORDS for w in words(name)):
                return True
            if name in _ARITHMETIC or resolved.startswith("math."):
                continue
            callees = ctx.callees(inner.func, scope)
            if not callees:
                return True  # a helper from elsewhere: cannot tell
            for callee in callees:
                body = getattr(callee.node, "body", [])
                statements = body if isinstance(body, list) else [body]
                if any(
                    _is_random(ctx, s.value, callee, depth + 1)
                    for s in statements
                    if isinstance(s, ast.Return) and s.value is not None
                ) or any(_random_call(ctx, n) for s in statements for n in ast.walk(s)):
                    return True
        elif isinstance(inner, ast.Name | ast.Attribute):
            name = last_name(inner) or ""
            if any(w in _RANDOM_WORDS for w in words(name)):
                return True
            if isinstance(inner, ast.Name):
                for value in scope.assigns.get(inner.id, ()):
                    if value is not node and _is_random(ctx, value, scope, depth + 1):
                        return True
                if _randomised_in_place(ctx, inner.id, scope, depth):
                    return True
                if any(
                    value is not node and _is_random(ctx, value, scope, depth + 1)
                    for value in _unpacked_values(inner.id, scope)
                ):
                    return True
    return False


def _unpacked_values(name: str, scope: Scope) -> list[ast.expr]:
    """What a tuple assignment of the function binds ``name`` to: the matching element of a
    tuple display (``attempts, delay = 0, 1.0``), else the whole value, a call that computes
    several things at once (``misses, delay = backoff_of(misses)``), read as the delay's
    source (`Scope.assigns` does not record unpacking)."""
    body = getattr(scope.node, "body", [])
    found: list[ast.expr] = []
    for node in own_nodes(body if isinstance(body, list) else []):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if not isinstance(target, ast.Tuple | ast.List):
                continue
            names = [e.id if isinstance(e, ast.Name) else None for e in target.elts]
            if name not in names:
                continue
            value = node.value
            if (
                isinstance(value, ast.Tuple | ast.List)
                and len(value.elts) == len(names)
                and not any(isinstance(e, ast.Starred) for e in [*value.elts, *target.elts])
            ):
                found.append(value.elts[names.index(name)])
            else:
                found.append(value)
    return found


def _randomised_in_place(ctx: Context, name: str, scope: Scope, depth: int) -> bool:
    """``delay *= 1 + random.random() * f`` somewhere in the function (under an ``if
    jitter:`` too): the delay is jittered whenever that branch runs."""
    body = getattr(scope.node, "body", [])
    return any(
        isinstance(node, ast.AugAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == name
        and _is_random(ctx, node.value, scope, depth + 1)
        for node in own_nodes(body if isinstance(body, list) else [])
    )


def _random_call(ctx: Context, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    resolved = ctx.resolve(node.func) or ""
    name = last_name(node.func) or ""
    return resolved.startswith(_RANDOM_MODULES) or any(w in _RANDOM_WORDS for w in words(name))


def _exits(statements: list[ast.stmt], ignored: frozenset[int] | set[int] = frozenset()) -> bool:
    """Whether a statement list leaves the loop on some path (``break``/``return``),
    not counting nested loops and functions, nor the exits whose ids are ``ignored``."""
    return any(id(node) not in ignored for node in _exit_statements(statements))


def _exit_statements(statements: list[ast.stmt]) -> list[ast.Break | ast.Return]:
    """The ``break``/``return`` statements that leave the loop, not those of nested loops
    and functions."""
    found: list[ast.Break | ast.Return] = []
    stack: list[ast.AST] = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Break | ast.Return):
            found.append(node)
            continue
        if isinstance(
            node,
            ast.For
            | ast.AsyncFor
            | ast.While
            | ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.ClassDef
            | ast.Lambda,
        ):
            continue
        if isinstance(node, ast.stmt):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _tries(statements: list[ast.stmt]) -> list[ast.Try]:
    """The ``try`` statements of a loop body (also under ``if``/``with``, not in inner
    loops or functions)."""
    found: list[ast.Try] = []
    stack: list[ast.stmt] = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            found.append(node)  # type: ignore[arg-type]
            stack.extend(node.body)  # type: ignore[attr-defined]
        elif isinstance(node, ast.If):
            stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.With | ast.AsyncWith):
            stack.extend(node.body)
    return found


def _exits_when_done(
    loop: ast.AST, attempt: ast.Try, owner: set[int] | frozenset[int] = frozenset()
) -> bool:
    """An exit after the attempt's work in the ``try``, in its ``else``, or after it in the
    loop body (`try: ... except: continue` then `break`), other than the exits in ``owner``
    (those the owner's switch or the clock take, not the attempt's outcome: `_owner_exits`)."""
    body = getattr(loop, "body", [])
    if _exits_after_work(attempt.body, owner) or _exits(attempt.orelse, owner):
        return True
    return attempt in body and _exits(body[body.index(attempt) + 1 :], owner)


# clock readings: an exit under a test of them is a deadline, not the attempt's success
_CLOCK_CALLS = frozenset(
    {"time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "now", "utcnow"}
)


def _owner_exits(loop: ast.AST) -> set[int]:
    """The ids of the loop's exits (``break``/``return``) that its owner's switches or the
    clock take, not the attempt's outcome: an exit under tests of nothing a round changes
    alone (``if not self._keep_alive: break``, ``if self._keep_alive: sleep(10) else:
    break``, ``if time.time() - start > duration: break``), or in a branch of such a test
    whose other branch goes round (``if self._keep_alive: ...; continue`` / ``else:
    break``: whatever the round did, the switch decides whether the loop lives on). Such an
    exit ends a worked round and a failed one alike: the loop's work is periodic, stopped by
    its owner or its deadline, and a pause that a worked round takes too is the period, not
    the wait before trying again. An exit under a test of what the round computed (``if
    r.ok: return``, ``if done: break``), of a call's answer (``if await ready(): break``),
    or under no test at all ends the loop on success: a retry, or a readiness poll."""
    changed = _names_changed_in(loop)
    called = _objects_called_in(loop)
    owner: set[int] = set()
    for node, guards in _guarded_exits(getattr(loop, "body", []), []):
        fixed = [not _reads_the_round(test, changed, called) for test, _ in guards]
        if (guards and all(fixed)) or any(
            unchanged and _ends_with_continue(other)
            for unchanged, (_, other) in zip(fixed, guards, strict=True)
        ):
            owner.add(id(node))
    return owner


def _ends_with_continue(statements: list[ast.stmt]) -> bool:
    return bool(statements) and isinstance(statements[-1], ast.Continue)


def _names_changed_in(loop: ast.AST) -> set[str]:
    """What the loop binds: its targets (a ``for``'s too), ``with ... as``, ``except ... as``,
    walrus and augmented assignments, as dotted text (``r``, ``self.done``; the container of
    an item assigned)."""
    changed: set[str] = set()
    targets: list[ast.expr] = []
    if isinstance(loop, ast.For | ast.AsyncFor):
        targets.append(loop.target)
    for node in own_nodes(getattr(loop, "body", [])):
        if isinstance(node, ast.Assign):
            targets.extend(node.targets)
        elif isinstance(
            node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr | ast.For | ast.AsyncFor
        ):
            targets.append(node.target)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets.append(node.optional_vars)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            changed.add(node.name)
    while targets:
        target = targets.pop()
        if isinstance(target, ast.Tuple | ast.List):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred | ast.Subscript):
            targets.append(target.value)  # `self.errors[kind] = n` changes `self.errors`
        else:
            text = dotted(target)
            if text is not None:
                changed.add(text)
    return changed


# words of an attribute that holds an attempt's outcome, which a method of its object sets
# (`self.connect()` then `if self.connected: break`), unlike an owner's switch (`keep_alive`)
_OUTCOME_WORDS = frozenset(
    {"authenticated", "available", "complete", "completed", "connected", "done", "established"}
    | {"finished", "healthy", "logged", "ok", "ready", "response", "result", "status"}
    | {"succeeded", "success", "successful"}
)


def _objects_called_in(loop: ast.AST) -> set[str]:
    """The objects whose methods the loop calls (``self`` for ``self.connect()``), as
    dotted text: such a method may set the object's attributes."""
    called: set[str] = set()
    for node in own_nodes(getattr(loop, "body", [])):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            text = dotted(node.func.value)
            if text is not None:
                called.add(text)
    return called


def _reads_the_round(test: ast.expr, changed: set[str], called: set[str]) -> bool:
    """Whether a test reads what a round produced: a call's answer (not a clock's), a name
    the loop binds, or an outcome of an object whose method the loop calls (``if
    self.connected`` after ``self.connect()``)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Await):
            return True
        if isinstance(node, ast.Call) and last_name(node.func) not in _CLOCK_CALLS:
            return True
        if isinstance(node, ast.Name | ast.Attribute) and dotted(node) in changed:
            return True
        if (
            isinstance(node, ast.Attribute)
            and dotted(node.value) in called
            and any(word in _OUTCOME_WORDS for word in words(node.attr))
        ):
            return True
    return False


def _guarded_exits(
    statements: list[ast.stmt], guards: list[tuple[ast.expr, list[ast.stmt]]]
) -> Iterator[tuple[ast.Break | ast.Return, list[tuple[ast.expr, list[ast.stmt]]]]]:
    """The loop's own exits (not those of nested loops and functions), each with the ``if``
    tests it is under and, for each, the branch it is not in."""
    for statement in statements:
        if isinstance(statement, ast.Break | ast.Return):
            yield statement, guards
        elif isinstance(statement, ast.If):
            test = statement.test
            yield from _guarded_exits(statement.body, [*guards, (test, statement.orelse)])
            yield from _guarded_exits(statement.orelse, [*guards, (test, statement.body)])
        elif isinstance(statement, ast.Match):
            for case in statement.cases:
                yield from _guarded_exits(case.body, [*guards, (statement.subject, [])])
        elif not isinstance(statement, OWN_LOOP_ENDS):
            for field in ("body", "orelse", "finalbody"):
                yield from _guarded_exits(getattr(statement, field, []), guards)
            for handler in getattr(statement, "handlers", []):
                yield from _guarded_exits(handler.body, guards)


def _succeeds(loop: ast.AST, attempt: ast.Try) -> bool:
    """Whether the loop ends once the attempt works: an exit after its work in the ``try``,
    in its ``else``, after it in the loop body (`try: ... except: continue` then `break`), or
    a ``while`` condition the attempt clears (`while not done:` ... `done = True`)."""
    if _exits_when_done(loop, attempt):
        return True
    if isinstance(loop, ast.While):
        condition = {
            dotted(n) for n in ast.walk(loop.test) if isinstance(n, ast.Name | ast.Attribute)
        }
        return any(
            text in condition
            for node in own_nodes([*attempt.body, *attempt.orelse])
            for text in _assigned(node)
        )
    return False


def _assigned(node: ast.AST) -> list[str | None]:
    """What an assignment binds, also through unpacking (`transport, _ = await connect()`)
    and annotations (`done: bool = True`)."""
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
        targets = [node.target]
    else:
        return []
    texts: list[str | None] = []
    while targets:
        target = targets.pop()
        if isinstance(target, ast.Tuple | ast.List):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        else:
            texts.append(dotted(target))
    return texts


# Words of an exception type that say a dependency failed: the transport, a timeout, the
# remote side's refusal or overload.
_REMOTE_ERROR_WORDS = frozenset(
    {
        "connection",
        "connect",
        "conn",
        "comm",
        "timeout",
        "timed",
        "network",
        "transport",
        "unavailable",
        "remote",
        "http",
        "request",
        "response",
        "server",
        "service",
        "socket",
        "os",
        "io",
        "broken",
        "refused",
        "reset",
        "closed",
        "disconnect",
        "disconnected",
        "throttled",
        "throttling",
        "rate",
        "busy",
        "retry",
        "retryable",
        "transient",
        "temporary",
        "overloaded",
        "conflict",
        "operational",
        "operation",
        "failure",
        "api",
        "client",
        "rpc",
        "channel",
        "broker",
        "lock",
        "locked",
        "deadlock",
        "not",
        "leader",
        "coordinator",
        "unreachable",
        "database",
        "db",
    }
)
_CATCH_ALL = frozenset({"Exception", "BaseException"})
# Calls in the attempt that reach a dependency (beside anything awaited).
_REMOTE_CALL_WORDS = frozenset(
    {
        "connect",
        "send",
        "sendall",
        "request",
        "execute",
        "commit",
        "query",
        "fetch",
        "publish",
        "post",
        "put",
        "get",
        "call",
        "invoke",
        "urlopen",
        "recv",
        "receive",
        "open",
        "login",
        "ping",
        "lock",
        "acquire",
        "create",
        "delete",
        "update",
        "insert",
        "upload",
        "download",
        "subscribe",
        "watch",
    }
)


def _catches_remote_error(attempt: ast.Try) -> bool:
    """A handler of a transport, timeout or remote error, or of any ``Exception``."""
    for handler in attempt.handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for kind in types:
            name = last_name(kind) or ""
            if name in _CATCH_ALL or any(w in _REMOTE_ERROR_WORDS for w in words(name)):
                return True
    return False


def _reaches_dependency(attempt: ast.Try, *, in_coroutine: bool = False) -> bool:
    """Evidence that the attempt retries a dependency: a handler of a transport, timeout or
    remote error (or of any ``Exception``), or an attempt that awaits something or calls
    what reaches a service (``send``, ``execute``, ``connect``, ...). A loop going round
    after ``ValueError`` from ``full.index(...)``, or after a device's or a TLS object's
    own error from a plain call, is stepping through something local. In a coroutine
    (``in_coroutine``) a call that reaches a service is awaited: an attempt that awaits
    nothing is a local step whatever its method is called (``transitions.connect()`` of a
    state machine)."""
    if _catches_remote_error(attempt):
        return True
    for node in own_nodes(attempt.body):
        if isinstance(node, ast.Await):
            return True
        if isinstance(node, ast.Call) and not in_coroutine:
            name = last_name(node.func) or ""
            if any(w in _REMOTE_CALL_WORDS for w in words(name)):
                return True
    return False


def _ends_with_exit(statements: list[ast.stmt]) -> bool:
    """Whether a statement list ends by leaving the loop (``break``/``return`` as its last
    statement, also as the last of a ``with`` block it ends with)."""
    while statements:
        last = statements[-1]
        if isinstance(last, ast.Break | ast.Return):
            return True
        if not isinstance(last, ast.With | ast.AsyncWith):
            return False
        statements = last.body
    return False


def _leaves_when_done(loop: ast.AST, attempt: ast.Try) -> bool:
    """Whether the loop ends whenever the attempt works: the ``try`` body (or its ``else``)
    ends with ``break``/``return``, or the loop body does right after the ``try``. A loop
    that only leaves on some rounds (`if not message: break`) reads on after a success."""
    body = getattr(loop, "body", [])
    if _ends_with_exit(attempt.body) or _ends_with_exit(attempt.orelse):
        return True
    if attempt in body:
        return _ends_with_exit(body[body.index(attempt) + 1 :])
    return False


def _stops_on_success(loop: ast.AST) -> bool:
    """Whether some attempt of the loop ends it when it works (a retry); a loop that goes
    round after a success too (a reader, a consumer, a service loop) only pauses after its
    failures."""
    return any(_succeeds(loop, attempt) for attempt in _tries(getattr(loop, "body", [])))


def _retry_loop(
    ctx: Context, loop: ast.AST, scope: Scope, *, dependency: bool = False, by_outcome: bool = False
) -> bool:
    """A loop whose body tries something, leaves the loop when it works and goes round
    again when it fails (``dependency``: and the attempt shows it reaches a dependency, see
    `_reaches_dependency`, and the loop ends whenever it works, see `_leaves_when_done`;
    ``by_outcome``: and that exit is taken by the attempt's outcome, see `_owner_exits`)."""
    owner: set[int] | frozenset[int] | None = None if by_outcome else frozenset()
    for attempt in _tries(getattr(loop, "body", [])):
        retries = any(
            _goes_round(loop, attempt, h)
            and not _interruption(h)
            and not _bad_item(h)
            and not _waits_for_signal(loop, h)
            and not _resumes(ctx, h, scope)
            and not _polls_for_one_code(loop, h)
            and not _ends_in_no_return(ctx, h, scope)
            for h in attempt.handlers
        )
        if not retries:
            continue
        if owner is None:
            owner = _owner_exits(loop)  # once per loop, and only for a loop that retries
        if not _exits_when_done(loop, attempt, owner) or _rewaits(loop, attempt):
            continue
        in_coroutine = scope.kind == ASYNC
        if not dependency or (
            _reaches_dependency(attempt, in_coroutine=in_coroutine)
            and _leaves_when_done(loop, attempt)
        ):
            return True
    return False


def _ends_in_no_return(ctx: Context, handler: ast.ExceptHandler, scope: Scope) -> bool:
    """The handler ends by calling a function of this file annotated ``-> NoReturn`` (or
    ``Never``): it always raises, so no failure goes round (``except OSError as exc:
    self._convert_error(exc)``)."""
    if not handler.body or not isinstance(handler.body[-1], ast.Expr):
        return False
    call = handler.body[-1].value
    if isinstance(call, ast.Await):
        call = call.value
    if not isinstance(call, ast.Call):
        return False
    name = last_name(call.func) or ""
    definitions: list[Scope] = []
    if isinstance(call.func, ast.Attribute) and dotted(call.func.value) in ("self", "cls"):
        function = scope.function()
        cls = function.cls if function is not None else None
        method = ctx.facts.methods.get(cls.name, {}).get(name) if cls is not None else None
        # else inherited from a class of this file (a mixin's helper): every definition of
        # that name must be one that never returns
        definitions = [method] if method is not None else ctx.facts.methods_by_name.get(name, [])
    elif isinstance(call.func, ast.Name):
        definitions = ctx.facts.by_name.get(name, [])
    return bool(definitions) and all(_never_returns(d.node) for d in definitions)


def _never_returns(function: ast.AST) -> bool:
    returns = getattr(function, "returns", None)
    if isinstance(returns, ast.Constant) and isinstance(returns.value, str):
        return returns.value.rsplit(".", 1)[-1] in ("NoReturn", "Never")
    return returns is not None and last_name(returns) in ("NoReturn", "Never")


def _exits_after_work(
    statements: list[ast.stmt], ignored: frozenset[int] | set[int] = frozenset()
) -> bool:
    """Whether the attempt leaves the loop after doing its work: an exit that comes before
    every call of the attempt (`if stopped: break` ahead of the read) is the owner's stop
    signal, not the attempt's success, and a loop whose work never ends it is not a retry."""
    # `return False` hands back a failure (`if failures > allowed: return False`): a give-up,
    # not the attempt's success
    exits = [
        node
        for node in _exit_statements(statements)
        if id(node) not in ignored
        and not (
            isinstance(node, ast.Return)
            and isinstance(node.value, ast.Constant)
            and node.value.value is False
        )
    ]
    first_call = min(
        ((n.lineno, n.col_offset) for n in own_nodes(statements) if isinstance(n, ast.Call)),
        default=None,
    )
    if not exits or first_call is None:
        return bool(exits)
    return any(
        (node.lineno, node.col_offset) > first_call
        or (isinstance(node, ast.Return) and node.value is not None)
        for node in exits
    )


# Methods that wait for an object that already exists (a future, an event, a thread):
# trying them again waits longer for the same outcome, it makes no new attempt.
_WAITS = frozenset({"result", "exception", "wait", "join"})
_WAIT_FUNCTIONS = frozenset({"wait_for", "shield", "wait"})


def _rewaits(loop: ast.AST, attempt: ast.Try) -> bool:
    """Whether the attempt only waits again for something made before the loop
    (`while True: try: future.result(10); break except TimeoutError: log(...)`), also for
    the object's own event (`wait_for(self._speaking.wait(), timeout=delay)`: a dwell whose
    timeout is the expected way out, no call failed)."""
    made_in_loop = {
        dotted(target)
        for node in own_nodes(getattr(loop, "body", []))
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.NamedExpr)
        for assigned in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for target in ast.walk(assigned)
        if isinstance(target, ast.Name | ast.Attribute)
    }

    def existing(node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            text = dotted(node)
            return text is not None and text.startswith("self.") and text not in made_in_loop
        return isinstance(node, ast.Name) and node.id not in made_in_loop

    def waits_on_existing(node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _WAITS
            and existing(node.func.value)
        )

    waits = 0
    for node in own_nodes(attempt.body):
        if isinstance(node, ast.Await) and existing(node.value):
            waits += 1
        elif isinstance(node, ast.Call):
            func = node.func
            method_wait = waits_on_existing(node)
            function_wait = (
                last_name(func) in _WAIT_FUNCTIONS
                and bool(node.args)
                and (existing(node.args[0]) or waits_on_existing(node.args[0]))
            )
            if not (method_wait or function_wait):
                return False  # a new call: an attempt
            waits += 1
    return waits > 0


# Errors about the item at hand, not about the dependency: going round after one moves on to
# the next item (`except RecordTooLargeError: log(...)` in a consumer's iterator), trying the
# same item again would fail the same way.
_BAD_ITEM_WORDS = frozenset(
    {"large", "oversized", "malformed", "corrupt", "corrupted", "decode", "parse", "validation"}
)


def _bad_item(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return False
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return all(any(w in _BAD_ITEM_WORDS for w in words(last_name(t) or "")) for t in types)


# Exceptions that interrupt an operation without saying the dependency failed: going round
# again after one of these restarts the operation, it does not retry a failure.
_INTERRUPTIONS = frozenset(
    {
        "KeyboardInterrupt",
        "CancelledError",
        "InterruptedError",
        "BlockingIOError",
        "StopIteration",
        "StopAsyncIteration",
        "GeneratorExit",
        "SystemExit",
        "WouldBlock",
        # nor do lookups and programming errors: nothing transient to wait out
        "KeyError",
        "IndexError",
        "LookupError",
        "AttributeError",
        "TypeError",
        "NameError",
        "AssertionError",
        "NotImplementedError",
        "ZeroDivisionError",
        "UnicodeDecodeError",
    }
)


# A local queue with nothing in it yet, or no room yet (`queue.Empty`, `asyncio.QueueFull`,
# ...): going round again polls for data or room, as `await queue.get()` would wait for it;
# no dependency failed.
_NOT_YET = frozenset({"Empty", "Full", "QueueEmpty", "QueueFull"})


# A would-block: a non-blocking socket (or TLS object) has no data or room yet.
_WOULD_BLOCK = frozenset(
    {
        "BlockingIOError",
        "WouldBlock",
        "SSLWantReadError",
        "SSLWantWriteError",
        "WantReadError",
        "WantWriteError",
    }
)


def _nothing_yet(ctx: Context, handler: ast.ExceptHandler, scope: Scope) -> bool:
    """The handler catches only "nothing there yet" (a queue's `Empty`, a socket's
    would-block), also through a tuple of the module that groups such types
    (``WOULD_BLOCK = (BlockingIOError, *tls.WOULD_BLOCK)``: the elements it spells out are
    all would-blocks, those it splices in from elsewhere are more of the same): the loop polls
    for data, the pause is its period, no call failed."""
    if handler.type is None:
        return False
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return all(_not_yet_type(ctx, kind, scope) for kind in types)


def _not_yet_type(ctx: Context, kind: ast.expr, scope: Scope) -> bool:
    name = last_name(kind) or ""
    if name in _NOT_YET or name in _WOULD_BLOCK:
        return True
    if not isinstance(kind, ast.Name):
        return False
    values = ctx.bindings(kind, scope)
    if len(values) != 1 or not isinstance(values[0], ast.Tuple):
        return False
    spelled = [e for e in values[0].elts if not isinstance(e, ast.Starred)]
    return bool(spelled) and all((last_name(e) or "") in _NOT_YET | _WOULD_BLOCK for e in spelled)


def _interruption(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return False
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return all(last_name(t) in _INTERRUPTIONS or last_name(t) in _NOT_YET for t in types)


# errno codes of a call that a signal interrupted (EINTR) or that would block (EAGAIN,
# EWOULDBLOCK), and the exception types that stand for them: calling again resumes the call
# (PEP 475) or polls for data or room, no dependency failed.
_RESUMABLE = frozenset({"EINTR", "EAGAIN", "EWOULDBLOCK", "InterruptedError", "BlockingIOError"})
_TIME_CALLS = frozenset({"time", "monotonic", "perf_counter"})


def _goes_round_only_if(handler: ast.ExceptHandler) -> tuple[ast.expr, bool] | None:
    """The test under which the handler goes round, when every other way through it
    raises: ``if T: continue`` / ``else: raise`` gives (T, True); ``if T: raise`` first,
    then the rest of the handler, gives (T, False)."""
    body = handler.body
    if not body or not isinstance(body[0], ast.If):
        return None
    first = body[0]
    if _raises(first.body):
        return first.test, False
    if _raises(first.orelse or body[1:]):
        return first.test, True
    return None


def _raises(statements: list[ast.stmt]) -> bool:
    return bool(statements) and isinstance(statements[-1], ast.Raise)


def _resumes(ctx: Context, handler: ast.ExceptHandler, scope: Scope) -> bool:
    """The handler goes round only when the caught error says the call was interrupted by
    a signal or would block (``if error.errno == errno.EINTR: continue`` / ``else:
    raise``, ``if e.errno not in (EAGAIN, EWOULDBLOCK): raise``, or a test of the file
    that reads so: ``if _is_resumable(error): continue``), re-raising every other error:
    an interrupted system call resumed, or a poll, not a retry of a failed call."""
    found = _goes_round_only_if(handler)
    if found is None:
        return False
    test, when_true = found
    return _tests_resumable(ctx, test, scope, when_true)


def _tests_resumable(ctx: Context, test: ast.expr, scope: Scope, when_true: bool) -> bool:
    """Whether ``test`` is true (``when_true``), or false, exactly for a resumable error."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _tests_resumable(ctx, test.operand, scope, not when_true)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        equal = isinstance(test.ops[0], ast.Eq | ast.In | ast.Is)
        unequal = isinstance(test.ops[0], ast.NotEq | ast.NotIn | ast.IsNot)
        return (equal if when_true else unequal) and _names_resumable(test)
    if isinstance(test, ast.Call) and when_true:
        # a test function of the file, also through a table of checks it reads
        # (``{InterruptedError: lambda _: True, OSError: lambda e: e.errno == EINTR}``)
        for function in ctx.callees(test.func, scope):
            if _names_resumable(function.node):
                return True
            for node in ast.walk(function.node):
                if isinstance(node, ast.Name) and any(
                    _names_resumable(value) for value in ctx.bindings(node, function)
                ):
                    return True
    return False


def _names_resumable(node: ast.AST) -> bool:
    return any(
        isinstance(inner, ast.Name | ast.Attribute) and last_name(inner) in _RESUMABLE
        for inner in ast.walk(node)
    )


def _polls_for_one_code(loop: ast.AST, handler: ast.ExceptHandler) -> bool:
    """A device or library read polled for its "nothing yet" code: the handler re-raises
    every error but one code (``if error.code != NO_MESSAGE: raise``) and the loop hands
    back nothing at the caller's deadline (``if time.time() > end: return None``), as
    ``queue.get(timeout=...)`` does: a poll whose pause is its period, no call failed."""
    found = _goes_round_only_if(handler)
    if found is None or found[1] or handler.name is None:
        return False
    test = found[0]
    if not (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.NotEq)
        and isinstance(test.left, ast.Attribute)
        and isinstance(test.left.value, ast.Name)
        and test.left.value.id == handler.name
    ):
        return False
    return _hands_back_nothing_at_deadline(loop)


def _hands_back_nothing_at_deadline(loop: ast.AST) -> bool:
    """An ``if`` of the loop that compares a clock reading and returns ``None`` (or a tuple
    whose first value is ``None``): the read's timeout, with nothing received."""
    for node in own_nodes(getattr(loop, "body", [])):
        if not isinstance(node, ast.If) or not any(
            isinstance(inner, ast.Call) and last_name(inner.func) in _TIME_CALLS
            for inner in ast.walk(node.test)
        ):
            continue
        for statement in node.body:
            value = statement.value if isinstance(statement, ast.Return) else None
            if isinstance(value, ast.Tuple) and value.elts:
                value = value.elts[0]
            if isinstance(value, ast.Constant) and value.value is None:
                return True
    return False


def _waits_for_signal(loop: ast.AST, handler: ast.ExceptHandler) -> bool:
    """The handler waits for another task's signal (``await self.slot_freed.wait()``, an
    event or condition) and never for a timer: the loop goes round when told there is room,
    as after `asyncio.QueueFull`, not again and again against a dependency that is down.
    Also when the handler falls through to a round that ends with that wait (``except
    ConnectionClosed: self.deactivate(session)`` ... ``await changed.wait()`` as the loop's
    last statement): the next attempt waits for a new session."""
    signal, sleeps = _signal_and_timer(handler.body)
    if signal or sleeps:
        return signal and not sleeps
    if _round_starts_with_signal(loop):
        return True
    if continues(handler.body):
        return False
    tail = getattr(loop, "body", [])[-1:]
    signal, sleeps = _signal_and_timer(tail)
    return signal and not sleeps


def _round_starts_with_signal(loop: ast.AST) -> bool:
    """Every round waits for another task's signal before its attempt (``await
    connected.wait()``, or a thread's ``connected.wait()``, as the loop body's first
    statement): whatever way a failure comes round, the next attempt waits for that signal
    (a new connection), not for a timer."""
    body = getattr(loop, "body", [])
    if not body or not isinstance(body[0], ast.Expr):
        return False
    call = body[0].value.value if isinstance(body[0].value, ast.Await) else body[0].value
    return isinstance(call, ast.Call) and _signal_wait(call)


def _signal_wait(call: ast.Call) -> bool:
    """``x.wait()`` with no timeout (an event's or a condition's), not ``asyncio.wait``."""
    return (
        isinstance(call.func, ast.Attribute)
        and call.func.attr == "wait"
        and not call.args
        and not call.keywords
        and last_name(call.func.value) != "asyncio"
    )


def _signal_and_timer(statements: list[ast.stmt]) -> tuple[bool, bool]:
    """Whether ``statements`` await another task's signal (``x.wait()`` with no timeout),
    and whether they sleep or wait with a timer."""
    signal = sleeps = False
    for node in own_nodes(statements):
        if not isinstance(node, ast.Await) or not isinstance(node.value, ast.Call):
            continue
        call = node.value
        if _signal_wait(call):
            signal = True
        elif last_name(call.func) in ("sleep", "wait_for"):
            sleeps = True
    return signal, sleeps


def _always_leaves(statements: list[ast.stmt]) -> bool:
    return bool(statements) and isinstance(statements[-1], ast.Raise | ast.Return | ast.Break)


def _goes_round(loop: ast.AST, attempt: ast.Try, handler: ast.ExceptHandler) -> bool:
    """Whether a failure ``handler`` catches can reach the loop's next round: the handler
    does not always leave, and it either continues or falls through to a rest of the loop
    body that does not always leave. A loop that ends on its first failure (`except: log`
    then `await on_failure(); return` after the ``try``) is a periodic task, not a retry."""
    if _always_leaves(handler.body):
        return False
    body = getattr(loop, "body", [])
    if attempt not in body or not _always_leaves(body[body.index(attempt) + 1 :]):
        return True
    return continues(handler.body)


def check_sleep(ctx: Context, site: Site) -> None:
    """ADM401 at a sleep without randomness in a retry loop."""
    call = site.node
    assert isinstance(call, ast.Call)
    if ctx.resolve(call.func) not in SLEEPS:
        return
    delay = call.args[0] if call.args else None
    for keyword in call.keywords:
        if keyword.arg in ("seconds", "delay", "secs", "secs_"):
            delay = keyword.value
    if delay is None:
        return
    if isinstance(delay, ast.Constant) and (
        not isinstance(delay.value, int | float) or delay.value <= 0
    ):
        return  # sleep(0): a yield, not a wait
    loop_index = None
    for index in range(len(site.blocks) - 1, -1, -1):
        if site.blocks[index][0] == LOOP:
            loop_index = index
            break
    if loop_index is None:
        return
    loop = site.blocks[loop_index][1]
    if not isinstance(loop, ast.For | ast.AsyncFor | ast.While):
        return
    handlers = [
        node
        for kind, node in site.blocks[loop_index + 1 :]
        if kind == HANDLER and isinstance(node, ast.ExceptHandler)
    ]
    if not handlers and not _retry_loop(ctx, loop, site.scope, by_outcome=True):
        return  # not a retry, or a pause that a worked round takes too (a periodic loop's)
    if handlers and (_periodic(ctx, loop, call) or _ends_loop(loop, handlers[-1])):
        return
    if leaves_after(loop, call):
        return  # the pause comes before leaving the loop, not before another attempt
    if handlers and not _stops_on_success(loop):
        return  # a reader or service loop pausing after a failed round, not a retry
    if handlers and _asks_the_user(loop, functions_only=True):
        return  # every round waits for the person typing: they pace it, not the pause
    if handlers and _binds_any_free_port(loop, handlers[-1]):
        return  # no port that others wait for: nothing shared to retry in lock-step
    if handlers and (
        _nothing_yet(ctx, handlers[-1], site.scope)
        or _resumes(ctx, handlers[-1], site.scope)
        or _polls_for_one_code(loop, handlers[-1])
        or _interruption(handlers[-1])
    ):
        return  # a poll, or a resumed call: the pause is its period, no call failed
    if handlers and _paused_only_when_resumable(ctx, site, loop_index):
        return  # the pause after an interrupted or would-block call, whatever else is done
    if not handlers and (
        _step_of_attempt(site, loop_index, call) or _opens_every_round(loop, site, call)
    ):
        return
    if _server_directed(delay, handlers, site.scope) or _is_random(ctx, delay, site.scope):
        return
    if handlers and _jittered_wait_follows(ctx, site, handlers[-1], call):
        return
    ctx.report(
        call,
        "ADM401",
        "this retry waits without randomness, so clients that failed together retry "
        "together: add jitter (`adm.Retry(jitter='full')`, or `delay * random.uniform(0.5, "
        "1.5)`)",
    )


def _binds_any_free_port(loop: ast.AST, handler: ast.ExceptHandler) -> bool:
    """The attempt whose failure the handler catches only binds a listening socket to port 0
    (``socketserver.TCPServer(("", 0), Handler)``, ``sock.bind(("127.0.0.1", 0))``): the
    system picks any free port, so the attempt contends for no port and reaches nothing
    outside the host; the clients that fail together share no dependency to retry against.
    A bind to a given port (several servers waiting for the same one to free) still fires."""
    for attempt in _tries(getattr(loop, "body", [])):
        if handler not in attempt.handlers:
            continue
        calls = [node for node in own_nodes(attempt.body) if isinstance(node, ast.Call)]
        return bool(calls) and all(_binds_port_zero(call) for call in calls)
    return False


def _binds_port_zero(call: ast.Call) -> bool:
    """A call whose first argument is an address on port 0 (``(host, 0)``)."""
    if not call.args or not isinstance(call.args[0], ast.Tuple):
        return False
    address = call.args[0].elts
    return (
        len(address) >= 2
        and isinstance(address[1], ast.Constant)
        and type(address[1].value) is int
        and address[1].value == 0
    )


def _jittered_wait_follows(
    ctx: Context, site: Site, handler: ast.ExceptHandler, sleep: ast.Call
) -> bool:
    """The handler sleeps again after this sleep, for a delay with randomness (or one this
    file cannot see into): ``await sleep(0.25)`` to let a cluster recover, then ``await
    sleep(policy.compute(failures))``. The wait before the next attempt is the sum of the
    two, jittered by the second: clients that failed together do not retry together."""
    end = sleep.end_lineno or sleep.lineno
    for node in own_nodes(handler.body):
        if (
            isinstance(node, ast.Call)
            and node is not sleep
            and node.lineno > end
            and ctx.resolve(node.func) in SLEEPS
            and node.args
            and _is_random(ctx, node.args[0], site.scope)
        ):
            return True
    return False


def _ends_loop(loop: ast.AST, handler: ast.ExceptHandler) -> bool:
    """The handler clears the loop's condition (`self.keep_alive = False` under `while
    self.keep_alive`): the wait comes before leaving, not before another attempt."""
    if not isinstance(loop, ast.While):
        return False
    condition = {dotted(n) for n in ast.walk(loop.test) if isinstance(n, ast.Name | ast.Attribute)}
    for node in own_nodes(handler.body):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and node.value.value in (False, None)
            and any(dotted(target) in condition for target in node.targets)
        ):
            return True
    return False


def _paused_only_when_resumable(ctx: Context, site: Site, loop_index: int) -> bool:
    """The sleep is in the branch of an ``if`` in the handler taken exactly for an
    interrupted or would-block call (``if error.errno == errno.EINTR: sleep(0.1)`` / ``else:
    log(error)``): that pause resumes a call no dependency failed, whatever the other branch
    does with the other errors."""
    inside_handler = False
    for kind, node in site.blocks[loop_index + 1 :]:
        if kind == HANDLER:
            inside_handler = True
        elif (
            inside_handler
            and kind in (IF, ELSE)
            and isinstance(node, ast.If)
            and _tests_resumable(ctx, node.test, site.scope, kind == IF)
        ):
            return True
    return False


def _opens_every_round(loop: ast.AST, site: Site, sleep: ast.Call) -> bool:
    """The sleep is the loop body's first statement and the loop reads on after an attempt
    that worked (no attempt whose success always leaves the loop, see `_leaves_when_done`):
    a poll of a state (``while True: await sleep(0.5); state = await get_state(); ... if
    state.done: break``), the sleep its period. A loop that sleeps first and leaves as soon
    as the attempt works is a retry, and still fires."""
    body = getattr(loop, "body", [])
    if not body or not isinstance(body[0], ast.Expr):
        return False
    first = body[0].value
    if isinstance(first, ast.Await):
        first = first.value
    if first is not sleep or site.blocks[-1][1] is not loop:
        return False
    attempts = _tries(body)
    return bool(attempts) and not any(_leaves_when_done(loop, attempt) for attempt in attempts)


def _step_of_attempt(site: Site, loop_index: int, sleep: ast.Call) -> bool:
    """The sleep is in the attempt's ``try`` body with more of the attempt after it (`get();
    sleep(1); get()` to test a timeout): a step of the attempt, not the wait between two."""
    for kind, node in site.blocks[loop_index + 1 :]:
        if kind == TRY and isinstance(node, ast.Try):
            end = sleep.end_lineno or sleep.lineno
            return any(isinstance(n, ast.Call) and n.lineno > end for n in own_nodes(node.body))
    return False


def _periodic(ctx: Context, loop: ast.AST, sleep: ast.Call) -> bool:
    """The loop also sleeps unconditionally on its success path: a periodic task whose
    failures wait out the same period (`while True: try: sync(); await sleep(60) except:
    log; await sleep(60)`), not a retry with backoff."""

    def sleeps(statements: list[ast.stmt]) -> bool:
        for statement in statements:
            value = statement.value if isinstance(statement, ast.Expr) else None
            if isinstance(value, ast.Await):
                value = value.value
            if (
                isinstance(value, ast.Call)
                and value is not sleep
                and ctx.resolve(value.func) in SLEEPS
            ):
                return True
        return False

    body = getattr(loop, "body", [])
    if sleeps(body):
        return True
    return any(
        sleeps(statement.body) or sleeps(statement.orelse)
        for statement in body
        if isinstance(statement, ast.Try)
    )


# Delays the server or the error dictates (`retry_after`, `e.seconds` of a flood wait):
# waiting exactly that long is the protocol, not a fixed backoff.
_DIRECTED_WORDS = frozenset({"after", "reset", "header", "headers"})


def _server_directed(delay: ast.expr, handlers: list[ast.ExceptHandler], scope: Scope) -> bool:
    """The delay is the caught error's (``e.seconds``), a header's (``retry_after``), or a
    local computed from the caught error (``seconds = self._rate_limit_wait(exception)``: a
    helper reading "try again in 5 minutes" out of it): what the server said to wait."""
    caught = {h.name for h in handlers if h.name}
    for node in ast.walk(delay):
        if isinstance(node, ast.Name) and node.id in caught:
            return True
        name = last_name(node) if isinstance(node, ast.Name | ast.Attribute) else None
        if name is not None and any(w in _DIRECTED_WORDS for w in words(name)):
            return True
        if isinstance(node, ast.Name) and any(
            _mentions_name(value, caught) for value in scope.assigns.get(node.id, ())
        ):
            return True
    return False


def _mentions_name(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(inner, ast.Name) and inner.id in names for inner in ast.walk(node))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _tenacity_waits(ctx: Context, node: ast.expr, scope: Scope, depth: int = 0) -> set[str]:
    """The tenacity wait strategies an expression combines (``wait_fixed(1) + wait_random(0,
    1)`` -> wait_fixed, wait_random), through module-level names one level deep."""
    found: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            resolved = ctx.resolve(inner.func) or ""
            if resolved.startswith("tenacity."):
                found.add(resolved.rsplit(".", 1)[-1])
            elif depth == 0:
                found.add("?")  # a helper: cannot tell
        elif isinstance(inner, ast.Name) and depth == 0:
            for value in ctx.bindings(inner, scope):
                found |= _tenacity_waits(ctx, value, scope, depth + 1)
    return found


def _decorated(ctx: Context, call: ast.Call) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function a decorator call decorates, if it is one."""
    for scope in ctx.facts.functions:
        node = scope.node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            decorator is call for decorator in node.decorator_list
        ):
            return node
    return None


def _only_checks(statements: list[ast.stmt]) -> bool:
    """Statements that read and assert, nothing else: assignments to local names, asserts,
    returns, and ``if`` blocks of the same (a call is allowed only as a value read)."""
    for statement in statements:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if isinstance(statement, ast.Assign):
            if not all(isinstance(target, ast.Name) for target in statement.targets):
                return False
        elif isinstance(statement, ast.AnnAssign):
            if not isinstance(statement.target, ast.Name):
                return False
        elif isinstance(statement, ast.If):
            if not _only_checks(statement.body) or not _only_checks(statement.orelse):
                return False
        elif not isinstance(statement, ast.Assert | ast.Return | ast.Pass):
            return False
    return True


def _retries_assertions(ctx: Context, call: ast.Call) -> bool:
    """tenacity retries an ``AssertionError``: no ``retry=`` (every exception is retried) or
    ``retry_if_exception_type(...)`` naming it."""
    condition = _keyword(call, "retry")
    if condition is None:
        return True
    if not isinstance(condition, ast.Call) or not (ctx.resolve(condition.func) or "").endswith(
        ".retry_if_exception_type"
    ):
        return False
    return any(
        isinstance(node, ast.Name | ast.Attribute) and last_name(node) == "AssertionError"
        for argument in condition.args
        for node in ast.walk(argument)
    )


def _polls_assertion(ctx: Context, call: ast.Call) -> bool:
    """A tenacity decorator on a function that only reads state and asserts on it, retried on
    the ``AssertionError`` (``@retry(wait=wait_fixed(1)) def until_ready(): assert
    client.status() == "ready"``): a poll for a condition, the wait its period; no failed call
    is retried in lock-step."""
    function = _decorated(ctx, call)
    if function is None or not _retries_assertions(ctx, call):
        return False
    asserts = any(isinstance(node, ast.Assert) for node in own_nodes(function.body))
    return asserts and _only_checks(function.body)


def _never_retries(ctx: Context, call: ast.Call) -> bool:
    """A tenacity retrier that makes one attempt and never waits: ``enabled=False`` (it
    calls the function once) or ``stop=stop_after_attempt(1)`` (the first failure is the
    last). A larger count, or one read from a variable, still fires."""
    enabled = _keyword(call, "enabled")
    if isinstance(enabled, ast.Constant) and enabled.value is False:
        return True
    stop = _keyword(call, "stop")
    return (
        isinstance(stop, ast.Call)
        and (ctx.resolve(stop.func) or "").endswith("stop_after_attempt")
        and len(stop.args) == 1
        and isinstance(stop.args[0], ast.Constant)
        and stop.args[0].value in (0, 1)
    )


# a tenacity retrier's policies and records, which reading runs nothing
_RETRIER_PARTS = frozenset(
    {"wait", "stop", "retry", "before", "after", "before_sleep", "statistics", "iter_state"}
)


def _only_its_policies_read(ctx: Context, call: ast.Call, site: Site) -> bool:
    """A retrier bound to a local name that the function only reads parts of (``r =
    Retrying(wait=wait_fixed(1))``, then ``r.wait(state)`` to compute a delay): it never runs
    anything, so nothing is retried. Called, iterated, wrapped around a function, returned or
    handed on, it still fires."""
    target = ctx.facts.bound_to.get(id(call))
    function = site.scope.function()
    if target is None or "." in target or function is None:
        return False
    # nested functions included: a closure may run it (`def job(): return r(fetch)`)
    nodes = list(ast.walk(function.node))
    uses = sum(
        isinstance(n, ast.Name) and n.id == target and isinstance(n.ctx, ast.Load) for n in nodes
    )
    reads = sum(
        isinstance(n, ast.Attribute)
        and n.attr in _RETRIER_PARTS
        and isinstance(n.value, ast.Name)
        and n.value.id == target
        for n in nodes
    )
    return uses > 0 and uses == reads


def check_backoff_policy(ctx: Context, site: Site) -> None:
    """ADM401 at tenacity's fixed waits, backoff's ``jitter=None``, redis-py's fixed
    backoffs."""
    call = site.node
    assert isinstance(call, ast.Call)
    resolved = ctx.resolve(call.func)
    if resolved in _TENACITY_ENTRIES:
        wait = _keyword(call, "wait")
        if wait is None or _polls_assertion(ctx, call) or _never_retries(ctx, call):
            return
        if _only_its_policies_read(ctx, call, site):
            return
        waits = _tenacity_waits(ctx, wait, site.scope)
        if waits & _TENACITY_FIXED and not waits & _TENACITY_RANDOM and "?" not in waits:
            ctx.report(
                wait,
                "ADM401",
                "tenacity waits without randomness, so clients retry in lock-step: use "
                "`wait_random_exponential(...)` or add `wait_random(0, 1)`",
            )
    elif resolved in _BACKOFF_DECORATORS:
        jitter = _keyword(call, "jitter")
        if isinstance(jitter, ast.Constant) and jitter.value is None:
            ctx.report(
                jitter,
                "ADM401",
                "`jitter=None` makes backoff retry in lock-step: keep the default "
                "`backoff.full_jitter`",
            )
    elif resolved in _REDIS_FIXED:
        name = resolved.rsplit(".", 1)[-1]
        ctx.report(
            call,
            "ADM401",
            f"redis-py's `{name}` retries without jitter: use `ExponentialWithJitterBackoff` "
            "or `FullJitterBackoff`",
        )


def _bounded_forever(ctx: Context, loop: ast.While, site: Site) -> bool:
    """Whether a ``while True`` retry loop counts attempts or watches a deadline."""
    counters: set[str] = set()
    for node in ast.walk(loop):
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name | ast.Attribute):
            counters.add(last_name(node.target) or "")
    for node in ast.walk(loop):
        if isinstance(node, ast.If | ast.While) and node is not loop:
            test = node.test
            for inner in ast.walk(test):
                if isinstance(inner, ast.Call):
                    resolved = ctx.resolve(inner.func) or ""
                    if resolved.startswith(("time.", "datetime.")) or last_name(inner.func) in (
                        "time",
                        "monotonic",
                        "perf_counter",
                        "now",
                        "utcnow",
                        "should_retry",
                    ):
                        return True
                if isinstance(inner, ast.Name | ast.Attribute):
                    name = last_name(inner) or ""
                    if name in counters or any(w in _BOUND_WORDS for w in words(name)):
                        return True
        if isinstance(node, ast.ExceptHandler):
            # a conditional give-up in a handler (`if ...: raise`)
            for statement in node.body:
                if isinstance(statement, ast.If) and any(
                    isinstance(n, ast.Raise) for s in statement.body for n in ast.walk(s)
                ):
                    return True
    # a deadline around the loop: `async with asyncio.timeout(30):`
    for kind, node in site.blocks:
        if kind == WITH:
            assert isinstance(node, ast.With | ast.AsyncWith)
            for item in node.items:
                expr = item.context_expr
                if isinstance(expr, ast.Call) and last_name(expr.func) in _TIMEOUT_CONTEXTS:
                    return True
    return False


# calls that ask the person at the terminal (`input`, `getpass`, click's / typer's / rich's
# `prompt` and `Prompt.ask`, a curses window's reads of a key press)
_ASKS_THE_USER = frozenset({"input", "getpass", "prompt", "ask", "getkey", "getch", "get_wch"})


def _asks_the_user(
    loop: ast.For | ast.AsyncFor | ast.While, *, functions_only: bool = False
) -> bool:
    """Each round asks the person at the terminal again (``name = prompt(...)``): the next
    attempt is a new request with new input, paced by someone typing, not the same call
    against a dependency that stays down. With ``functions_only``, only a plain function's
    call counts (``input(...)``): a method named so (``agent.ask(...)``) may be the remote
    call retried."""
    return any(
        isinstance(node, ast.Call)
        and last_name(node.func) in _ASKS_THE_USER
        and (isinstance(node.func, ast.Name) or not functions_only)
        for node in own_nodes(loop.body)
    )


def _pauses_between_attempts(ctx: Context, loop: ast.While) -> bool:
    """A timer between a failure and the next attempt: a sleep (or a wait with a timeout)
    in the loop but outside the attempts' own ``try`` bodies (in a handler, after the
    ``try``, at the top of the round). Without one, a loop whose failures go round is as
    often a wait sliced by a timeout (``accept()`` until a client comes, a lock another
    holds, a task just cancelled) or a walk over alternatives (the next server once the
    failed one is dropped) as a retry of a dependency that is down: the rule stays silent."""
    attempt_nodes = {id(node) for attempt in _tries(loop.body) for node in own_nodes(attempt.body)}
    return any(
        isinstance(node, ast.Call) and id(node) not in attempt_nodes and _timed_wait(ctx, node)
        for node in own_nodes(loop.body)
    )


def _timed_wait(ctx: Context, call: ast.Call) -> bool:
    """``sleep(...)`` (any module's, or a helper named for it: ``self._sleep(delay)``,
    ``await backoff.sleep()``), or a wait given a timeout (``asyncio.wait_for(event.wait(),
    1)``, ``event.wait(5)``)."""
    if ctx.resolve(call.func) in SLEEPS or "sleep" in words(last_name(call.func) or ""):
        return True
    name = last_name(call.func)
    if name == "wait_for":
        return len(call.args) >= 2 or any(k.arg == "timeout" for k in call.keywords)
    return name == "wait" and bool(call.args or call.keywords)


def _owner_stops_after_pause(ctx: Context, loop: ast.While) -> bool:
    """A handler that asks the object whether to stop (``if self._is_closing(): return``)
    again after its pause: the object ends the retries (it counts the failures, or a close
    comes while the loop waits), and the loop reads that decision after every wait, not a
    dependency retried until the process dies. A stop read only before the pause still
    fires: that check is the loop's way out at close, not a limit on the attempts."""
    for attempt in _tries(loop.body):
        for handler in attempt.handlers:
            paused = False
            for statement in handler.body:
                if paused and _asks_owner_to_stop(statement):
                    return True
                paused = paused or any(
                    isinstance(node, ast.Call) and _timed_wait(ctx, node)
                    for node in own_nodes([statement])
                )
    return False


def _asks_owner_to_stop(statement: ast.stmt) -> bool:
    """``if self.x: return`` / ``if self.x(): break`` (no argument: the object's own state)."""
    if not (
        isinstance(statement, ast.If)
        and not statement.orelse
        and len(statement.body) == 1
        and isinstance(statement.body[0], ast.Return | ast.Break)
    ):
        return False
    test = statement.test
    if isinstance(test, ast.Call) and not test.args and not test.keywords:
        test = test.func
    text = dotted(test)
    return text is not None and text.startswith("self.")


def _deadline_kept_by_caller(ctx: Context, site: Site) -> bool:
    """The loop is in a local function that the function around it only ever runs under a
    timeout (``await asyncio.wait_for(poll(), timeout=5)``, or inside ``async with
    asyncio.timeout(5):``): its deadline is its one caller's, a line away. The same local
    function also awaited bare, or handed on, still fires."""
    function = site.scope.function()
    outer = function.parent if function is not None else None
    if function is None or function.kind == LAMBDA or outer is None or not outer.is_function:
        return False
    body = getattr(outer.node, "body", [])
    statements = body if isinstance(body, list) else []
    timed = {id(node) for node in _under_timeout_contexts(statements)}
    named = 0
    for node in own_nodes(statements):
        if (
            isinstance(node, ast.Call)
            and last_name(node.func) == "wait_for"
            and node.args
            and _calls_function(node.args[0], function.name)
            and _given_a_timeout(node)
        ):
            timed.add(id(node.args[0]))
        if isinstance(node, ast.Name) and node.id == function.name:
            named += 1
    calls = [
        node
        for node in own_nodes(statements)
        if isinstance(node, ast.Call) and _calls_function(node, function.name)
    ]
    # every mention of the function is a call of it, and each of those has a deadline
    return bool(calls) and named == len(calls) and all(id(call) in timed for call in calls)


def _given_a_timeout(wait_for: ast.Call) -> bool:
    """``wait_for(aw, 5)`` / ``wait_for(aw, timeout=t)``, not ``wait_for(aw, None)``."""
    given = [*wait_for.args[1:2], *(k.value for k in wait_for.keywords if k.arg == "timeout")]
    return bool(given) and not any(
        isinstance(value, ast.Constant) and value.value is None for value in given
    )


def _calls_function(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _under_timeout_contexts(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes inside ``with``/``async with`` blocks of a timeout (``asyncio.timeout``,
    ``anyio.fail_after``, ...)."""
    for node in own_nodes(statements):
        if isinstance(node, ast.With | ast.AsyncWith) and any(
            isinstance(item.context_expr, ast.Call)
            and last_name(item.context_expr.func) in _TIMEOUT_CONTEXTS
            for item in node.items
        ):
            yield from own_nodes(node.body)


def check_forever_loop(ctx: Context, site: Site) -> None:
    """ADM402 at a ``while True`` retry loop that never gives up."""
    loop = site.node
    assert isinstance(loop, ast.While)
    if not _retry_loop(ctx, loop, site.scope, dependency=True) or _bounded_forever(ctx, loop, site):
        return
    if _asks_the_user(loop) or not _pauses_between_attempts(ctx, loop):
        return
    if _owner_stops_after_pause(ctx, loop) or _deadline_kept_by_caller(ctx, site):
        return
    ctx.report(
        loop,
        "ADM402",
        "this `while True` retry loop has neither an attempt limit nor a deadline: a "
        "dependency that stays down is retried forever; stop after N attempts or a deadline "
        "(`adm.Retry(attempts=5, deadline='30s')`)",
        end=loop.test,
    )
