"""ADM601 (opt-in): a configured call made outside any breaker or limiter.

The incident's breaker bypass: one call site of the LLM client forgot the ``async with
breaker:`` every other site had. The calls to watch are the ``guarded-calls`` globs of the
settings, matched against the call's dotted text (``self.client.chat.completions.create``)
and its qualified name. A call is guarded when a ``with`` around it (in its function) enters
a breaker or limiter, when a function around it is decorated with one, or when it is handed
straight to one (``await breaker.call(client.create(...))``).
"""

from __future__ import annotations

import ast

from admission.audit.checks.context import Context, matches
from admission.audit.names import dotted
from admission.audit.walk import Site

__all__ = ["check_guarded_call"]


def check_guarded_call(ctx: Context, site: Site) -> None:
    """ADM601 at an unguarded call to one of the ``guarded-calls``."""
    patterns = ctx.settings.guarded_calls
    if not patterns:
        return
    call = site.node
    assert isinstance(call, ast.Call)
    text = dotted(call.func)
    if not matches(patterns, text, ctx.resolve(call.func)):
        return
    if ctx.enclosing_limiter(site, breaker=True) is not None:
        return
    scope = site.scope.function()
    while scope is not None:
        if any(ctx.is_limiter_decorator(d, breaker=True) for d in scope.decorators):
            return
        scope = scope.parent.function() if scope.parent is not None else None
    outer = ctx.facts.argument_of.get(id(call))
    if outer is not None:
        func = outer.func.value if isinstance(outer.func, ast.Attribute) else outer.func
        if ctx.is_limiter(func, site.scope, breaker=True):
            return
    ctx.report(
        call,
        "ADM601",
        f"`{text}` is called outside any breaker or limiter (a `guarded-calls` target): wrap "
        "it in `async with breaker:` / `async with limiter:` like its other call sites",
    )
