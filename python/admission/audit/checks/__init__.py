"""The rule checks, and which call sites each one looks at.

Each check module owns one family of rules; this module only routes the sites the walk found
(by the last name of the callee: ``gather``, ``sleep``, ``Thread``, ...) to the checks that
may report them, and runs them in a fixed order.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from admission.audit.checks.blocking import (
    BLOCKING_HTTP,
    CLIENT_METHODS,
    SYNC_DATABASES,
    check_blocking_call,
    check_blocking_method,
)
from admission.audit.checks.context import Context
from admission.audit.checks.fanout import check_fan_out, check_spawn
from admission.audit.checks.guarded import check_guarded_call
from admission.audit.checks.loops import check_get_event_loop
from admission.audit.checks.resources import (
    CLIENTS,
    EXECUTORS,
    THREADS,
    check_client,
    check_executor,
    check_thread,
)
from admission.audit.checks.retries import (
    SLEEPS,
    check_backoff_policy,
    check_forever_loop,
    check_sleep,
)
from admission.audit.walk import Scope, Site

__all__ = ["Context", "interesting_names", "run_checks"]

Check = Callable[[Context, Site], None]


def _last(names: frozenset[str]) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name in names}


def _routes() -> dict[str, tuple[Check, ...]]:
    routes: dict[str, list[Check]] = {}

    def add(names: set[str], check: Check) -> None:
        for name in sorted(names):
            routes.setdefault(name, []).append(check)

    add({"gather", "wait", "as_completed"}, check_fan_out)
    add({"create_task", "ensure_future", "start_soon"}, check_spawn)
    add(
        _last(SLEEPS) | _last(BLOCKING_HTTP) | _last(SYNC_DATABASES) | CLIENT_METHODS,
        check_blocking_call,
    )
    add(_last(CLIENTS), check_client)
    add(_last(THREADS), check_thread)
    add(_last(EXECUTORS), check_executor)
    add(_last(SLEEPS), check_sleep)
    add(
        {
            "retry",
            "Retrying",
            "AsyncRetrying",
            "retry_base",
            "on_exception",
            "on_predicate",
            "ConstantBackoff",
            "ExponentialBackoff",
        },
        check_backoff_policy,
    )
    add({"get_event_loop"}, check_get_event_loop)
    return {name: tuple(checks) for name, checks in routes.items()}


ROUTES = _routes()


def interesting_names(guarded_calls: tuple[str, ...]) -> Callable[[str, Scope], bool]:
    """The walk's filter: which callees' last names are kept as sites.

    ``guarded-calls`` add their own last names (all names when one ends in a wildcard).
    """
    extra = set()
    every = False
    for pattern in guarded_calls:
        last = pattern.rsplit(".", 1)[-1]
        if any(c in last for c in "*?["):
            every = True
        extra.add(last)
    names = frozenset(ROUTES) | frozenset(extra)
    if every:
        return lambda name, scope: True
    return lambda name, scope: name in names


def run_checks(ctx: Context) -> None:
    """Run every check over the sites of one file."""
    facts = ctx.facts
    thread_classes = {
        name for name, bases in facts.bases.items() if any(ctx.resolve(b) in THREADS for b in bases)
    }
    guarded = bool(ctx.settings.guarded_calls)
    for site in facts.calls:
        func = site.node.func  # type: ignore[attr-defined]
        name = str(getattr(func, "attr", None) or getattr(func, "id", ""))
        if isinstance(func, ast.Name):
            # route an alias by what it stands for (`spawn` -> `create_task`)
            target = facts.imports.target(name)
            if target is not None:
                name = target.rsplit(".", 1)[-1]
        for check in ROUTES.get(name, ()):
            check(ctx, site)
        if name in thread_classes:
            check_thread(ctx, site)
        if guarded:
            check_guarded_call(ctx, site)
    for site in facts.async_method_calls:
        check_blocking_method(ctx, site)
    for site in facts.forever_loops:
        check_forever_loop(ctx, site)
