"""ADM101, ADM102, ADM103: fan-out whose width grows with the data.

ADM101: ``gather``/``wait``/``as_completed`` over a collection built from data of unbounded
size, or a task group spawning in a loop over such data. ADM102: ``create_task`` /
``ensure_future`` / ``start_soon`` in such a loop, outside a task group of the same function.
Both ask for evidence that the loop runs per item of data (`Context.loop_over_data`), not
per registered or configured resource.
ADM103: either one under a limiter entered once around the whole fan-out (the one finding
for that site: the limiter is there, in the wrong place), unless it is a lock whose block does
more than the fan-out (an exclusive operation: the fan-out is judged as if it were not there).
Each finding names the fix.
"""

from __future__ import annotations

import ast

from admission.audit.checks.class_state import is_empty_collection
from admission.audit.checks.context import (
    Context,
    holds,
    leaves_after,
    own_nodes,
    parameter_defaults,
    parsed_annotation,
    words,
)
from admission.audit.names import dotted, last_name
from admission.audit.walk import ELSE, IF, LOOP, SYNC, WITH, Block, Scope, Site

__all__ = ["check_fan_out", "check_spawn"]

_FAN_OUT = frozenset(
    {
        "asyncio.gather",
        "asyncio.wait",
        "asyncio.as_completed",
        "asyncio.tasks.gather",
        "asyncio.tasks.wait",
        "asyncio.tasks.as_completed",
    }
)
_WAITS = frozenset({"asyncio.wait", "asyncio.tasks.wait"})
_SPAWN_FUNCTIONS = frozenset(
    {
        "asyncio.create_task",
        "asyncio.ensure_future",
        "asyncio.tasks.create_task",
        "asyncio.tasks.ensure_future",
    }
)
_SPAWN_METHODS = frozenset({"create_task", "start_soon", "ensure_future"})
_TASK_GROUPS = frozenset(
    {
        "asyncio.TaskGroup",
        "asyncio.taskgroups.TaskGroup",
        "anyio.create_task_group",
        "trio.open_nursery",
        "taskgroup.TaskGroup",
        "exceptiongroup.TaskGroup",
    }
)


_LOCK_TYPES = frozenset(
    {
        "asyncio.Lock",
        "asyncio.Condition",
        "trio.Lock",
        "trio.StrictFIFOLock",
        "anyio.Lock",
        "threading.Lock",
        "threading.RLock",
    }
)
_LOCK_WORDS = frozenset({"lock", "locks", "mutex", "rlock"})


def _is_lock(ctx: Context, limiter: ast.expr, scope: Scope) -> bool:
    """A mutual-exclusion lock (``asyncio.Lock()``, ``self._state_lock``, a keyed
    ``self._lock(key)``), not a limiter with room for several."""
    node = limiter.value if isinstance(limiter, ast.Await) else limiter
    if isinstance(node, ast.Call):
        if ctx.resolve(node.func) in _LOCK_TYPES:
            return True
        node = node.func
    if any(resolved in _LOCK_TYPES for resolved in ctx.constructed(node, scope)):
        return True
    name_words = words(last_name(node) or "")
    return bool(_LOCK_WORDS.intersection(name_words)) and not any(
        w.startswith(("sem", "limit", "capacit", "concurren", "permit", "slot")) for w in name_words
    )


def _guards_critical_section(ctx: Context, site: Site, limiter: ast.expr) -> bool:
    """A lock whose block does more than the fan-out (`async with self._lock:` around reading
    and updating state, with a fan-out among the steps): it makes the whole operation
    exclusive, it was not put there to bound the fan-out's tasks."""
    if not _is_lock(ctx, limiter, site.scope):
        return False
    for kind, node in reversed(site.blocks):
        if (
            kind == WITH
            and isinstance(node, ast.With | ast.AsyncWith)
            and any(item.context_expr is limiter for item in node.items)
        ):
            return len(node.body) > 1
    return False


def _report_misplaced_limiter(ctx: Context, site: Site, what: str) -> bool:
    """ADM103 if a limiter is entered around the fan-out; True if so (nothing else to say)."""
    limiter = ctx.enclosing_limiter(site)
    if limiter is None or _guards_critical_section(ctx, site, limiter):
        return False
    name = dotted(limiter.func if isinstance(limiter, ast.Call) else limiter) or "the limiter"
    ctx.report(
        limiter,
        "ADM103",
        f"`{name}` is entered once around the whole fan-out ({what}), so the tasks inside "
        "still all run at once: enter it inside each task, or use "
        "`adm.gather(*aws, limit=N)` / `adm.TaskPool(limit=N)`",
    )
    return True


# Methods that end or wait for an object the program owns: `gather(*(c.close() for c in
# clients))` shuts down what exists, it does not start work per item of data.
_LIFECYCLE = frozenset(
    {
        "close",
        "aclose",
        "stop",
        "shutdown",
        "cancel",
        "wait",
        "wait_closed",
        "join",
        "disconnect",
        "terminate",
        "kill",
        "release",
        "flush",
        "cleanup",
        "dispose",
        "__aexit__",
    }
)


def _ends_or_waits(element: ast.expr) -> bool:
    """A method call that ends or waits for an existing object (``c.close()``,
    ``holder.wait_until_released()``): it starts no new work."""
    if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Attribute):
        return False
    method = element.func.attr
    # `wait_*` waits for what exists; other prefixes (`cancel_order`) may well send requests
    return method in _LIFECYCLE or method.startswith("wait_")


def _lifecycle_call(element: ast.expr) -> ast.Name | None:
    """The root name of the object a call ends or waits for (``c.close()``,
    ``db.client.aclose()``), else None."""
    if not _ends_or_waits(element):
        return None
    assert isinstance(element, ast.Call)
    assert isinstance(element.func, ast.Attribute)
    receiver = element.func.value
    while isinstance(receiver, ast.Attribute):
        receiver = receiver.value
    return receiver if isinstance(receiver, ast.Name) else None


# Calls that wrap a future that already exists (a `concurrent.futures` future another thread
# runs): waiting for them starts no new work.
_WRAPS_EXISTING = frozenset({"asyncio.wrap_future", "asyncio.futures.wrap_future"})


# Calls that protect an awaitable from cancellation: given one that already runs (a future,
# a task), they start no new work.
_SHIELDS = frozenset({"asyncio.shield", "asyncio.tasks.shield"})


def _comprehension_targets(node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> set[str]:
    return {t.id for g in node.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}


def _lifecycle(node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> bool:
    receiver = _lifecycle_call(node.elt)
    return receiver is not None and receiver.id in _comprehension_targets(node)


def _shields_each_item(
    ctx: Context, node: ast.ListComp | ast.SetComp | ast.GeneratorExp, element: ast.Call
) -> bool:
    """Each element shields an item of the collection as it is (``shield(fut) for fut in
    aw``): futures or tasks that already run, protected from the gather's cancellation; a
    shield of a new call (``shield(fetch(u))``) starts work and still counts."""
    return (
        ctx.resolve(element.func) in _SHIELDS
        and len(element.args) == 1
        and isinstance(element.args[0], ast.Name)
        and element.args[0].id in _comprehension_targets(node)
    )


# Methods that take an item out of a container (`self.futures.pop()`): what they hand back
# already exists, no new work.
_TAKES_OUT = frozenset({"pop", "popleft", "popitem"})


def _taken_out(value: ast.expr) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr in _TAKES_OUT
    )


def _collection(
    ctx: Context, node: ast.expr, site: Site, direct: bool = True
) -> list[ast.expr] | None:
    """The per-item work of a fan-out collection of unbounded size, else None.

    A comprehension or ``map`` over data, or a list filled in a loop over data. None when
    the size is bounded or unknown (a parameter, an attribute), or when the items are tasks
    already spawned in the loop (ADM102 reports the spawn).
    """
    scope = site.scope
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
        if ctx.fan_out_loop_bounded(node, scope) or not ctx.loop_over_data(node, scope):
            return None
        element = node.elt.value if isinstance(node.elt, ast.Await) else node.elt
        if not isinstance(element, ast.Call):
            return None  # existing tasks or futures (`[b.future for b in batches]`): no new work
        if not direct and _is_spawn(ctx, element):
            # tasks spawned in a comprehension and gathered later: ADM102 reports the spawn
            return None
        if _lifecycle(node) or ctx.resolve(element.func) in _WRAPS_EXISTING:
            return None
        if _shields_each_item(ctx, node, element):
            return None
        if _fanned_out_before(ctx, node, site) or _tears_down_own(node, scope):
            return None
        return [element]
    if isinstance(node, ast.Call):
        name = last_name(node.func)
        if isinstance(node.func, ast.Name) and not ctx.facts.imports.is_imported(name or ""):
            if name == "map" and len(node.args) >= 2:
                if all(ctx.iterable_bounded(a, scope) for a in node.args[1:]) or not any(
                    ctx.fan_out_over_data(a, scope) for a in node.args[1:]
                ):
                    return None
                return [node.args[0]]
            if name in ("list", "tuple", "set") and len(node.args) == 1:
                return _collection(ctx, node.args[0], site, direct)
        return None
    if isinstance(node, ast.Name):
        values = scope.assigns.get(node.id)
        if not values or node.id in scope.params:
            return None
        work: list[ast.expr] = []
        for value in values:
            if (isinstance(value, ast.List | ast.Set) and not value.elts) or (
                isinstance(value, ast.Call)
                and not value.args
                and last_name(value.func)
                in (
                    "list",
                    "set",
                    "deque",
                )
            ):
                work.extend(_filled_in_loop(ctx, node.id, site) or ())
            else:
                found = _collection(ctx, value, site, direct=False)
                if found:
                    work.extend(found)
        return work or None
    return None


# Words of a method that ends what it is given (a kernel, a session, a worker).
_TEARDOWN_WORDS = frozenset(
    {"shutdown", "close", "stop", "kill", "terminate", "disconnect", "cancel", "teardown"}
)


def _tears_down_own(node: ast.ListComp | ast.SetComp | ast.GeneratorExp, scope: Scope) -> bool:
    """Each element ends one of the object's own things (``self._shutdown_kernel(kid)``)
    and the comprehension runs over what the object holds, as its attributes and its
    argument-less methods list it (``self.list_kernel_ids()``, ``list(self._pending)``):
    teardown of what exists, as wide as what is open, no new work per item of data."""
    element = node.elt.value if isinstance(node.elt, ast.Await) else node.elt
    if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Attribute):
        return False
    receiver = element.func.value
    if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")):
        return False
    if not any(w in _TEARDOWN_WORDS for w in words(element.func.attr)):
        return False
    targets = {t.id for g in node.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}
    if not any(isinstance(a, ast.Name) and a.id in targets for a in element.args):
        return False
    return len(node.generators) == 1 and _held_by_object(node.generators[0].iter, scope)


_COPIES = frozenset({"list", "set", "tuple", "frozenset", "sorted"})


def _held_by_object(node: ast.expr, scope: Scope, depth: int = 0) -> bool:
    """An iterable of the object's own state: ``self.x``, ``self.x.values()``, an
    argument-less method of the object (``self.list_ids()``), copies and sums of those, a
    local bound only to such."""
    if depth > 4:
        return False
    again = depth + 1
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in _COPIES and len(node.args) == 1:
            return _held_by_object(node.args[0], scope, again)
        # `self.list_ids()`, `self._kernels.values()`: no argument picks what it lists
        if node.args or node.keywords or not isinstance(func, ast.Attribute):
            return False
        return _held_by_object(func.value, scope, again)
    if isinstance(node, ast.Attribute | ast.Subscript):
        root: ast.expr = node
        while isinstance(root, ast.Attribute | ast.Subscript):
            root = root.value
        return isinstance(root, ast.Name) and root.id in ("self", "cls")
    if isinstance(node, ast.Name):
        if node.id in ("self", "cls"):
            return True
        if node.id in scope.params:
            return False
        values = list(scope.assigns.get(node.id, ()))
        body = getattr(scope.node, "body", [])
        values += [
            n.value
            for n in own_nodes(body if isinstance(body, list) else [])
            if isinstance(n, ast.AugAssign)
            and isinstance(n.target, ast.Name)
            and n.target.id == node.id
        ]
        return bool(values) and all(_held_by_object(v, scope, again) for v in values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _held_by_object(node.left, scope, again) and _held_by_object(
            node.right, scope, again
        )
    return False


def _fanned_out_before(
    ctx: Context, node: ast.ListComp | ast.SetComp | ast.GeneratorExp, site: Site
) -> bool:
    """The comprehension runs over a collection that this function already handed to a
    fan-out (``await gather(*nannies)``, then ``gather(*(n.finished() for n in
    nannies))``): it is no wider than that one, which is judged where it is."""
    if len(node.generators) != 1 or not isinstance(node.generators[0].iter, ast.Name):
        return False
    name = node.generators[0].iter.id
    function = site.scope.function()
    body = getattr(function.node, "body", []) if function is not None else []
    for inner in own_nodes(body if isinstance(body, list) else []):
        if not (
            isinstance(inner, ast.Call)
            and inner.lineno < node.lineno
            and ctx.resolve(inner.func) in _FAN_OUT
        ):
            continue
        for arg in inner.args:
            given = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(given, ast.Name) and given.id == name:
                return True
    return False


def _makes_future_only(ctx: Context, work: ast.expr, scope: Scope) -> bool:
    """One element's call is a synchronous function of this file that only returns a future
    it made with ``create_future()`` (or found already made): a batching loader's
    ``load(key)`` queues the key, and one batch call elsewhere resolves every future. It
    starts no work per item."""
    func = work.func if isinstance(work, ast.Call) else work
    if not isinstance(func, ast.Name | ast.Attribute):
        return False
    callees = ctx.callees(func, scope)
    if not callees:
        return False
    for callee in callees:
        body = getattr(callee.node, "body", [])
        if callee.kind != SYNC or not isinstance(body, list):
            return False
        returns = [n for n in own_nodes(body) if isinstance(n, ast.Return)]
        if not returns:
            return False
        for returned in returns:
            if not isinstance(returned.value, ast.Name):
                return False
            values = callee.assigns.get(returned.value.id, [])
            if not any(
                isinstance(v, ast.Call) and last_name(v.func) == "create_future" for v in values
            ):
                return False
        if any(isinstance(n, ast.Call) and _is_spawn(ctx, n) for n in own_nodes(body)):
            return False
    return True


def _filled_in_loop(ctx: Context, name: str, site: Site) -> list[ast.expr] | None:
    """The values appended to ``name`` inside a loop over data of unbounded size."""
    scope = site.scope
    work: list[ast.expr] = []
    resets = [v for v in scope.assigns.get(name, ()) if is_empty_collection(v)]
    for value, blocks in scope.appends.get(name, ()):
        loops = [
            node
            for kind, node in blocks
            if kind == LOOP and not _emptied_each_round(node, name, resets, value)
        ]
        if not any(
            not ctx.fan_out_loop_bounded(loop, scope) and ctx.loop_over_data(loop, scope)
            for loop in loops
        ):
            continue
        if _once_per_constant(blocks, scope):
            continue
        if isinstance(value, ast.Name):
            # `task = create_task(...)` / `coro = fetch(u)` then `tasks.append(task)`
            calls = [v for v in scope.assigns.get(value.id, ()) if isinstance(v, ast.Call)]
            if not calls or all(_taken_out(call) for call in calls):
                # an existing object (`future = self.futures.pop()`), not new work
                continue
            value = calls[0]
        if not isinstance(value, ast.Call) or _ends_or_waits(value):
            continue  # `waiters.append(state.wait_for_position())`: waits, starts nothing
        if _is_spawn(ctx, value):
            return None
        work.append(value)
    return work or None


def _emptied_each_round(loop: ast.AST, name: str, resets: list[ast.expr], item: ast.expr) -> bool:
    """The loop binds the list empty again on its way to the statement that fills it, in
    each round (``while True: event = await queue.get(); tasks = []`` and then one append
    per registered listener; also inside a ``try`` or ``with`` of the loop's body): its
    rounds do not add up in the list. A reset under an ``if``, in an inner loop, or after the
    append (a flush) does not count."""
    statements = getattr(loop, "body", None)
    while isinstance(statements, list) and resets:
        inner: list[ast.stmt] | None = None
        for statement in statements:
            if holds(statement, item):
                if isinstance(statement, ast.Try):
                    inner = next(
                        (b for b in (statement.body, statement.finalbody) if _holds_any(b, item)),
                        None,
                    )
                elif isinstance(statement, ast.With | ast.AsyncWith):
                    inner = statement.body
                break
            if (
                isinstance(statement, ast.Assign)
                and any(statement.value is reset for reset in resets)
                and any(isinstance(t, ast.Name) and t.id == name for t in statement.targets)
            ):
                return True
        statements = inner
    return False


def _holds_any(statements: list[ast.stmt], node: ast.expr) -> bool:
    return any(holds(statement, node) for statement in statements)


def _once_per_constant(blocks: tuple[Block, ...], scope: Scope) -> bool:
    """The append sits, inside a ``for`` over distinct items (a set, ``list(set(a) - b)``,
    a mapping's keys), under a test that the loop variable is one of a few constants (``if
    kind in {"flow", "deployment"}``, with the set bound locally, or ``elif kind ==
    "variables"``): it runs at most once per constant, however long the iterable."""
    loop_index = max((i for i, (kind, _) in enumerate(blocks) if kind == LOOP), default=-1)
    if loop_index < 0:
        return False
    loop = blocks[loop_index][1]
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)):
        return False
    if not _distinct(loop.iter, scope):
        return False
    target = loop.target.id
    return any(
        kind == IF and isinstance(node, ast.If) and _is_one_of_constants(node.test, target, scope)
        for kind, node in blocks[loop_index + 1 :]
    )


_SET_OPERATORS = (ast.Sub, ast.BitAnd, ast.BitOr, ast.BitXor)


def _distinct(node: ast.expr, scope: Scope, depth: int = 0) -> bool:
    """Whether iterating ``node`` never yields the same item twice."""
    if depth > 4:
        return False
    again = depth + 1
    if isinstance(node, ast.Set | ast.SetComp | ast.DictComp | ast.Dict):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, _SET_OPERATORS):
        return _distinct(node.left, scope, again)
    if isinstance(node, ast.Call):
        name = last_name(node.func)
        if isinstance(node.func, ast.Name) and name in ("set", "frozenset", "dict"):
            return True
        if isinstance(node.func, ast.Name) and name in ("list", "sorted", "tuple"):
            return len(node.args) == 1 and _distinct(node.args[0], scope, again)
        return isinstance(node.func, ast.Attribute) and name == "keys" and not node.args
    if isinstance(node, ast.Name) and node.id in scope.params:
        # `work_by_ids: Dict[int, ...]`: a mapping's (or a set's) keys never repeat
        annotation = parsed_annotation(scope.params[node.id])
        if isinstance(annotation, ast.Subscript):
            annotation = annotation.value
        return last_name(annotation) in _DISTINCT_TYPES if annotation is not None else False
    if isinstance(node, ast.Name):
        values = scope.assigns.get(node.id)
        if not values:
            return False
        return all(_distinct(v, scope, again) for v in values)
    return False


_DISTINCT_TYPES = frozenset(
    {"dict", "Dict", "Mapping", "MutableMapping", "set", "Set", "frozenset", "FrozenSet"}
)


def _is_one_of_constants(test: ast.expr, target: str, scope: Scope) -> bool:
    """``target in {"a", "b"}`` (or a local bound only to such a literal), ``target == "a"``."""
    if not (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.left, ast.Name)
        and test.left.id == target
    ):
        return False
    operator, right = test.ops[0], test.comparators[0]
    if isinstance(operator, ast.Eq):
        return isinstance(right, ast.Constant)
    if not isinstance(operator, ast.In):
        return False
    literals = [right]
    if isinstance(right, ast.Name) and right.id not in scope.params:
        literals = list(scope.assigns.get(right.id, ()))
    return bool(literals) and all(
        isinstance(each, ast.Set | ast.List | ast.Tuple)
        and all(isinstance(e, ast.Constant) for e in each.elts)
        for each in literals
    )


def _is_spawn(ctx: Context, call: ast.Call) -> bool:
    func = call.func
    if ctx.resolve(func) in _SPAWN_FUNCTIONS:
        return True
    return isinstance(func, ast.Attribute) and func.attr in _SPAWN_METHODS


def check_fan_out(ctx: Context, site: Site) -> None:
    """ADM101 (or ADM103) at ``asyncio.gather(*E)`` / ``wait(E)`` / ``as_completed(E)``."""
    call = site.node
    assert isinstance(call, ast.Call)
    resolved = ctx.resolve(call.func)
    if resolved not in _FAN_OUT:
        return
    short = resolved.rsplit(".", 1)[-1]
    if short == "gather":
        collections = [a.value for a in call.args if isinstance(a, ast.Starred)]
    else:
        first = call.args[0] if call.args else None
        for keyword in call.keywords:
            if keyword.arg in ("fs", "aws"):
                first = keyword.value
        collections = [first] if first is not None else []
    work: list[ast.expr] = []
    for collection in collections:
        work.extend(_collection(ctx, collection, site) or ())
    if short == "wait":
        # asyncio.wait() takes tasks, it starts nothing: only tasks spawned for it here count
        work = [w for w in work if isinstance(w, ast.Call) and _is_spawn(ctx, w)]
    work = [w for w in work if not _makes_future_only(ctx, w, site.scope)]
    if not work or all(
        ctx.work_bounded(w, site.scope) or ctx.receiver_limited(w, site.scope) for w in work
    ):
        return
    if _caller_opted_out(call, site):
        return
    if _report_misplaced_limiter(ctx, site, f"`asyncio.{short}`"):
        return
    ctx.report(
        call,
        "ADM101",
        f"`asyncio.{short}` over a collection of unbounded size starts every task at once: "
        "use `adm.gather(*aws, limit=N)`, or enter a semaphore inside each task",
    )


# words of a parameter that sets how many run at once
_LIMIT_WORDS = frozenset(
    {"concurrency", "concurrent", "limit", "limiter", "semaphore", "workers", "parallelism"}
)


def _caller_opted_out(call: ast.Call, site: Site) -> bool:
    """The fan-out is the branch taken only when a limit parameter of the function holds a
    sentinel (``if concurrency is None``, ``if limit == 0``) that is not its default: the
    default bounds it, and all at once is what a caller asked for by passing the sentinel
    (``asyncio.gather(*aws) if concurrency is None else bounded(concurrency, aws)``, the
    default 128). A sentinel that is the default (``max_workers=-1``, ``if max_workers ==
    -1``) is the unbounded default, and still fires."""
    function = site.scope.function()
    if function is None or not isinstance(function.node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    defaults = parameter_defaults(function.node)
    for test, taken_when_equal in _branch_tests(call, site, function.node):
        if not (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.left, ast.Name)
            and isinstance(test.comparators[0], ast.Constant)
            and isinstance(test.ops[0], ast.Is | ast.Eq | ast.IsNot | ast.NotEq)
        ):
            continue
        equal = isinstance(test.ops[0], ast.Is | ast.Eq)
        default = defaults.get(test.left.id)
        if (
            equal == taken_when_equal
            and any(w in _LIMIT_WORDS for w in words(test.left.id))
            and isinstance(default, ast.Constant)
            and default.value != test.comparators[0].value
        ):
            return True
    return False


def _branch_tests(call: ast.Call, site: Site, function: ast.AST) -> list[tuple[ast.expr, bool]]:
    """The tests the call is under, in its function: each with True when the call is in
    the branch taken when the test holds (``if``'s body, a conditional's first value)."""
    tests = [
        (node.test, kind == IF)
        for kind, node in site.blocks
        if kind in (IF, ELSE) and isinstance(node, ast.If)
    ]
    for node in ast.walk(function):
        if isinstance(node, ast.IfExp):
            if any(inner is call for inner in ast.walk(node.body)):
                tests.append((node.test, True))
            elif any(inner is call for inner in ast.walk(node.orelse)):
                tests.append((node.test, False))
    return tests


def _awaited_in_loop(ctx: Context, call: ast.Call, site: Site) -> bool:
    """The spawned task is awaited right away (`await create_task(...)`, or bound to a
    name that the same scope awaits): one at a time, not a fan-out."""
    if id(call) in ctx.facts.awaited_calls:
        return True
    target = ctx.facts.bound_to.get(id(call))
    return target is not None and target in site.scope.awaited_names


# what hands a task on to be kept, not waited for, when awaited (`await queue.put(task)`)
_HANDS_ON = frozenset({"put", "send", "append", "add"})


def _awaited_with(ctx: Context, outer: ast.Call) -> bool:
    """The task is an argument of a call awaited where it is made (`await
    token.link_future(ensure_future(poll()))`, `await wait_for(create_task(job()), 5)`):
    handed straight to what the code waits on, one at a time. A call that only stores it
    (`await queue.put(create_task(...))`) still fires."""
    return id(outer) in ctx.facts.awaited_calls and last_name(outer.func) not in _HANDS_ON


def _waited_for_in_loop(ctx: Context, loop: ast.AST, call: ast.Call) -> bool:
    """The task is awaited in the same iteration, itself or through what it is put in
    (`close = wait_for(shield(task), t)`, `await close`; `await asyncio.wait((task, stop))`):
    the next spawn comes after this one is waited for."""
    target = ctx.facts.bound_to.get(id(call))
    if target is None:
        return False
    names = {target}
    assigns = [
        n for n in own_nodes(getattr(loop, "body", [])) if isinstance(n, ast.Assign | ast.AnnAssign)
    ]
    grew = True
    while grew:
        grew = False
        for assign in assigns:
            if assign.value is None or not _mentions(assign.value, names):
                continue
            targets = assign.targets if isinstance(assign, ast.Assign) else [assign.target]
            for bound in targets:
                # plain names only: `self.running[key] = task` stores it, it waits for nothing
                elements = bound.elts if isinstance(bound, ast.Tuple | ast.List) else [bound]
                for name in elements:
                    if isinstance(name, ast.Name) and name.id not in names:
                        names.add(name.id)
                        grew = True
    return any(
        isinstance(n, ast.Await) and _mentions(n.value, names)
        for n in own_nodes(getattr(loop, "body", []))
    )


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _restarts_after_ending(loop: ast.AST, call: ast.Call) -> bool:
    """The spawned coroutine runs an object that the loop ends first (`await
    worker.close()`, then `create_task(worker.run())`): one run at a time, a restart."""
    work = call.args[0] if call.args else None
    if not isinstance(work, ast.Call) or not isinstance(work.func, ast.Attribute):
        return False
    runner = dotted(work.func.value)
    if runner is None:
        return False
    for node in own_nodes(getattr(loop, "body", [])):
        if isinstance(node, ast.Await) and node.lineno < call.lineno:
            ended = _lifecycle_call(node.value)
            if ended is not None and isinstance(node.value, ast.Call):
                func = node.value.func
                if isinstance(func, ast.Attribute) and dotted(func.value) == runner:
                    return True
    return False


def _loop_has_bound(ctx: Context, loop: ast.AST, scope: Scope) -> bool:
    """A bound inside the loop: ``await sem.acquire()`` before spawning (or a helper of
    this file that acquires one, ``await self._acquire_token(item)``), or a wait while
    ``len(pending) >= N``."""
    body = getattr(loop, "body", [])
    for statement in body:
        for node in ast.walk(statement):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "acquire"
            ):
                return True
            if isinstance(node, ast.Await) and _acquires(ctx, node.value, scope, depth=1):
                return True
            if isinstance(node, ast.If | ast.While) and (
                _waits_on_len(node) or _evicts_on_len(ctx, node, scope)
            ):
                return True
    return False


_REMOVES = frozenset({"pop", "popleft", "popitem", "remove", "discard"})


def _cancels(ctx: Context, call: ast.Call, scope: Scope) -> bool:
    """``task.cancel()``, or a call of a function of this file that cancels something."""
    if last_name(call.func) == "cancel":
        return True
    for callee in ctx.callees(call.func, scope):
        body = getattr(callee.node, "body", [])
        for node in own_nodes(body if isinstance(body, list) else []):
            if isinstance(node, ast.Call) and last_name(node.func) == "cancel":
                return True
    return False


def _evicts_on_len(ctx: Context, node: ast.If | ast.While, scope: Scope) -> bool:
    """``if len(pending) >= N:`` whose body takes a task out of ``pending`` and cancels one
    (directly or in a function of this file it calls): each spawn above the bound replaces
    a task it stopped, so no more than N run. Only forgetting a task leaves it running."""
    held = {
        dotted(side.args[0])
        for inner in ast.walk(node.test)
        if isinstance(inner, ast.Compare)
        for side in (inner.left, *inner.comparators)
        if isinstance(side, ast.Call) and last_name(side.func) == "len" and side.args
    } - {None}
    if not held:
        return False
    removes = cancels = False
    for inner in own_nodes(node.body):
        if isinstance(inner, ast.Delete):
            removes |= any(
                isinstance(t, ast.Subscript) and dotted(t.value) in held for t in inner.targets
            )
        elif isinstance(inner, ast.Call):
            func = inner.func
            if isinstance(func, ast.Attribute) and func.attr in _REMOVES:
                removes |= dotted(func.value) in held
            cancels = cancels or _cancels(ctx, inner, scope)
    return removes and cancels


def _acquires(ctx: Context, call: ast.expr, scope: Scope, depth: int) -> bool:
    """Whether an awaited call acquires a limiter (``limiter.acquire_on_behalf_of(t)``),
    itself or in a function of this file it calls (``depth`` levels down)."""
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr.startswith("acquire")
        and ctx.is_limiter(func.value, scope)
    ):
        return True
    if depth == 0:
        return False
    for callee in ctx.callees(func, scope):
        body = getattr(callee.node, "body", [])
        for node in own_nodes(body if isinstance(body, list) else []):
            if isinstance(node, ast.Await) and _acquires(ctx, node.value, callee, depth - 1):
                return True
    return False


def _ends_existing(work: ast.expr | None) -> bool:
    """A spawned coroutine that ends or waits for an existing object (`create_task(
    w.close())`, `start_soon(self.processes.kill, run_id)`): it tears down what the program
    holds, one task per thing already there."""
    if isinstance(work, ast.Attribute):
        return work.attr in _LIFECYCLE
    return work is not None and _ends_or_waits(work)


def _replaces_finished(ctx: Context, loop: ast.AST, scope: Scope) -> bool:
    """The loop runs over the tasks ``asyncio.wait`` returned done (``done, pending = await
    asyncio.wait(pending, return_when=FIRST_COMPLETED)``) and spawns once per round: each
    new task replaces a finished one, so the number running never grows past the first
    set's (the sliding window of tasks)."""
    if not isinstance(loop, ast.For | ast.AsyncFor) or not isinstance(loop.iter, ast.Name):
        return False
    spawns = [
        node for node in own_nodes(loop.body) if isinstance(node, ast.Call) and _is_spawn(ctx, node)
    ]
    function = scope.function()
    if len(spawns) != 1 or function is None:
        return False
    for node in own_nodes(getattr(function.node, "body", [])):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Await)):
            continue
        waited = node.value.value
        if not (isinstance(waited, ast.Call) and ctx.resolve(waited.func) in _WAITS):
            continue
        for target in node.targets:
            first = target.elts[0] if isinstance(target, ast.Tuple) and target.elts else None
            if isinstance(first, ast.Name) and first.id == loop.iter.id:
                return True
    return False


def _spawns_item_handed_over(loop: ast.AST, call: ast.Call) -> bool:
    """The spawn runs the loop's own item (``async for aw in awaitables:
    create_task(aw)``): awaitables the caller made, as many as it made, as ``gather(*aws)``
    over awaitables handed in is for ADM101; no work is made here per item of data."""
    if not isinstance(loop, ast.For | ast.AsyncFor) or not call.args:
        return False
    work = call.args[0]
    return isinstance(work, ast.Name) and any(
        isinstance(target, ast.Name) and target.id == work.id for target in ast.walk(loop.target)
    )


def _once_per_count(loop: ast.AST, site: Site) -> bool:
    """The spawn is under an ``if`` of the loop that tests a counter the loop steps for
    equality with a constant (``if count == 5:`` while ``count -= 1`` each round): the test
    holds in one round at most, so the loop spawns once, not per item."""
    stepped = {
        node.target.id
        for node in own_nodes(getattr(loop, "body", []))
        if isinstance(node, ast.AugAssign)
        and isinstance(node.op, ast.Add | ast.Sub)
        and isinstance(node.target, ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    inside = False
    for kind, node in site.blocks:
        inside = inside or node is loop
        if not (inside and kind == IF and isinstance(node, ast.If)):
            continue
        test = node.test
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and {type(test.left), type(test.comparators[0])} == {ast.Name, ast.Constant}
            and any(
                isinstance(side, ast.Name) and side.id in stepped
                for side in (test.left, test.comparators[0])
            )
        ):
            return True
    return False


def _waits_on_len(node: ast.If | ast.While) -> bool:
    compares_len = False
    for inner in ast.walk(node.test):
        if isinstance(inner, ast.Compare):
            for side in (inner.left, *inner.comparators):
                if isinstance(side, ast.Call) and last_name(side.func) == "len":
                    compares_len = True
    if not compares_len:
        return False
    return any(isinstance(n, ast.Await) for s in node.body for n in ast.walk(s))


def _task_group(ctx: Context, func: ast.expr, site: Site) -> str | None:
    """The task group a method is called on, if a `with` of this scope opened it."""
    if not isinstance(func, ast.Attribute) or not isinstance(func.value, ast.Name):
        return None
    for value in site.scope.assigns.get(func.value.id, ()):
        if isinstance(value, ast.Call) and ctx.resolve(value.func) in _TASK_GROUPS:
            return func.value.id
    return None


def check_spawn(ctx: Context, site: Site) -> None:
    """ADM102 (ADM101 for a task group, ADM103 under a misplaced limiter) at a spawn in a
    loop over data."""
    call = site.node
    assert isinstance(call, ast.Call)
    if not _is_spawn(ctx, call):
        return
    if _awaited_in_loop(ctx, call, site):
        return
    outer = ctx.facts.argument_of.get(id(call))
    if outer is not None and ctx.resolve(outer.func) in _FAN_OUT:
        return
    if outer is not None and _is_spawn(ctx, outer):
        # `ensure_future(create_task(...))`: one task, one site, judged at the outer call
        return
    if outer is not None and _awaited_with(ctx, outer):
        return
    loop = ctx.inner_loop(site)
    if loop is None:
        return
    if isinstance(loop, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        # a comprehension of tasks handed to gather/wait is ADM101's (the collection)
        consumer = ctx.facts.argument_of.get(id(loop))
        if consumer is not None and ctx.resolve(consumer.func) in _FAN_OUT:
            return
    if ctx.fan_out_loop_bounded(loop, site.scope) or _loop_has_bound(ctx, loop, site.scope):
        return
    if not ctx.loop_over_data(loop, site.scope):
        return  # over what the program registered or configured, or no sign of data
    if leaves_after(loop, call) or _ends_existing(call.args[0] if call.args else None):
        return
    if _once_per_count(loop, site) or _once_per_constant(site.blocks, site.scope):
        return
    if _waited_for_in_loop(ctx, loop, call) or _restarts_after_ending(loop, call):
        return
    if _replaces_finished(ctx, loop, site.scope):
        return
    if _spawns_item_handed_over(loop, call):
        return
    if call.args and ctx.work_bounded(call, site.scope):
        return
    spawner = dotted(call.func) or "create_task"
    if _report_misplaced_limiter(ctx, site, f"`{spawner}` in a loop"):
        return
    group = _task_group(ctx, call.func, site)
    if group is not None:
        ctx.report(
            call,
            "ADM101",
            f"task group `{group}` spawns a task per item of data of unbounded size, all "
            "running at once: use `adm.TaskPool(limit=N)`, or enter a semaphore inside each "
            "task",
        )
        return
    ctx.report(
        call,
        "ADM102",
        f"`{spawner}` in a loop with no bound on the tasks running at once: acquire a "
        "semaphore before each spawn (release it when the task ends), wait while "
        "`len(pending) >= N`, or use `adm.TaskPool(limit=N)`",
    )
